"""Per-checkpoint pictures: metric-vs-threshold curves and CAM overlays with boxes (no Ray).

Rendered to PNG bytes where the evaluation ran (an actor) and written by the driver, so the
actors need no shared filesystem with the output folder.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import numpy as np

from scm_ray.metrics import LocalizationResult, box_iou, boxes_from_scoremap


@dataclass
class OverlaySamples:
    """Candidate test images for the overlay figure, a few per class as the split streams by
    (`wanted`), so that the figure can show every class, hits and misses, once tau is known.
    Images are uint8 (H, W, 3); maps (H, W) are the ground-truth class maps the boxes are read
    from."""

    panels: int = 8
    per_class: int = 4
    images: list[np.ndarray] = field(default_factory=list)
    maps: list[np.ndarray] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    predicted: list[int] = field(default_factory=list)
    gt_boxes: list[np.ndarray] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.images)

    @property
    def capacity(self) -> int:
        return 4 * self.panels

    def wanted(self, labels: np.ndarray) -> list[int]:
        """Indices of a batch worth keeping: at most `per_class` per class, `capacity` in all."""
        counts: dict[int, int] = {}
        for label in self.labels:
            counts[label] = counts.get(label, 0) + 1
        picked = []
        for i, label in enumerate(int(x) for x in labels):
            if len(self) + len(picked) >= self.capacity:
                break
            if counts.get(label, 0) < self.per_class:
                counts[label] = counts.get(label, 0) + 1
                picked.append(i)
        return picked


def _figure(width: float, height: float):
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt, plt.figure(figsize=(width, height), dpi=100)


def _png(plt, fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


# Distinct styles, widest first: several metrics coincide on easy data (gt_known, maxboxacc and
# top-k loc when k covers every class), and each must stay visible under the others.
_STYLES = [dict(linestyle="-", linewidth=5.0, alpha=0.45), dict(linestyle="--", linewidth=2.6),
           dict(linestyle=":", linewidth=2.6), dict(linestyle="-.", linewidth=1.6),
           dict(linestyle="-", linewidth=1.0, marker="o", markevery=10, markersize=4),
           dict(linestyle="-", linewidth=1.0, marker="s", markevery=10, markersize=4),
           dict(linestyle="-", linewidth=1.0, marker="^", markevery=10, markersize=4),
           dict(linestyle="-", linewidth=1.0, marker="x", markevery=10, markersize=4)]


def curves_png(test: LocalizationResult, heldout: LocalizationResult | None, title: str) -> bytes:
    """Every localisation metric against tau on the test split, each in its own line style;
    under "wsol" the held-out GT-Known curve too, with the tau it chose marked (the one applied
    to test)."""
    plt, fig = _figure(7, 4.5)
    ax = fig.add_subplot(1, 1, 1)
    for i, (name, curve) in enumerate(test.curves.items()):
        label = f"top{test.k}_loc" if name == "topk_loc" else name
        if name.startswith("v2@"):
            label = f"maxboxacc_v2 IoU {name[3:]}"
        ax.plot(test.thresholds, curve, label=f"test {label}", **_STYLES[i % len(_STYLES)])
    if heldout is not None:
        ax.plot(heldout.thresholds, heldout.curves["gt_known"], color="black", linestyle=(0, (1, 1)),
                linewidth=1.2, label="held-out gt_known")
    tau = test.gt_known.tau
    if tau is not None:
        ax.axvline(tau, color="grey", linestyle=":", label=f"gt_known tau {tau:.3g} ({test.tau_source})")
    ax.set_xlabel("threshold tau")
    ax.set_ylabel("percent")
    ax.set_ylim(0, 100)
    ax.set_title(f"{title}\n{test.label}", fontsize=8)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return _png(plt, fig)


def pick_panels(samples: OverlaySamples, tau: float) -> list[tuple[int, np.ndarray, float]]:
    """(sample index, box at tau, IoU) for the panels to draw: classes in turn, each giving a hit
    (IoU >= 0.5) then a miss, then the next hit, ..., until `samples.panels` are chosen."""
    by_class: dict[int, tuple[list, list]] = {}
    for i in range(len(samples)):
        box = boxes_from_scoremap(samples.maps[i], [tau], multi_contour=False)[0][0]
        gt = np.asarray(samples.gt_boxes[i], dtype=np.float64).reshape(-1, 4)
        iou = float(box_iou(box[None], gt).max()) if len(gt) else 0.0
        hits, misses = by_class.setdefault(samples.labels[i], ([], []))
        (hits if iou >= 0.5 else misses).append((i, box, iou))
    queues = []
    for label in sorted(by_class):
        hits, misses = by_class[label]
        mixed = [x for pair in zip(hits, misses) for x in pair]
        queues.append(mixed + hits[len(mixed) // 2:] + misses[len(mixed) // 2:])
    chosen = []
    while len(chosen) < samples.panels and any(queues):
        for queue in queues:
            if queue and len(chosen) < samples.panels:
                chosen.append(queue.pop(0))
    return chosen


def overlays_png(samples: OverlaySamples, tau: float, class_names: list[str] | None, title: str) -> bytes:
    """Test images from every class, hits and misses: each with its ground-truth-class CAM
    (colour bar), the ground-truth boxes (lime) and the largest-contour box at `tau` (red, the
    GT-Known box) with its IoU."""
    import matplotlib.patches as mpatches

    chosen = pick_panels(samples, tau)
    cols = min(4, len(chosen))
    rows = -(-len(chosen) // cols)
    plt, fig = _figure(3 * cols + 0.8, 3.4 * rows + 0.4)
    heat = None
    for n, (i, box, iou) in enumerate(chosen):
        ax = fig.add_subplot(rows, cols, n + 1)
        ax.imshow(samples.images[i])
        heat = ax.imshow(samples.maps[i], cmap="jet", alpha=0.45, vmin=0, vmax=1)
        for x0, y0, x1, y1 in np.asarray(samples.gt_boxes[i], dtype=np.float64).reshape(-1, 4):
            ax.add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, color="lime", lw=1.5))
        x0, y0, x1, y1 = (int(v) for v in box)
        ax.add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, color="red", lw=1.5))
        ax.set_title(f"gt {_name(samples.labels[i], class_names)}\npred "
                     f"{_name(samples.predicted[i], class_names)}\nIoU {iou:.2f} "
                     f"({'hit' if iou >= 0.5 else 'miss'})", fontsize=7)
        ax.axis("off")
    fig.colorbar(heat, ax=fig.axes, fraction=0.025, pad=0.02, label="CAM of the ground-truth class")
    fig.legend(handles=[mpatches.Patch(edgecolor="lime", facecolor="none", label="ground truth"),
                        mpatches.Patch(edgecolor="red", facecolor="none", label=f"prediction (tau {tau:.3g})")],
               loc="lower center", ncol=2, fontsize=8, frameon=False)
    fig.suptitle(f"{title} (tau {tau:.3g})", fontsize=9)
    return _png(plt, fig)


def _name(label: int, class_names: list[str] | None) -> str:
    return class_names[label] if class_names and 0 <= label < len(class_names) else str(label)

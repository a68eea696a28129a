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
    """The first few test images of the split with what the overlay draws. Images are uint8
    (n, H, W, 3); maps (n, H, W) are the ground-truth class maps the boxes are read from."""

    images: list[np.ndarray] = field(default_factory=list)
    maps: list[np.ndarray] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    predicted: list[int] = field(default_factory=list)
    gt_boxes: list[np.ndarray] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.images)


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


def curves_png(test: LocalizationResult, heldout: LocalizationResult | None, title: str) -> bytes:
    """Every localisation metric against tau on the test split; under "wsol" the held-out
    GT-Known curve too, with the tau it chose marked (the one applied to test)."""
    plt, fig = _figure(7, 4.5)
    ax = fig.add_subplot(1, 1, 1)
    for name, curve in test.curves.items():
        label = test.metric_set().column(name)
        if name.startswith("v2@"):
            label = f"maxboxacc_v2 IoU {name[3:]}"
        ax.plot(test.thresholds, curve, label=f"test {label}")
    if heldout is not None:
        ax.plot(heldout.thresholds, heldout.curves["gt_known"], "k--", label="held-out gt_known")
    tau = test.gt_known.tau
    if tau is not None:
        ax.axvline(tau, color="grey", linestyle=":", label=f"gt_known tau {tau:.3g} ({test.tau_source})")
    ax.set_xlabel("threshold tau")
    ax.set_ylabel("percent")
    ax.set_ylim(0, 100)
    ax.set_title(f"{title}\n{test.label}", fontsize=8)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return _png(plt, fig)


def overlays_png(samples: OverlaySamples, tau: float, class_names: list[str] | None, title: str) -> bytes:
    """Each sample: the image, its ground-truth-class CAM, the ground-truth boxes (green) and the
    largest-contour box at `tau` (red, the GT-Known box) with its IoU."""
    n = len(samples)
    plt, fig = _figure(3 * n, 3.4)
    for i in range(n):
        ax = fig.add_subplot(1, n, i + 1)
        ax.imshow(samples.images[i])
        ax.imshow(samples.maps[i], cmap="jet", alpha=0.45, vmin=0, vmax=1)
        gt = np.asarray(samples.gt_boxes[i], dtype=np.float64).reshape(-1, 4)
        for x0, y0, x1, y1 in gt:
            ax.add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, color="lime", lw=1.5))
        box = boxes_from_scoremap(samples.maps[i], [tau], multi_contour=False)[0][0]
        x0, y0, x1, y1 = (int(v) for v in box)
        ax.add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, color="red", lw=1.5))
        iou = float(box_iou(box[None], gt).max()) if len(gt) else 0.0
        ax.set_title(f"gt {_name(samples.labels[i], class_names)} / pred "
                     f"{_name(samples.predicted[i], class_names)}\nIoU {iou:.2f}", fontsize=8)
        ax.axis("off")
    fig.suptitle(f"{title} (tau {tau:.3g})", fontsize=9)
    return _png(plt, fig)


def _name(label: int, class_names: list[str] | None) -> str:
    return class_names[label] if class_names and 0 <= label < len(class_names) else str(label)

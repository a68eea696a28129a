"""The two evaluation protocol families (docs/protocols.md): how tau is picked, which map counts.

Both start from the same per-threshold counts (accumulator.py); they differ only in
- "wsol" (Choe et al., CVPR 2020): every box comes from the ground-truth class's map. tau is
  picked on a held-out split (CUBV2 / ImageNetV2 "train-fullsup") and applied unchanged to
  the test split: ``compute(counts, "wsol", thresholds_from=heldout_result)``. Without a
  held-out result the tau is picked on the split itself and the result says so.
- "paper" (the released SCM code): GT-Known (and MaxBoxAcc v1, which the SCM code reports as
  the same number) use the map of the top-1 PREDICTED class, and every metric's tau is picked on
  the evaluated split itself. Kept to compare with published numbers, and labelled as such.
  MaxBoxAccV2 (not in the SCM code) is the wsol definition in both families.

Each metric that picks tau picks its own (the first tau reaching the maximum, like np.argmax)
and reports it. Top-k Loc needs no predicted-class map: the class that makes a top-k
prediction correct is the ground-truth class, so its map is the ground-truth map.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from scm_ray.metrics.metric_set import PROTOCOLS, MetricSet



@dataclass(frozen=True)
class Metric:
    """A percentage and the tau it was read at (None for metrics without a threshold)."""

    value: float
    tau: float | None = None


@dataclass(frozen=True)
class LocalizationResult:
    """All metrics of one split in percent, with where their taus came from.

    tau_source: "this split" (picked here), "held-out" (taken from another split's result) or
    "fixed" (given by the caller). `curves` maps a metric name to its per-threshold percentages
    (T,) over `thresholds`, for plots.
    """

    protocol: str
    tau_source: str
    label: str
    n_images: int
    k: int
    top1_cls: float
    topk_cls: float
    gt_known: Metric
    top1_loc: Metric
    topk_loc: Metric
    maxboxacc: Metric
    maxboxacc_v2: float
    v2_per_iou: dict[float, Metric]
    thresholds: np.ndarray = field(repr=False)
    curves: dict[str, np.ndarray] = field(repr=False)

    def summary(self, prefix: str = "") -> dict[str, float | int | None]:
        """Flat, JSON-friendly numbers (curves left out), named by the metric set."""
        return self.metric_set().row(self, prefix)

    def metric_set(self) -> MetricSet:
        return MetricSet(self.protocol, tuple(self.v2_per_iou), self.k)

    def taus(self) -> dict[str, float | None]:
        """Per-metric tau, the form `thresholds_from` reads."""
        out = {name: getattr(self, name).tau for name in ("gt_known", "top1_loc", "topk_loc", "maxboxacc")}
        out.update({f"v2@{iou}": m.tau for iou, m in self.v2_per_iou.items()})
        return out

    def as_dict(self) -> dict:
        """Everything as plain Python (curves as lists), e.g. for JSON or Parquet rows."""
        out = asdict(self)
        out["thresholds"] = self.thresholds.tolist()
        out["curves"] = {k: v.tolist() for k, v in self.curves.items()}
        out["v2_per_iou"] = {str(k): asdict(v) for k, v in self.v2_per_iou.items()}
        return out


def _percent(counts: np.ndarray, n: int) -> np.ndarray:
    return counts * 100.0 / n if n else np.zeros(counts.shape)


class _TauChooser:
    """Reads a curve at the tau the protocol dictates for that metric."""

    def __init__(self, thresholds: np.ndarray, source: str, taus: dict[str, float | None] | None, fixed: float | None):
        self.thresholds = thresholds
        self.source = source
        self.taus = taus
        self.fixed = fixed

    def index_of(self, tau: float, name: str) -> int:
        hits = np.flatnonzero(np.isclose(self.thresholds, tau, rtol=0, atol=1e-12))
        if hits.size == 0:
            raise ValueError(f"tau {tau} for {name} is not among this accumulator's thresholds")
        return int(hits[0])

    def read(self, name: str, curve: np.ndarray) -> Metric:
        if self.source == "this split":
            i = int(np.argmax(curve))
        else:
            tau = self.fixed if self.source == "fixed" else self.taus.get(name)
            if tau is None:
                raise ValueError(f"the held-out result has no tau for {name}")
            i = self.index_of(tau, name)
        return Metric(float(curve[i]), float(self.thresholds[i]))


def compute(
    counts: dict[str, np.ndarray | int],
    thresholds: np.ndarray,
    v2_ious: tuple[float, ...],
    k: int,
    protocol: str = "wsol",
    thresholds_from: LocalizationResult | None = None,
    fixed_threshold: float | None = None,
) -> LocalizationResult:
    """Percentages and taus from accumulated counts under one protocol family.

    counts: n_images, cls_top1, cls_topk (ints); gt_known, top1_loc, topk_loc, paper_gt_known
    (T,); v2 (len(v2_ious), T). `thresholds_from` (a held-out split's "wsol" result) or
    `fixed_threshold` apply given taus instead of picking them here ("wsol" only).
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    if thresholds_from is not None and fixed_threshold is not None:
        raise ValueError("give thresholds_from or fixed_threshold, not both")
    if protocol == "paper" and (thresholds_from is not None or fixed_threshold is not None):
        raise ValueError('the "paper" protocol picks tau on the evaluated split; use "wsol" to apply given taus')
    if thresholds_from is not None and thresholds_from.protocol != "wsol":
        raise ValueError('held-out taus must come from a "wsol" result')
    n = int(counts["n_images"])
    if n == 0:
        raise ValueError("no images were accumulated")
    if protocol == "paper" and counts.get("paper_gt_known") is None:
        raise ValueError('the "paper" protocol needs top-1 predicted maps; build the accumulator with paper=True')
    source = "held-out" if thresholds_from is not None else "fixed" if fixed_threshold is not None else "this split"
    chooser = _TauChooser(thresholds, source, thresholds_from.taus() if thresholds_from else None, fixed_threshold)

    known_counts = counts["paper_gt_known"] if protocol == "paper" else counts["gt_known"]
    curves = {
        "gt_known": _percent(known_counts, n),
        "top1_loc": _percent(counts["top1_loc"], n),
        "topk_loc": _percent(counts["topk_loc"], n),
    }
    v2_curves = _percent(counts["v2"], n)  # (len(v2_ious), T)
    for iou, curve in zip(v2_ious, v2_curves):
        curves[f"v2@{iou}"] = curve
    gt_known = chooser.read("gt_known", curves["gt_known"])
    # MaxBoxAcc (v1) is GT-Known's curve at its best tau; it only differs from GT-Known's
    # reading when tau comes from elsewhere, where it keeps its own (held-out) tau.
    maxboxacc = chooser.read("maxboxacc", curves["gt_known"])
    per_iou = {iou: chooser.read(f"v2@{iou}", curves[f"v2@{iou}"]) for iou in v2_ious}
    if protocol == "paper":
        label = 'SCM "paper" protocol: GT-Known from the top-1 predicted class map, tau picked on this split'
    elif source == "this split":
        label = '"wsol" protocol (ground-truth class maps), tau picked on this split (no held-out split given)'
    elif source == "held-out":
        label = '"wsol" protocol (ground-truth class maps), taus picked on the held-out split'
    else:
        label = f'"wsol" protocol (ground-truth class maps), tau fixed at {fixed_threshold}'
    return LocalizationResult(
        protocol=protocol,
        tau_source=source,
        label=label,
        n_images=n,
        k=k,
        top1_cls=float(counts["cls_top1"]) * 100.0 / n,
        topk_cls=float(counts["cls_topk"]) * 100.0 / n,
        gt_known=gt_known,
        top1_loc=chooser.read("top1_loc", curves["top1_loc"]),
        topk_loc=chooser.read("topk_loc", curves["topk_loc"]),
        maxboxacc=maxboxacc,
        maxboxacc_v2=float(np.mean([m.value for m in per_iou.values()])),
        v2_per_iou=per_iou,
        thresholds=thresholds,
        curves=curves,
    )

"""The metric set: which metrics an evaluation reports and what each is called, derived from the
evaluation settings alone (protocol, IoU thresholds, k). The one place metric names are made:
the accumulator's results (`LocalizationResult.summary`), the per-epoch validation keys, the
results tables and the checks of a configured objective all ask it, and nothing parses a name
back. docs/protocols.md defines the metrics.
"""

from __future__ import annotations

from dataclasses import dataclass

PROTOCOLS = ("wsol", "paper")
# Top-k classification and localization use k = min(TOP_K, number of classes); results name
# them topk_cls / topk_loc and carry k in a column of its own.
TOP_K = 5
# GT-Known (MaxBoxAcc v1 is the same number, so it has no column) counts a box as right at IoU >= 0.5.
GT_KNOWN_IOU = 0.5
# Metrics read at a tau of their own, in table order.
TAU_METRICS = ("gt_known", "top1_loc", "topk_loc")
# Metric columns of every results file carry the role of the split they were measured on:
VAL = "val/"  # the split checkpoints and tau are chosen on (training's validation, evaluation's held-out split)
TEST = "test/"  # the split an evaluation reports (its tau comes from val/ under "wsol")


def top_k(num_classes: int) -> int:
    """The k of Top-k metrics for a dataset of `num_classes` classes."""
    return min(TOP_K, num_classes)


@dataclass(frozen=True)
class MetricSet:
    """The metrics one evaluation reports. `k` is the Top-k of Top-k Cls/Loc; `iou_thresholds`
    are MaxBoxAccV2's; `protocol` decides which maps are needed (the "paper" protocol's
    GT-Known reads the top-1 predicted class's map, so only it needs those maps scored)."""

    protocol: str
    iou_thresholds: tuple[float, ...]
    k: int

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {PROTOCOLS}, got {self.protocol!r}")
        if self.k < 1:
            raise ValueError(f"k must be >= 1, got {self.k}")
        object.__setattr__(self, "iou_thresholds", tuple(float(t) for t in self.iou_thresholds))

    @classmethod
    def for_dataset(cls, protocol: str, iou_thresholds, num_classes: int) -> "MetricSet":
        return cls(protocol, tuple(iou_thresholds), top_k(num_classes))

    @property
    def needs_top1_maps(self) -> bool:
        """Whether boxes of the top-1 predicted class's map are scored (the "paper" GT-Known)."""
        return self.protocol == "paper"

    # ------------------------------------------------------------------------------ names
    @staticmethod
    def v2_column(iou: float) -> str:
        return f"maxboxacc_v2_iou{round(iou * 100)}"

    @staticmethod
    def tau_column(column: str) -> str:
        return f"{column}_tau"

    def values(self) -> list[str]:
        """Value columns (percent, except num_images), in table order."""
        return (["num_images", "top1_cls", "topk_cls", *TAU_METRICS, "maxboxacc_v2"]
                + [self.v2_column(iou) for iou in self.iou_thresholds])

    def taus(self) -> list[str]:
        """The tau column of each metric read at a tau of its own."""
        return ([self.tau_column(m) for m in TAU_METRICS]
                + [self.tau_column(self.v2_column(iou)) for iou in self.iou_thresholds])

    def columns(self, prefix: str = "") -> list[str]:
        """Every metric column one split's result fills, under a split prefix (VAL, TEST)."""
        return [prefix + c for c in self.values() + self.taus()]

    def row(self, result, prefix: str = "") -> dict:
        """A LocalizationResult as the columns `columns(prefix)` names (curves left out)."""
        out = {"num_images": result.n_images, "top1_cls": result.top1_cls, "topk_cls": result.topk_cls,
               "maxboxacc_v2": result.maxboxacc_v2}
        for name in TAU_METRICS:
            metric = getattr(result, name)
            out[name], out[self.tau_column(name)] = metric.value, metric.tau
        for iou, metric in result.v2_per_iou.items():
            out[self.v2_column(iou)], out[self.tau_column(self.v2_column(iou))] = metric.value, metric.tau
        return {prefix + c: out[c] for c in self.values() + self.taus()}

    # ---------------------------------------------------------------- per-epoch validation
    def epoch_columns(self, prefix: str = VAL) -> list[str]:
        """The keys per-epoch validation reports (training's metrics.parquet, Tune's objective):
        the split's metric columns and k."""
        return self.columns(prefix) + ["k"]

    def epoch_row(self, result, prefix: str = VAL) -> dict:
        """A validation result as the keys `epoch_columns` names."""
        return {**self.row(result, prefix), "k": result.k}

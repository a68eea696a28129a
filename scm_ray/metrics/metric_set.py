"""The metric set: which metrics an evaluation reports and what each is called, derived from the
evaluation settings alone (protocol, IoU thresholds, k). The one place metric names are made:
the accumulator's results (`LocalizationResult.summary`), the per-epoch validation keys, the
results tables and the checks of a configured objective all ask it, and nothing parses a name
back. docs/protocols.md defines the metrics.
"""

from __future__ import annotations

from dataclasses import dataclass

PROTOCOLS = ("wsol", "paper")
# Top-k classification and localization use k = min(TOP_K, number of classes).
TOP_K = 5
# GT-Known / MaxBoxAcc (v1) count a box as right at IoU >= 0.5.
GT_KNOWN_IOU = 0.5
# Metrics read at a tau of their own, in table order (Top-k Loc's name carries k).
TAU_METRICS = ("gt_known", "top1_loc", "topk_loc", "maxboxacc")


def top_k(num_classes: int) -> int:
    """The k of Top-k metrics for a dataset of `num_classes` classes."""
    return min(TOP_K, num_classes)


def topk_column(kind: str, k: int) -> str:
    """Top-k Cls / Loc's column ("cls" or "loc"): top5_loc for k = 5."""
    return f"top{k}_{kind}"


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
    @property
    def topk_cls(self) -> str:
        return topk_column("cls", self.k)

    @property
    def topk_loc(self) -> str:
        return topk_column("loc", self.k)

    def column(self, metric: str) -> str:
        """The column of a metric by its role ("topk_loc" -> "top5_loc"; others unchanged)."""
        return {"topk_loc": self.topk_loc, "topk_cls": self.topk_cls}.get(metric, metric)

    def v2_column(self, iou: float) -> str:
        return f"maxboxacc_v2_iou{round(iou * 100)}"

    @staticmethod
    def tau_column(column: str) -> str:
        return f"{column}_tau"

    def values(self) -> list[str]:
        """Value columns (percent, except n_images), in table order."""
        return (["n_images", "top1_cls", self.topk_cls]
                + [self.column(m) for m in TAU_METRICS]
                + ["maxboxacc_v2"] + [self.v2_column(iou) for iou in self.iou_thresholds])

    def taus(self) -> list[str]:
        """The tau column of each metric read at a tau of its own."""
        return ([self.tau_column(self.column(m)) for m in TAU_METRICS]
                + [self.tau_column(self.v2_column(iou)) for iou in self.iou_thresholds])

    def columns(self) -> list[str]:
        """Every numeric column a result row holds."""
        return self.values() + self.taus()

    def row(self, result) -> dict:
        """A LocalizationResult as one flat row, in these names (curves left out)."""
        out = {"protocol": result.protocol, "tau_source": result.tau_source, "n_images": result.n_images,
               "top1_cls": result.top1_cls, self.topk_cls: result.topk_cls,
               "maxboxacc_v2": result.maxboxacc_v2}
        for name in TAU_METRICS:
            metric, column = getattr(result, name), self.column(name)
            out[column] = metric.value
            out[self.tau_column(column)] = metric.tau
        for iou, metric in result.v2_per_iou.items():
            out[self.v2_column(iou)] = metric.value
            out[self.tau_column(self.v2_column(iou))] = metric.tau
        return out

    # ---------------------------------------------------------------- per-epoch validation
    def epoch_columns(self, prefix: str) -> list[str]:
        """The keys per-epoch validation reports (training's metrics.parquet, Tune's objective):
        every column under `prefix`, and num_images (n_images under its earlier name)."""
        return [prefix + c for c in self.columns()] + [prefix + "num_images"]

    def epoch_row(self, result, prefix: str) -> dict:
        """A validation result as the keys `epoch_columns` names."""
        row = self.row(result)
        return {**{prefix + c: row[c] for c in self.columns()}, prefix + "num_images": result.n_images}

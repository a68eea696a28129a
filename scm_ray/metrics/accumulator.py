"""Streaming localisation metrics whose state is integer counts, so workers merge exactly.

Per image and threshold the accumulator only records whether the box passed; at the end
`compute` turns the counts into percentages under a protocol (protocols.py). Counts add, so
accumulators from several workers merge exactly (`merge`), and `counts_vector` /
`load_counts_vector` expose them as one int64 vector for an all-reduce (SUM), while
`state_dict` / `from_state_dict` carry the whole accumulator as plain numpy and Python values.

Which map is which (the caller passes them explicitly):
- gt_maps (B, H, W): the map of each image's GROUND-TRUTH class. GT-Known, MaxBoxAcc v1/v2
  and Top-k Loc all read it (a top-k prediction is correct only through the ground-truth
  class, whose map this is).
- top1_maps (B, H, W): the map of each image's top-1 PREDICTED class (topk_classes[:, 0]),
  needed only for the "paper" protocol's GT-Known; leave it out with paper=False. For images
  whose top-1 class is right it is not read (it equals the ground-truth map).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from scm_ray.metrics import protocols
from scm_ray.metrics.metric_set import GT_KNOWN_IOU, MetricSet
from scm_ray.metrics.boxes import (
    DEFAULT_THRESHOLDS,
    check_boxes,
    check_scoremap,
    check_thresholds,
    extract_boxes,
    iou_unchecked,
)

V2_IOUS = (0.3, 0.5, 0.7)
_SCALARS = ("n_images", "cls_top1", "cls_topk")


def best_iou_per_threshold(found, gt_boxes: np.ndarray, multi: bool) -> np.ndarray:
    """(T,) the best IoU with any (checked) GT box of the largest box, or of any box, per tau."""
    if not multi:
        return iou_unchecked(found.largest, gt_boxes).max(axis=1)  # (T,)
    per_box = iou_unchecked(found.boxes, gt_boxes).max(axis=1)  # (n,)
    # Thresholds at one level share rows; levels' rows are laid out in rising order.
    starts = np.unique(found.start)  # (L,)
    per_level = np.maximum.reduceat(per_box, starts)  # (L,)
    return per_level[np.searchsorted(starts, found.start)]  # (T,)


class LocalizationAccumulator:
    """Counts per threshold for Top-1/Top-k Cls, GT-Known, Top-1/Top-k Loc, MaxBoxAcc v1 and v2."""

    def __init__(
        self,
        thresholds=DEFAULT_THRESHOLDS,
        v2_ious: Sequence[float] = V2_IOUS,
        k: int = 5,
        paper: bool = True,
    ):
        self.thresholds = check_thresholds(thresholds).astype(np.float64)  # (T,)
        self.v2_ious = tuple(float(x) for x in v2_ious)
        if not self.v2_ious or any(not 0 < x <= 1 for x in self.v2_ious):
            raise ValueError(f"v2_ious must be non-empty values in (0, 1], got {v2_ious}")
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.k = int(k)
        self.paper = bool(paper)
        t = len(self.thresholds)
        self.n_images = 0
        self.cls_top1 = 0
        self.cls_topk = 0
        self.gt_known = np.zeros(t, np.int64)
        self.top1_loc = np.zeros(t, np.int64)
        self.topk_loc = np.zeros(t, np.int64)
        self.v2 = np.zeros((len(self.v2_ious), t), np.int64)
        self.paper_gt_known = np.zeros(t, np.int64) if self.paper else None

    # ----------------------------------------------------------------------------- updating
    def update(
        self,
        labels,
        topk_classes,
        gt_boxes: Sequence,
        gt_maps: np.ndarray,
        top1_maps: np.ndarray | None = None,
    ) -> None:
        """Add a batch.

        labels (B,) int; topk_classes (B, >= k) int, best first; gt_boxes: B arrays (m_i, 4)
        x0, y0, x1, y1 in the maps' pixel grid; gt_maps / top1_maps (B, H, W) float in [0, 1]
        (see the module docstring for which map is which).
        """
        labels = np.asarray(labels)
        topk = np.asarray(topk_classes)
        if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"labels must be a 1-D integer array, got shape {labels.shape} dtype {labels.dtype}")
        b = len(labels)
        if topk.ndim != 2 or topk.shape[0] != b or topk.shape[1] < self.k or not np.issubdtype(topk.dtype, np.integer):
            raise ValueError(f"topk_classes must be integer (B={b}, >= k={self.k}), got shape {topk.shape}")
        if len(gt_boxes) != b:
            raise ValueError(f"gt_boxes must hold one (m, 4) array per image ({b}), got {len(gt_boxes)}")
        boxes = [check_boxes(x, f"gt_boxes[{i}]") for i, x in enumerate(gt_boxes)]
        self._check_maps(gt_maps, b, "gt_maps")
        if self.paper:
            if top1_maps is None:
                raise ValueError('top1_maps is required for the "paper" protocol (or build with paper=False)')
            self._check_maps(top1_maps, b, "top1_maps")
            if np.shape(top1_maps) != np.shape(gt_maps):
                raise ValueError(f"top1_maps shape {np.shape(top1_maps)} differs from gt_maps {np.shape(gt_maps)}")
        top1_right = topk[:, 0] == labels  # (B,)
        topk_right = (topk[:, : self.k] == labels[:, None]).any(axis=1)  # (B,)
        for i in range(b):
            found = extract_boxes(gt_maps[i], self.thresholds, multi_contour=True)
            known = best_iou_per_threshold(found, boxes[i], multi=False) >= GT_KNOWN_IOU  # (T,)
            multi = best_iou_per_threshold(found, boxes[i], multi=True)  # (T,)
            self.gt_known += known
            self.top1_loc += known & top1_right[i]
            self.topk_loc += known & topk_right[i]
            for j, iou in enumerate(self.v2_ious):
                self.v2[j] += multi >= iou
            if self.paper:
                if top1_right[i]:
                    self.paper_gt_known += known
                else:
                    pred = extract_boxes(top1_maps[i], self.thresholds, multi_contour=False)
                    self.paper_gt_known += best_iou_per_threshold(pred, boxes[i], multi=False) >= GT_KNOWN_IOU
        self.n_images += b
        self.cls_top1 += int(top1_right.sum())
        self.cls_topk += int(topk_right.sum())

    @staticmethod
    def _check_maps(maps, b: int, name: str) -> None:
        """Shape and dtype up front; values are checked as each map is converted."""
        if not isinstance(maps, np.ndarray) or maps.ndim != 3 or maps.shape[0] != b:
            raise ValueError(f"{name} must be a (B={b}, H, W) numpy array, got {getattr(maps, 'shape', type(maps))}")
        check_scoremap(maps.reshape(-1, maps.shape[-1]), name)

    @classmethod
    def for_metrics(cls, metrics: MetricSet, thresholds=DEFAULT_THRESHOLDS) -> "LocalizationAccumulator":
        """An accumulator counting exactly what `metrics` reports: the top-1 predicted maps'
        boxes only for the "paper" protocol (under "wsol" they would be extracted for nothing)."""
        return cls(thresholds, v2_ious=metrics.iou_thresholds, k=metrics.k, paper=metrics.needs_top1_maps)

    # ---------------------------------------------------------------------------- combining
    def _config(self) -> dict:
        return {"thresholds": self.thresholds, "v2_ious": self.v2_ious, "k": self.k, "paper": self.paper}

    def _check_compatible(self, thresholds: np.ndarray, v2_ious, k: int, paper: bool) -> None:
        if not np.array_equal(thresholds, self.thresholds):
            raise ValueError("accumulators use different thresholds")
        if tuple(v2_ious) != self.v2_ious or int(k) != self.k or bool(paper) != self.paper:
            raise ValueError("accumulators differ in v2_ious, k or paper")

    def merge(self, other: "LocalizationAccumulator") -> "LocalizationAccumulator":
        """Add another accumulator's counts (same configuration) into this one; returns self."""
        self._check_compatible(**other._config())
        self.load_counts_vector(self.counts_vector() + other.counts_vector())
        return self

    def counts_vector(self) -> np.ndarray:
        """Every count in one int64 vector (fixed layout for this configuration): SUM-reducible."""
        parts = [np.array([self.n_images, self.cls_top1, self.cls_topk], np.int64)]
        parts += [self.gt_known, self.top1_loc, self.topk_loc, self.v2.ravel()]
        if self.paper:
            parts.append(self.paper_gt_known)
        return np.concatenate(parts)

    def load_counts_vector(self, vector) -> None:
        """Replace the counts with a vector from counts_vector() (e.g. after an all-reduce)."""
        vector = np.asarray(vector)
        if vector.shape != self.counts_vector().shape or not np.issubdtype(vector.dtype, np.integer):
            raise ValueError(f"counts vector must be integer with shape {self.counts_vector().shape}, got {vector.shape}")
        t = len(self.thresholds)
        self.n_images, self.cls_top1, self.cls_topk = (int(x) for x in vector[:3])
        rest = vector[3:].astype(np.int64)
        self.gt_known, self.top1_loc, self.topk_loc = rest[:t].copy(), rest[t : 2 * t].copy(), rest[2 * t : 3 * t].copy()
        nv = len(self.v2_ious) * t
        self.v2 = rest[3 * t : 3 * t + nv].reshape(len(self.v2_ious), t).copy()
        if self.paper:
            self.paper_gt_known = rest[3 * t + nv :].copy()

    def state_dict(self) -> dict:
        """Configuration and counts as plain numpy arrays and Python values (picklable, JSON-able via tolist)."""
        return {
            "thresholds": self.thresholds.copy(),
            "v2_ious": list(self.v2_ious),
            "k": self.k,
            "paper": self.paper,
            "counts": self.counts_vector(),
        }

    @classmethod
    def from_state_dict(cls, state: dict) -> "LocalizationAccumulator":
        """Rebuild an accumulator from state_dict() output."""
        acc = cls(np.asarray(state["thresholds"]), state["v2_ious"], state["k"], state["paper"])
        acc.load_counts_vector(np.asarray(state["counts"], np.int64))
        return acc

    # ---------------------------------------------------------------------------- computing
    def counts(self) -> dict:
        """Named counts, the input of protocols.compute."""
        out = {name: getattr(self, name) for name in _SCALARS}
        out.update(gt_known=self.gt_known, top1_loc=self.top1_loc, topk_loc=self.topk_loc, v2=self.v2)
        out["paper_gt_known"] = self.paper_gt_known
        return out

    def compute(
        self,
        protocol: str = "wsol",
        thresholds_from: protocols.LocalizationResult | None = None,
        fixed_threshold: float | None = None,
    ) -> protocols.LocalizationResult:
        """Percentages under "wsol" or "paper"; see protocols.compute for the tau rules."""
        return protocols.compute(
            self.counts(), self.thresholds, self.v2_ious, self.k, protocol, thresholds_from, fixed_threshold
        )

"""WSOL metrics: boxes from score maps (wsolevaluation convention, fast), IoU, streaming accumulators.

numpy + opencv (+ numba for the box kernels) only: no torch, no Ray, so evaluation workers and
tests can import it anywhere.
"""

from scm_ray.metrics.accumulator import LocalizationAccumulator
from scm_ray.metrics.boxes import (
    DEFAULT_THRESHOLDS,
    MapBoxes,
    box_iou,
    boxes_from_scoremap,
    check_boxes,
    extract_boxes,
    thresholds_for,
)
from scm_ray.metrics.metric_set import PROTOCOLS, MetricSet, top_k
from scm_ray.metrics.protocols import LocalizationResult, Metric, compute

__all__ = [
    "DEFAULT_THRESHOLDS",
    "PROTOCOLS",
    "LocalizationAccumulator",
    "LocalizationResult",
    "MapBoxes",
    "Metric",
    "MetricSet",
    "box_iou",
    "boxes_from_scoremap",
    "check_boxes",
    "compute",
    "extract_boxes",
    "thresholds_for",
    "top_k",
]

"""WSOL metrics: boxes from score maps (wsolevaluation convention, fast), IoU, streaming accumulators.

numpy + opencv (+ numba for the box kernels) only: no torch, no Ray, so evaluation workers and
tests can import it anywhere.
"""

from scm_ray.metrics.boxes import (
    DEFAULT_THRESHOLDS,
    MapBoxes,
    box_iou,
    boxes_from_scoremap,
    check_boxes,
    extract_boxes,
    thresholds_for,
)

__all__ = [
    "DEFAULT_THRESHOLDS",
    "MapBoxes",
    "box_iou",
    "boxes_from_scoremap",
    "check_boxes",
    "extract_boxes",
    "thresholds_for",
]

"""Boxes from score maps (the wsolevaluation convention, fast and exact) and IoU.

The convention (docs/protocols.md; Choe et al., CVPR 2020): the [0, 1] map becomes uint8 as
``(map * 255).astype(uint8)`` in the map's own float type; at threshold tau the mask is
``u8 > int(tau * u8.max())``; cv2.findContours(RETR_TREE, CHAIN_APPROX_SIMPLE) gives contours;
the largest by cv2.contourArea (the first of equal ones), or every contour, gives
(x, y, x + w, y + h) from cv2.boundingRect with x1, y1 clipped to width - 1, height - 1; no
contour gives (0, 0, 0, 0). `reference.py` is that recipe written out plainly (the oracle);
this module returns the same boxes, in the same order, from one pass over the map for all
thresholds at once (see `_kernels.py` for why that is exact).

Input rules (ValueError names the problem): a map is a 2-D float32/float64 array with values in
[0, 1]. NaN is refused, as the reference's own check refuses it: casting NaN to uint8 is
undefined (0 on x86, so a NaN map would quietly read as background) and a model that emits NaN
must be noticed, not scored. Thresholds are a non-empty 1-D sequence of finite numbers >= 0;
any tau >= 1 simply yields no contour. Ground-truth boxes are (n >= 1, 4) x0, y0, x1, y1 with
0 <= x0 <= x1 and 0 <= y0 <= y1, in the map's pixel grid; wsolevaluation truncates boxes
scaled to that grid with int(), and reproducing its numbers needs the same.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from scm_ray.metrics import _kernels as k

DEFAULT_THRESHOLDS = np.arange(0, 1, 0.01)  # (100,) tau = 0, 0.01, ..., 0.99


def thresholds_for(interval: float = 0.01) -> np.ndarray:
    """tau = 0, interval, ..., < 1 exactly as the reference builds them (np.arange)."""
    if not 0 < interval < 1:
        raise ValueError(f"threshold interval must be in (0, 1), got {interval}")
    return np.arange(0, 1, interval)


def check_scoremap(scoremap: np.ndarray, name: str = "scoremap") -> np.ndarray:
    """Shape and dtype checks; values are checked while converting (one pass)."""
    if not isinstance(scoremap, np.ndarray):
        raise ValueError(f"{name} must be a numpy array, got {type(scoremap).__name__}")
    if scoremap.dtype not in (np.float32, np.float64):
        raise ValueError(f"{name} must be float32 or float64, got {scoremap.dtype}")
    if scoremap.ndim != 2 or scoremap.shape[0] == 0 or scoremap.shape[1] == 0:
        raise ValueError(f"{name} must be a non-empty 2-D (H, W) array, got shape {scoremap.shape}")
    if max(scoremap.shape) >= 1 << 15:  # the kernels pack (y, x) into one int32
        raise ValueError(f"{name} sides must be below 32768 pixels, got shape {scoremap.shape}")
    return np.ascontiguousarray(scoremap)


class NonFiniteMap(ValueError):
    """A score map holds NaN: its model's output is not finite (training reports divergence)."""


def to_uint8(scoremap: np.ndarray, name: str = "scoremap") -> tuple[np.ndarray, np.ndarray]:
    """The reference's uint8 image and its histogram; NonFiniteMap on NaN, ValueError on values
    outside [0, 1]."""
    scoremap = check_scoremap(scoremap, name)
    u8, counts, status = k.to_uint8(scoremap, scoremap.dtype.type(255))  # (H, W), (256,)
    if status == 1:
        raise NonFiniteMap(f"{name} contains NaN (the reference refuses NaN maps too)")
    if status == 2:
        lo, hi = float(np.nanmin(scoremap)), float(np.nanmax(scoremap))
        raise ValueError(f"{name} values must be in [0, 1], got min {lo} and max {hi}")
    return u8, counts


def check_thresholds(thresholds) -> np.ndarray:
    """A non-empty 1-D array of finite thresholds >= 0, dtype kept (it matters for tau * max)."""
    arr = np.asarray(thresholds)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"thresholds must be a non-empty 1-D sequence, got shape {arr.shape}")
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise ValueError(f"thresholds must be numbers, got dtype {arr.dtype}")
    if not np.all(np.isfinite(arr)) or np.any(arr < 0):
        raise ValueError("thresholds must be finite and >= 0")
    return arr


def threshold_levels(thresholds: np.ndarray, peak: int) -> np.ndarray:
    """int(tau * max) per tau, computed in the same types as the reference; capped at 255.

    A level of 255 or more leaves no pixel above it, so capping changes no box.
    """
    levels = (thresholds * np.uint8(peak)).astype(np.int64)  # (T,) truncation like int()
    return np.minimum(levels, 255)


@dataclass(frozen=True)
class MapBoxes:
    """Both box modes of one map at every threshold (index t follows the thresholds given).

    levels: (T,) int(tau * max) per threshold (capped at 255); equal levels mean equal boxes.
    largest: (T, 4) the largest-contour box per threshold.
    boxes, start, count: rows start[t] : start[t] + count[t] of boxes (n, 4) are all contours'
    boxes at threshold t, in cv2's contour order (count >= 1: no contour gives one zero box);
    levels' rows are stored in rising level order.
    """

    levels: np.ndarray
    largest: np.ndarray
    boxes: np.ndarray
    start: np.ndarray
    count: np.ndarray

    def all_at(self, t: int) -> np.ndarray:
        """Every contour's box at threshold index t, (k, 4)."""
        return self.boxes[self.start[t] : self.start[t] + self.count[t]]


class _Workspace:
    """Per-thread scratch arrays for one map size, reused so each map allocates little."""

    def __init__(self, h: int, w: int):
        n2 = (h + 2) * (w + 2)
        cap = h * w + 2
        # Labels fit in 16 bits for maps up to ~65k pixels, and the grid then stays in L1 cache.
        label_type = np.uint16 if cap < np.iinfo(np.uint16).max else np.uint32
        self.lab = np.empty(n2, label_type)
        self.none = label_type(np.iinfo(label_type).max)  # "no label yet"
        self.nxt = np.empty(n2, np.int32)
        self.fg_entry = np.empty(n2, np.int32)
        self.bg_entry = np.empty(n2, np.int32)
        self.fg_st = np.empty(cap * int(k.N_STATS), np.int32)
        self.bg_st = np.empty(cap * int(k.N_STATS), np.int32)


_local = threading.local()


def _workspace(h: int, w: int) -> _Workspace:
    cache = getattr(_local, "spaces", None)
    if cache is None:
        cache = _local.spaces = {}
    if (h, w) not in cache:
        if len(cache) > 4:
            cache.clear()
        cache[(h, w)] = _Workspace(h, w)
    return cache[(h, w)]


def _level_tables(u8: np.ndarray, counts: np.ndarray, wanted: np.ndarray, want_all: bool):
    """Largest box (256, 4) and all boxes (rows, start, count per level) for the wanted levels."""
    h, w = u8.shape
    ws = _workspace(h, w)
    order, bounds = k.sort_pixels(u8, counts)
    lowest = int(np.flatnonzero(wanted)[0])
    fg_snap, holes = k.sweep_foreground(
        order, bounds, wanted, lowest, h, w, k.GAIN_TABLE, ws.lab, ws.none, ws.fg_entry, ws.nxt, ws.fg_st
    )
    hole_levels = holes > 0 if want_all else k.largest_needs_holes(fg_snap, holes)  # (256,)
    if hole_levels.any():
        highest = int(np.flatnonzero(hole_levels)[-1])
        bg_snap, _ = k.sweep_background(
            order, bounds, hole_levels, highest, h, w, k.GAIN_TABLE, ws.lab, ws.none, ws.bg_entry, ws.nxt, ws.bg_st
        )
    else:
        bg_snap = np.zeros((0, k.N_SNAP), np.int64)
    return k.assemble(fg_snap, holes, bg_snap, ws.fg_entry, ws.fg_st, ws.bg_entry, ws.bg_st, wanted, h, w, want_all)


def extract_boxes(scoremap: np.ndarray, thresholds=DEFAULT_THRESHOLDS, multi_contour: bool = True) -> MapBoxes:
    """Both modes' boxes for one map at every threshold in one pass (the accumulator's entry).

    With multi_contour=False only `largest` is filled (boxes holds one zero row per threshold).
    """
    thresholds = check_thresholds(thresholds)
    u8, counts = to_uint8(scoremap)
    peak = int(np.flatnonzero(counts)[-1])
    levels = threshold_levels(thresholds, peak)  # (T,)
    wanted = np.zeros(256, np.bool_)
    wanted[levels] = True
    largest, boxes, start, count = _level_tables(u8, counts, wanted, multi_contour)
    if not multi_contour:
        n = len(levels)
        return MapBoxes(levels, largest[levels], np.zeros((n, 4), np.int64), np.arange(n), np.ones(n, np.int64))
    return MapBoxes(levels, largest[levels], boxes, start[levels], count[levels])


def boxes_from_scoremap(scoremap: np.ndarray, thresholds=DEFAULT_THRESHOLDS, multi_contour: bool = False) -> list[np.ndarray]:
    """Per threshold, the (k, 4) int boxes x0, y0, x1, y1 the reference would return.

    Largest-contour mode gives k = 1; multi-contour mode gives every contour (holes included) in
    cv2's order. Thresholds that meet at the same integer level share one read-only array.
    """
    found = extract_boxes(scoremap, thresholds, multi_contour)
    source = found.boxes if multi_contour else found.largest
    source.setflags(write=False)
    levels = found.levels.tolist()
    at = dict(zip(levels, range(len(levels))))  # level -> one threshold index with it (<= 256)
    # Threshold t's rows: start[t] : end[t] of found.boxes, or row t of found.largest.
    start = found.start.tolist() if multi_contour else range(len(levels))
    end = (found.start + found.count).tolist() if multi_contour else range(1, len(levels) + 1)
    views = {level: source[start[t] : end[t]] for level, t in at.items()}
    return [views[level] for level in levels]


def check_boxes(boxes, name: str = "boxes") -> np.ndarray:
    """(n >= 1, 4) finite x0, y0, x1, y1 with 0 <= x0 <= x1 and 0 <= y0 <= y1; a (4,) box is one row."""
    arr = np.asarray(boxes)
    if arr.ndim == 1 and arr.size == 4:
        arr = arr[None]
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ValueError(f"{name} must have shape (n, 4) as x0, y0, x1, y1, got {arr.shape}")
    if arr.shape[0] == 0:
        raise ValueError(f"{name} is empty: every image needs at least one ground-truth box")
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise ValueError(f"{name} must be numeric, got dtype {arr.dtype}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite")
    if np.any(arr < 0):
        raise ValueError(f"{name} coordinates must be non-negative")
    if np.any(arr[:, 2] < arr[:, 0]) or np.any(arr[:, 3] < arr[:, 1]):
        raise ValueError(f"{name} must be in x0, y0, x1, y1 form with x0 <= x1 and y0 <= y1")
    return arr


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in a (n, 4) with every box in b (m, 4) -> (n, m), +1 pixel convention.

    Widths are x1 - x0 + 1 (inclusive pixel corners), as in wsolevaluation. Both sides are
    checked (check_boxes); `iou_unchecked` is the same for boxes already checked.
    """
    return iou_unchecked(check_boxes(a, "a"), check_boxes(b, "b"))


def iou_unchecked(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """box_iou without the checks (hot loops); a pair whose union is not positive scores 0."""
    a = np.asarray(a, np.float64)[:, None, :]  # (n, 1, 4)
    b = np.asarray(b, np.float64)[None, :, :]  # (1, m, 4)
    iw = np.maximum(0, np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]) + 1)  # (n, m)
    ih = np.maximum(0, np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]) + 1)  # (n, m)
    inter = iw * ih
    area_a = (a[..., 2] - a[..., 0] + 1) * (a[..., 3] - a[..., 1] + 1)  # (n, 1)
    area_b = (b[..., 2] - b[..., 0] + 1) * (b[..., 3] - b[..., 1] + 1)  # (1, m)
    union = area_a + area_b - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)

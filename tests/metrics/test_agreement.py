"""The fast extractor returns exactly the reference's boxes, in order, for every map and tau.

The reference (scm_ray.metrics.reference) is one cv2.findContours per threshold; the fast
extractor never traces a contour, so any slip in its set-based restatement shows up here.
Maps are upsampled random 14 x 14 grids (smooth, like real localisation maps) at several sizes
and dtypes, some with pixel noise or flat steps so holes, plateaus and ties occur.
"""

import cv2
import numpy as np
import pytest

from scm_ray.metrics import boxes_from_scoremap, thresholds_for
from scm_ray.metrics._kernels import GAIN_TABLE, JOINED_SHIFT, NEIGHBOURS
from scm_ray.metrics.reference import reference_boxes


def random_maps(n: int, seed: int):
    rng = np.random.default_rng(seed)
    for i in range(n):
        h, w = (int(v) for v in rng.integers(14, 57, 2))
        m = cv2.resize(rng.random((14, 14)), (w, h), interpolation=cv2.INTER_LINEAR)
        if i % 4 == 1:
            m = m + rng.random((h, w)) * 0.15  # noise: many small components and holes
        elif i % 4 == 2:
            m = np.round(m * 6) / 6  # flat steps: plateaus and equal-area ties
        m = (m - m.min()) / (m.max() - m.min())
        yield m.astype(np.float32) if i % 3 == 0 else m


def first_difference(fast, ref):
    for t, (a, b) in enumerate(zip(fast, ref)):
        if a.shape != b.shape or not np.array_equal(a, b):
            return t, a.tolist(), b.tolist()
    return None


@pytest.mark.parametrize("multi", [False, True])
@pytest.mark.parametrize("interval, n_maps, seed", [(0.01, 300, 1), (0.001, 20, 2)])
def test_identical_to_reference(interval, n_maps, seed, multi):
    taus = thresholds_for(interval)
    for k, m in enumerate(random_maps(n_maps, seed)):
        diff = first_difference(boxes_from_scoremap(m, taus, multi), reference_boxes(m, taus, multi))
        assert diff is None, f"map {k} {m.shape} {m.dtype}: threshold index, fast, reference = {diff}"


def test_identical_on_odd_maps():
    """Binary, pure-noise, sparse and single-row maps: the structures smooth maps rarely have."""
    rng = np.random.default_rng(3)
    taus = np.concatenate([thresholds_for(0.05), [1.0]])
    odd = [
        (rng.random((12, 15)) < 0.5).astype(float),
        rng.random((9, 9)),
        np.eye(7),
        rng.random((1, 20)),
        rng.random((20, 1)),
        np.ones((1, 1)),
        # over 65,535 pixels: labels switch from 16 to 32 bits
        cv2.resize(rng.random((14, 14)), (261, 259), interpolation=cv2.INTER_LINEAR) + rng.random((259, 261)) * 0.1,
    ]
    for k, m in enumerate(odd):
        m = m / m.max()
        for multi in (False, True):
            diff = first_difference(boxes_from_scoremap(m, taus, multi), reference_boxes(m, taus, multi))
            assert diff is None, f"odd map {k} multi={multi}: {diff}"


def test_joined_flag_matches_connected_components():
    """The foreground sweep compares neighbour labels only where GAIN_TABLE does not flag the
    neighbours in as joined; check that flag for all 256 neighbourhoods against cv2."""
    for mask in range(256):
        grid = np.zeros((3, 3), np.uint8)  # the centre, the pixel joining, is not in yet
        for i, (dy, dx) in enumerate(NEIGHBOURS):
            grid[1 + dy, 1 + dx] = mask >> i & 1
        n_labels, _ = cv2.connectedComponents(grid, connectivity=8)  # background is label 0
        assert bool(GAIN_TABLE[0, mask] >> JOINED_SHIFT & 1) == (n_labels <= 2), f"mask {mask:08b}"

"""Boxes from maps: hand-computed answers, the uint8/threshold semantics, IoU, input checks."""

import numpy as np
import pytest

from scm_ray.metrics import box_iou, boxes_from_scoremap, extract_boxes, thresholds_for
from scm_ray.metrics.boxes import check_boxes, to_uint8
from scm_ray.metrics.reference import reference_boxes


def blank(h=10, w=12):
    return np.zeros((h, w))


def boxes_at(scoremap, tau, multi=False):
    return boxes_from_scoremap(scoremap, [tau], multi_contour=multi)[0].tolist()


def test_single_blob():
    m = blank()
    m[2:5, 3:7] = 1.0  # rows 2-4, columns 3-6
    # x1, y1 are one past the last pixel (cv2.boundingRect's x + w), as in the reference
    assert boxes_at(m, 0.0) == [[3, 2, 7, 5]]
    assert boxes_at(m, 0.5, multi=True) == [[3, 2, 7, 5]]
    assert boxes_at(m, 1.0) == [[0, 0, 0, 0]]  # int(1 * 255) = 255: nothing is above it


def test_two_blobs_largest_vs_all():
    m = blank()
    m[1:4, 1:4] = 0.5  # 3 x 3, uint8 127
    m[6:8, 7:9] = 1.0  # 2 x 2, uint8 255
    assert boxes_at(m, 0.4) == [[1, 1, 4, 4]]  # level 102: both blobs, the bigger wins
    # every contour, in cv2's order: siblings by falling raster position of their first pixel
    assert boxes_at(m, 0.4, multi=True) == [[7, 6, 9, 8], [1, 1, 4, 4]]
    assert boxes_at(m, 0.6) == [[7, 6, 9, 8]]  # level 153: only the small bright blob is left


def test_equal_areas_keep_cv2_order():
    m = blank()
    m[1:3, 1:3] = 1.0
    m[6:8, 6:8] = 1.0
    # equal contour areas: max() keeps the first contour cv2 lists, the later-starting blob
    assert boxes_at(m, 0.5) == [[6, 6, 8, 8]]


def test_touching_borders_are_clipped():
    m = blank()
    m[0:3, 9:12] = 1.0  # top-right corner of a 10 x 12 map
    assert boxes_at(m, 0.5) == [[9, 0, 11, 3]]  # x1 = min(12, width - 1)
    m[:] = 0
    m[7:10, 0:2] = 1.0  # bottom-left corner
    assert boxes_at(m, 0.5) == [[0, 7, 2, 9]]  # y1 = min(10, height - 1)


def test_constant_map_is_one_full_box():
    m = np.full((6, 8), 0.5)  # uint8 127 everywhere
    assert boxes_at(m, 0.0) == [[0, 0, 7, 5]]
    assert boxes_at(m, 0.99) == [[0, 0, 7, 5]]  # level int(0.99 * 127) = 125 < 127
    assert boxes_at(m, 1.0) == [[0, 0, 0, 0]]


def test_all_zero_map_has_no_contour():
    found = boxes_from_scoremap(np.zeros((5, 5)), thresholds_for(0.1), multi_contour=True)
    assert all(b.tolist() == [[0, 0, 0, 0]] for b in found)


def test_threshold_at_or_above_max():
    m = blank()
    m[2:4, 2:4] = 0.8
    for tau in (1.0, 1.5, 7.0):
        assert boxes_at(m, tau) == [[0, 0, 0, 0]]
        assert boxes_at(m, tau, multi=True) == [[0, 0, 0, 0]]


def test_hole_contour_in_multi_mode():
    m = np.zeros((8, 8))
    m[1:6, 1:6] = 1.0
    m[3, 3] = 0.0  # a one-pixel hole
    # the hole's border runs through the pixels around it: the hole's box grown by one
    assert boxes_at(m, 0.5, multi=True) == [[1, 1, 6, 6], [2, 2, 5, 5]]
    assert boxes_at(m, 0.5) == [[1, 1, 6, 6]]


def test_thresholds_sharing_a_level_share_boxes():
    m = blank()
    m[2:5, 3:7] = np.linspace(0.2, 1.0, 4)
    taus = thresholds_for(0.001)
    found = boxes_from_scoremap(m, taus, multi_contour=True)
    assert len(found) == 1000
    levels = extract_boxes(m, taus).levels
    assert len(np.unique(levels)) <= 256
    assert not found[0].flags.writeable


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_uint8_conversion_matches_numpy(dtype):
    rng = np.random.default_rng(0)
    m = rng.random((64, 64)).astype(dtype)
    m[0, :4] = [0.0, 1.0, 0.2, 0.6]
    u8, counts = to_uint8(m)
    np.testing.assert_array_equal(u8, (m * 255).astype(np.uint8))  # in the map's own dtype
    assert counts.sum() == m.size


def test_float32_thresholds_multiply_like_the_reference():
    m = blank()
    m[2:5, 3:7] = 1.0
    m[6, 6] = 0.5
    taus = np.arange(0, 1, 0.01, dtype=np.float32)
    assert [b.tolist() for b in boxes_from_scoremap(m, taus)] == [b.tolist() for b in reference_boxes(m, taus)]


def test_iou_plus_one_convention():
    a = np.array([[0, 0, 9, 9], [5, 0, 14, 9]])
    b = np.array([[0, 0, 9, 9], [20, 20, 29, 29], [5, 0, 14, 9]])
    iou = box_iou(a, b)
    assert iou.shape == (2, 3)
    assert iou[0, 0] == 1.0
    assert iou[0, 1] == 0.0
    assert iou[0, 2] == pytest.approx(50 / 150)  # 5 x 10 overlap of two 10 x 10 boxes
    assert box_iou(np.array([[3, 3, 3, 3]]), np.array([[3, 3, 3, 3]]))[0, 0] == 1.0  # one pixel


@pytest.mark.parametrize(
    "scoremap, message",
    [
        (np.full((4, 4), np.nan), "NaN"),
        (np.full((4, 4), 1.5), r"\[0, 1\]"),
        (np.full((4, 4), -0.1), r"\[0, 1\]"),
        (np.ones((4, 4), np.uint8), "float32 or float64"),
        (np.ones((4, 4), np.float16), "float32 or float64"),
        (np.ones((2, 4, 4)), "2-D"),
        (np.ones((0, 4)), "2-D"),
        ([[0.5]], "numpy array"),
    ],
)
def test_bad_maps_are_refused(scoremap, message):
    with pytest.raises(ValueError, match=message):
        boxes_from_scoremap(scoremap, [0.5])


@pytest.mark.parametrize("taus", [[], [[0.5]], [np.nan], [-0.1], ["a"]])
def test_bad_thresholds_are_refused(taus):
    with pytest.raises(ValueError, match="thresholds"):
        boxes_from_scoremap(np.zeros((4, 4)), taus)


@pytest.mark.parametrize(
    "boxes, message",
    [
        (np.zeros((0, 4)), "empty"),
        ([[5, 0, 2, 3]], "x0 <= x1"),
        ([[0, 5, 2, 3]], "y0 <= y1"),
        ([[-1, 0, 2, 3]], "non-negative"),
        ([[0, 0, 2]], r"\(n, 4\)"),
        ([[0, 0, np.inf, 3]], "finite"),
    ],
)
def test_bad_boxes_are_refused(boxes, message):
    with pytest.raises(ValueError, match=message):
        check_boxes(boxes)


def test_iou_checks_its_boxes():
    with pytest.raises(ValueError, match="x0 <= x1"):
        box_iou(np.array([[5, 0, 2, 3]]), np.array([[0, 0, 1, 1]]))

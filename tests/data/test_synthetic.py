"""Synthetic WSOL generator: determinism, exact boxes, coverage and position statistics, the
properties that make it learnable (salient, class evidence over the whole object), idempotent
preparation."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from scm_ray.data import synthetic
from scm_ray.data.prepare import generate_synthetic, prepare_synthetic
from scm_ray.data.records import RecordTable
from scm_ray.data.synthetic import SyntheticSpec, class_styles, coverage, render


def iou(a, b) -> float:
    """+1 pixel convention, as the evaluation."""
    iw = min(a[2], b[2]) - max(a[0], b[0]) + 1
    ih = min(a[3], b[3]) - max(a[1], b[1]) + 1
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    area = lambda x: (x[2] - x[0] + 1) * (x[3] - x[1] + 1)  # noqa: E731
    return inter / (area(a) + area(b) - inter)


def test_render_is_deterministic_and_seeded():
    spec = SyntheticSpec(image_size=48, seed=1)
    a, b = render(spec, "val", 7), render(spec, "val", 7)
    np.testing.assert_array_equal(a[0], b[0])
    assert a[1] == b[1]
    np.testing.assert_array_equal(a[2], b[2])
    other = render(SyntheticSpec(image_size=48, seed=2), "val", 7)
    assert not np.array_equal(a[0], other[0])
    assert not np.array_equal(a[0], render(spec, "test", 7)[0])  # splits differ


def test_written_files_do_not_depend_on_workers(tmp_path):
    spec = SyntheticSpec(num_train=12, num_val=3, num_test=3, image_size=40, seed=4)
    one, _ = generate_synthetic(spec, tmp_path / "a", num_workers=1, progress=False)
    two, _ = generate_synthetic(spec, tmp_path / "b", num_workers=2, progress=False)
    assert [(r.path, r.label, r.boxes.tolist()) for r in one] == [(r.path, r.label, r.boxes.tolist()) for r in two]
    for r in one:
        assert (tmp_path / "a" / r.path).read_bytes() == (tmp_path / "b" / r.path).read_bytes()
    assert one[0].path.startswith("images/train/") and one[0].path.endswith(".jpg")


def test_boxes_are_tight_and_objects_salient():
    """Object pixels are strongly saturated and background pixels are not: the box is the
    tight box of the saturated pixels (every box edge touches one), nothing saturated lies
    outside the boxes, and most of each box is object."""
    spec = SyntheticSpec(image_size=64, seed=0, max_objects=2)
    for i in range(40):
        rgb, label, boxes = render(spec, "train", i)
        sat = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)[..., 1]  # (H, W)
        strong = sat >= 150
        inside = np.zeros_like(strong)
        for x0, y0, x1, y1 in boxes.astype(int):
            inside[y0 : y1 + 1, x0 : x1 + 1] = True
            region = strong[y0 : y1 + 1, x0 : x1 + 1]
            assert region[0].any() and region[-1].any() and region[:, 0].any() and region[:, -1].any()
            assert region.mean() > 0.6
        assert not (strong & ~inside).any(), f"image {i}: saturated pixels outside the boxes"


def test_class_evidence_covers_the_whole_object():
    """Every object pixel carries its class hue (within the jitter band), so no part of the
    object is less discriminative than another."""
    spec = SyntheticSpec(image_size=64, seed=0, num_classes=4)
    styles = class_styles(4)
    for i in range(30):
        rgb, label, boxes = render(spec, "train", i)
        hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV).astype(int)
        obj = hsv[..., 1] >= 150
        hue_dist = np.abs(((hsv[..., 0][obj] - styles[label].hue) + 90) % 180 - 90)
        assert np.percentile(hue_dist, 99) <= 0.25 * 180 / 4 + 3


def test_coverage_positions_and_baselines():
    spec = SyntheticSpec(image_size=64, seed=0)
    boxes, labels = [], []
    for i in range(300):
        _, label, b = render(spec, "test", i)
        boxes.append(b[0])
        labels.append(label)
    boxes = np.array(boxes)
    cov = coverage(boxes, 64, 64)
    assert cov.min() >= 0.045 and cov.max() <= 0.41
    assert 0.15 <= np.median(cov) <= 0.30
    cx = (boxes[:, 0] + boxes[:, 2]) / 2
    assert cx.std() / 64 > 0.12 and cx.min() < 20 and cx.max() > 44  # spread, not centred
    for side in (0.3, 0.5, 0.6, 0.7, 1.0):  # centre boxes (and the whole image) are poor guesses
        c = (64 - 64 * side) / 2
        centre = (c, c, c + 64 * side - 1, c + 64 * side - 1)
        assert np.mean([iou(centre, b) >= 0.5 for b in boxes]) < 0.35
    assert np.bincount(labels, minlength=4).min() > 300 / 4 * 0.6


def test_multiple_objects_and_non_square_images():
    spec = SyntheticSpec(image_size=(80, 48), max_objects=3, seed=2)
    counts = []
    for i in range(40):
        rgb, _, boxes = render(spec, "train", i)
        assert rgb.shape == (48, 80, 3)
        assert np.all(boxes[:, 2] <= 79) and np.all(boxes[:, 3] <= 47) and np.all(boxes[:, :2] >= 0)
        for j in range(len(boxes)):
            for k in range(j + 1, len(boxes)):
                assert iou(boxes[j], boxes[k]) == 0.0
        counts.append(len(boxes))
    assert set(counts) == {1, 2, 3}


def test_class_styles_are_distinct():
    styles = class_styles(12)
    assert len({(s.shape, s.texture) for s in styles}) == 12
    assert len({s.name for s in styles}) == 12
    assert styles[0].shape in synthetic.SHAPES


@pytest.mark.parametrize("kwargs", [dict(image_size=8), dict(num_classes=0), dict(min_coverage=0.5, max_coverage=0.4),
                                    dict(max_objects=0), dict(num_train=-1)])
def test_spec_validation(kwargs):
    with pytest.raises(ValueError):
        SyntheticSpec(**kwargs)


def test_prepare_synthetic_is_idempotent(synthetic_dir):
    beton = synthetic_dir / "train.beton"
    before = beton.stat().st_mtime_ns
    summary = prepare_synthetic(synthetic_dir, num_train=40, num_val=12, num_test=10, image_size=48,
                                num_classes=4, seed=3, num_workers=1, progress=False)
    assert summary.reused and beton.stat().st_mtime_ns == before
    assert "nothing to do" in summary.lines()[0]
    table = RecordTable.read(synthetic_dir)
    assert table.source == "synthetic" and table.splits == ["train", "val", "test"]
    assert table.classes == synthetic.class_names(4)


def test_prepare_synthetic_rebuilds_when_arguments_change(tmp_path):
    first = prepare_synthetic(tmp_path, num_train=6, num_val=2, num_test=2, image_size=32, num_workers=1, progress=False)
    assert not first.reused
    image = tmp_path / RecordTable.read(tmp_path).rows("train")[0].path
    stamp = image.stat().st_mtime_ns
    again = prepare_synthetic(tmp_path, num_train=6, num_val=2, num_test=2, image_size=32, eval_size=40,
                              num_workers=1, progress=False)
    assert not again.reused and again.info["splits"]["val"]["image_size"] == 40
    assert image.stat().st_mtime_ns == stamp  # same images: only the .beton files were rewritten
    assert again.info["fingerprint"] != first.info["fingerprint"]

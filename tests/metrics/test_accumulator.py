"""Accumulator and protocols: hand-checkable batches, top-k logic, exact merging, tau rules."""

import numpy as np
import pytest

from scm_ray.metrics import LocalizationAccumulator, thresholds_for
from scm_ray.metrics.boxes import boxes_from_scoremap

SIZE = 32


def blob_map(x0, y0, x1, y1, value=1.0):
    """A map with one flat blob covering pixels x0..x1 - 1, y0..y1 - 1."""
    m = np.zeros((SIZE, SIZE))
    m[y0:y1, x0:x1] = value
    return m


def predicted_box(m):
    return boxes_from_scoremap(m, [0.5])[0][0]


def make_acc(**kw):
    kw.setdefault("thresholds", thresholds_for(0.1))
    return LocalizationAccumulator(**kw)


def test_perfect_localisation():
    maps = np.stack([blob_map(4, 4, 12, 12), blob_map(10, 2, 30, 9)])  # (2, H, W)
    gt = [predicted_box(m)[None] for m in maps]  # the boxes the maps give: IoU 1
    acc = make_acc()
    acc.update(np.array([3, 7]), np.array([[3, 1, 2, 4, 5], [7, 0, 1, 2, 3]]), gt, maps, maps)
    r = acc.compute("wsol")
    assert (r.top1_cls, r.topk_cls) == (100.0, 100.0)
    assert r.gt_known.value == r.top1_loc.value == r.topk_loc.value == r.maxboxacc.value == 100.0
    assert r.maxboxacc_v2 == 100.0
    np.testing.assert_array_equal(r.curves["gt_known"], 100.0)  # a flat blob: every tau < 1 works
    assert r.gt_known.tau == 0.0  # first tau reaching the maximum


def test_zero_localisation():
    maps = blob_map(0, 0, 6, 6)[None]
    acc = make_acc()
    acc.update(np.array([1]), np.array([[1, 2, 3, 4, 5]]), [np.array([[20, 20, 31, 31]])], maps, maps)
    r = acc.compute("wsol")
    assert r.top1_cls == 100.0
    assert r.gt_known.value == r.top1_loc.value == r.topk_loc.value == r.maxboxacc_v2 == 0.0


def test_any_of_several_gt_boxes_counts():
    m = blob_map(4, 4, 12, 12)
    near = predicted_box(m)
    for gt in ([[20, 20, 30, 30], near.tolist()], [near.tolist(), [0, 20, 5, 30]]):
        acc = make_acc(paper=False)
        acc.update(np.array([0]), np.array([[0, 1, 2, 3, 4]]), [np.array(gt)], m[None])
        assert acc.compute().gt_known.value == 100.0


def test_topk_logic():
    m = blob_map(4, 4, 12, 12)
    good = predicted_box(m)[None]
    maps = np.stack([m, m, m])
    labels = np.array([5, 5, 5])
    topk = np.array(
        [
            [5, 0, 1, 2, 3],  # right at rank 1
            [0, 1, 5, 2, 3],  # right at rank 3: top-5 only
            [0, 1, 2, 3, 4],  # wrong
        ]
    )
    acc = make_acc(paper=False)
    acc.update(labels, topk, [good] * 3, maps)
    r = acc.compute()
    assert r.top1_cls == pytest.approx(100 / 3)
    assert r.topk_cls == pytest.approx(200 / 3)
    assert r.gt_known.value == 100.0  # the ground-truth map localises all three
    assert r.top1_loc.value == pytest.approx(100 / 3)
    assert r.topk_loc.value == pytest.approx(200 / 3)
    assert r.summary()["topk_loc"] == r.topk_loc.value and r.k == 5


def test_paper_protocol_reads_the_top1_predicted_map():
    gt_map = blob_map(0, 0, 6, 6)  # points away from the object
    pred_map = blob_map(20, 20, 30, 30)  # the wrongly predicted class's map hits it
    gt = [predicted_box(pred_map)[None]]
    acc = make_acc()
    acc.update(np.array([2]), np.array([[9, 2, 1, 0, 3]]), gt, gt_map[None], pred_map[None])
    wsol, paper = acc.compute("wsol"), acc.compute("paper")
    assert wsol.gt_known.value == 0.0
    assert paper.gt_known.value == 100.0 and paper.maxboxacc.value == 100.0
    assert paper.top1_loc.value == 0.0  # top-1 is wrong either way
    assert paper.protocol == "paper" and "top-1 predicted" in paper.label
    assert wsol.tau_source == paper.tau_source == "this split"


def graded_map():
    """Nested square rings: the box shrinks as tau grows."""
    m = np.zeros((SIZE, SIZE))
    for k, v in enumerate(np.linspace(0.1, 1.0, 10)):
        m[k : SIZE - k, k : SIZE - k] = v
    return m


def test_heldout_taus_are_applied_unchanged():
    m = graded_map()
    taus = thresholds_for(0.1)
    boxes = boxes_from_scoremap(m, taus)
    held, test = make_acc(paper=False), make_acc(paper=False)
    held.update(np.array([0]), np.array([[0, 1, 2, 3, 4]]), [boxes[6]], m[None])  # best near tau 0.6
    test.update(np.array([0]), np.array([[0, 1, 2, 3, 4]]), [boxes[2]], m[None])  # best near tau 0.2
    held_r = held.compute("wsol")
    own = test.compute("wsol")
    applied = test.compute("wsol", thresholds_from=held_r)
    assert held_r.gt_known.tau != own.gt_known.tau
    assert applied.tau_source == "held-out"
    assert applied.gt_known.tau == held_r.gt_known.tau
    i = int(np.flatnonzero(np.isclose(taus, held_r.gt_known.tau))[0])
    assert applied.gt_known.value == own.curves["gt_known"][i]
    fixed = test.compute("wsol", fixed_threshold=0.3)
    assert fixed.tau_source == "fixed" and fixed.gt_known.tau == pytest.approx(0.3)
    with pytest.raises(ValueError, match="paper"):
        test.compute("paper", thresholds_from=held_r)
    with pytest.raises(ValueError, match="not among"):
        test.compute("wsol", fixed_threshold=0.333)


def random_batches(n_batches, seed):
    """Batches of 3: a blob near the first ground-truth box over noise, random predictions."""
    rng = np.random.default_rng(seed)

    def noisy_blob_map(box):
        x0, y0, x1, y1 = (int(v) + int(rng.integers(-3, 4)) for v in box)
        m = 0.7 * blob_map(max(x0, 0), max(y0, 0), max(x1, 1), max(y1, 1)) + 0.3 * rng.random((SIZE, SIZE))
        return m / m.max()

    for _ in range(n_batches):
        boxes = []
        for _ in range(3):
            xs = np.sort(rng.integers(0, SIZE, (int(rng.integers(1, 3)), 2)), axis=1)  # (m, 2) x0 <= x1
            ys = np.sort(rng.integers(0, SIZE, xs.shape), axis=1)
            boxes.append(np.stack([xs[:, 0], ys[:, 0], xs[:, 1], ys[:, 1]], axis=1))  # (m, 4)
        maps = np.stack([noisy_blob_map(b[0]) for b in boxes])  # (B, H, W)
        top1 = np.stack([noisy_blob_map(b[-1]) for b in boxes])
        labels = rng.integers(0, 6, 3)
        topk = np.stack([rng.permutation(8)[:5] for _ in range(3)])
        yield labels, topk, boxes, maps, top1


def test_merge_equals_one_pass_and_state_round_trips():
    batches = list(random_batches(4, seed=0))
    whole, left, right = make_acc(), make_acc(), make_acc()
    for i, batch in enumerate(batches):
        whole.update(*batch)
        (left if i % 2 else right).update(*batch)
    merged = make_acc().merge(left).merge(right)
    assert 0 < whole.gt_known.sum() and 0 < whole.v2.sum() and 0 < whole.paper_gt_known.sum()
    np.testing.assert_array_equal(merged.counts_vector(), whole.counts_vector())
    assert merged.compute("paper").summary() == whole.compute("paper").summary()
    # all-reduce style: sum the vectors, load them into a fresh accumulator
    summed = make_acc()
    summed.load_counts_vector(left.counts_vector() + right.counts_vector())
    np.testing.assert_array_equal(summed.counts_vector(), whole.counts_vector())
    again = LocalizationAccumulator.from_state_dict(whole.state_dict())
    assert again.compute().summary() == whole.compute().summary()


def test_merge_refuses_other_configurations():
    with pytest.raises(ValueError, match="thresholds"):
        make_acc().merge(make_acc(thresholds=thresholds_for(0.2)))
    with pytest.raises(ValueError, match="paper"):
        make_acc().merge(make_acc(paper=False))


def test_update_validation():
    acc = make_acc()
    m = blob_map(4, 4, 12, 12)[None]
    labels, topk, box = np.array([0]), np.array([[0, 1, 2, 3, 4]]), [np.array([[4, 4, 12, 12]])]
    with pytest.raises(ValueError, match="top1_maps"):
        acc.update(labels, topk, box, m)
    with pytest.raises(ValueError, match="empty"):
        acc.update(labels, topk, [np.zeros((0, 4))], m, m)
    with pytest.raises(ValueError, match="x0 <= x1"):
        acc.update(labels, topk, [np.array([[9, 4, 2, 12]])], m, m)
    with pytest.raises(ValueError, match="NaN"):
        acc.update(labels, topk, box, np.full_like(m, np.nan), m)
    with pytest.raises(ValueError, match="float32 or float64"):
        acc.update(labels, topk, box, m.astype(np.uint8), m)
    with pytest.raises(ValueError, match="topk_classes"):
        acc.update(labels, topk[:, :3], box, m, m)
    with pytest.raises(ValueError, match="gt_maps"):
        acc.update(labels, topk, box, m[0], m)
    with pytest.raises(ValueError, match="no images"):
        acc.compute()
    with pytest.raises(ValueError, match="protocol"):
        acc.update(labels, topk, box, m, m) or acc.compute("cvpr")
    assert acc.n_images == 1  # the failed updates added nothing


def test_metric_set_names_the_columns_results_hold():
    from scm_ray.metrics import MetricSet

    wsol = MetricSet.for_dataset("wsol", [0.3, 0.5, 0.7], num_classes=4)
    assert wsol.k == 4 and not wsol.needs_top1_maps
    assert MetricSet.for_dataset("paper", [0.5], num_classes=200).k == 5
    assert MetricSet.for_dataset("paper", [0.5], num_classes=200).needs_top1_maps
    acc = LocalizationAccumulator.for_metrics(wsol, np.arange(0, 1, 0.25))
    assert acc.paper is False  # the "wsol" protocol never extracts the top-1 maps' boxes
    rng = np.random.default_rng(0)
    maps = rng.random((3, 8, 8))
    acc.update(np.array([0, 1, 2]), np.array([[0, 1, 2, 3]] * 3), [np.array([[1, 1, 5, 5]])] * 3, maps)
    result = acc.compute("wsol")
    row = result.summary("test/")
    assert list(row) == wsol.columns("test/") and all(k.startswith("test/") for k in row)
    assert isinstance(row["test/num_images"], int) and row["test/num_images"] == 3
    assert len(set(wsol.columns())) == len(wsol.columns())  # no name twice
    assert wsol.epoch_row(result) == {**result.summary("val/"), "k": 4} and list(wsol.epoch_row(result)) == wsol.epoch_columns()
    with pytest.raises(ValueError, match="paper"):  # a "wsol" accumulator has no paper counts
        acc.compute("paper")

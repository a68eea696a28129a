"""The overlay figure's choice of images: every class in turn, a hit then a miss (pure numpy
maps; the figure itself is rendered, and checked to be a PNG)."""

import numpy as np

from scm_ray.evaluate.plots import OverlaySamples, overlays_png, pick_panels

SIZE = 32
GT = np.array([[8.0, 8.0, 20.0, 20.0]])


def _map(hit: bool) -> np.ndarray:
    """A square blob on the ground-truth box (a hit at tau 0.5) or in the opposite corner."""
    cam = np.zeros((SIZE, SIZE), np.float32)
    if hit:
        cam[8:21, 8:21] = 1.0
    else:
        cam[24:30, 24:30] = 1.0
    return cam


def _samples(panels: int) -> OverlaySamples:
    samples = OverlaySamples(panels=panels, per_class=4)
    labels = np.repeat(np.arange(4), 6)  # a class-sorted split, as many are
    for i in samples.wanted(labels):
        hit = i % 2 == 0
        samples.images.append(np.zeros((SIZE, SIZE, 3), np.uint8))
        samples.maps.append(_map(hit))
        samples.labels.append(int(labels[i]))
        samples.predicted.append(int(labels[i]))
        samples.gt_boxes.append(GT)
    return samples


def test_candidates_are_capped_per_class_and_in_all():
    samples = _samples(panels=8)
    assert samples.labels == [0] * 4 + [1] * 4 + [2] * 4 + [3] * 4
    assert OverlaySamples(panels=2, per_class=4).wanted(np.zeros(20, int)) == list(range(4))
    assert len(OverlaySamples(panels=1, per_class=4).wanted(np.arange(20))) == 4  # capacity 4


def test_panels_cover_every_class_with_hits_and_misses():
    samples = _samples(panels=8)
    chosen = pick_panels(samples, tau=0.5)
    classes = [samples.labels[i] for i, _box, _iou in chosen]
    hits = [iou >= 0.5 for _i, _box, iou in chosen]
    assert classes == [0, 1, 2, 3, 0, 1, 2, 3]
    assert hits == [True] * 4 + [False] * 4
    png = overlays_png(samples, 0.5, ["a", "b", "c", "d"], "title")
    assert png[:8] == b"\x89PNG\r\n\x1a\n"

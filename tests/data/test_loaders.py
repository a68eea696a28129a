"""FFCV loaders: batch contract, augmentation geometry, sharding (training and evaluation), and
the FFCV 1.0.2 pitfalls of docs/data-formats.md."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from scm_ray.data import loaders as L
from scm_ray.data.records import RecordTable

# Dropping an FFCV Loader makes numba's finalizers print harmless KeyErrors.
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


# ----------------------------------------------------------------------------------------------
# Augmentation geometry (pure Python: the function FFCV compiles with numba)
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("h, w", [(256, 256), (300, 500), (500, 300), (64, 64), (48, 97), (1000, 40)])
def test_crop_window_matches_resize_then_crop(h, w):
    np.random.seed(0)
    R, C = 256, 224
    short = min(h, w)
    for _ in range(200):
        y0, x0, ch, cw = L.resize_random_crop(h, w, R, C, False)
        assert 0 <= y0 and y0 + ch <= h and 0 <= x0 and x0 + cw <= w
        # The window is crop/resize of the short side, in original pixels (+-1 for rounding).
        assert abs(min(ch, cw) - C * short / R) <= 1.01


@pytest.mark.parametrize("h, w", [(375, 500), (500, 333), (64, 64)])
def test_square_window_is_the_crop_of_both_sides_resized(h, w):
    """Resize((256, 256)) then a 224 crop keeps 224/256 of EACH side, whatever the aspect."""
    np.random.seed(2)
    windows = np.array([L.resize_random_crop(h, w, 256, 224, True) for _ in range(500)])
    assert np.all(np.abs(windows[:, 2] - 224 * h / 256) <= 1) and np.all(np.abs(windows[:, 3] - 224 * w / 256) <= 1)
    assert np.all(windows[:, 0] + windows[:, 2] <= h) and np.all(windows[:, 1] + windows[:, 3] <= w)
    assert windows[:, 0].min() == 0 and windows[:, 0].max() == h - windows[:, 2].max()


def test_crop_window_offsets_cover_the_range():
    np.random.seed(1)
    windows = np.array([L.resize_random_crop(256, 512, 256, 224, False) for _ in range(2000)])
    assert set(windows[:, 2]) == {224} and set(windows[:, 3]) == {224}  # already at resize size: a pure crop
    assert windows[:, 0].min() == 0 and windows[:, 0].max() == 32
    assert windows[:, 1].min() == 0 and windows[:, 1].max() == 512 * 256 // 256 - 224


# ----------------------------------------------------------------------------------------------
# Training loader
# ----------------------------------------------------------------------------------------------


@pytest.mark.slow  # iterates FFCV loaders: numba compiles their pipelines
def test_train_batches_and_epochs(train_loader_48, synthetic_dir):
    loader = train_loader_48
    assert len(loader) == 40 // 8 and loader.num_samples == 40
    labels_by_epoch = []
    for _ in range(2):
        seen = []
        for images, labels in loader:
            assert images.shape == (8, 3, 48, 48) and images.dtype == torch.float32
            assert labels.shape == (8,) and labels.dtype == torch.int64
            assert torch.isfinite(images).all() and -2.2 < images.min() and images.max() < 2.7  # normalised
            seen += labels.tolist()
        labels_by_epoch.append(seen)
    expected = sorted(r.label for r in RecordTable.read(synthetic_dir).rows("train"))
    assert sorted(labels_by_epoch[0]) == expected == sorted(labels_by_epoch[1])  # every sample once
    assert labels_by_epoch[0] != labels_by_epoch[1]  # epochs advance the shuffle
    assert loader.epoch == 2


@pytest.mark.slow  # iterates FFCV loaders: numba compiles their pipelines
def test_train_order_is_seeded_and_resumable(synthetic_dir):
    make = lambda seed: L.train_loader(synthetic_dir / "train.beton", 8, 1, 56, 48, seed)  # noqa: E731
    a, b, c = make(5), make(5), make(6)
    order = lambda ld: ld.loader.next_traversal_order().tolist()  # noqa: E731
    assert order(a) == order(b) != order(c)
    a.set_epoch(3)
    b.loader.next_epoch = 3
    assert order(a) == order(b) and a.epoch == 3


@pytest.mark.slow  # iterates FFCV loaders: numba compiles their pipelines
def test_same_seed_same_batches_augmentation_included(train_loader_48, synthetic_dir):
    """Crops and flips are reseeded per image from (seed, batch, sample), so a run repeats
    exactly whatever the thread count; another seed augments differently."""
    twin = L.train_loader(synthetic_dir / "train.beton", batch_size=8, num_workers=1, resize_size=56,
                          crop_size=48, seed=11)
    train_loader_48.set_epoch(4)
    twin.set_epoch(4)
    first = [(x.clone(), y.clone()) for x, y in train_loader_48]
    second = [(x.clone(), y.clone()) for x, y in twin]
    for (xa, ya), (xb, yb) in zip(first, second):
        assert torch.equal(ya, yb) and torch.equal(xa, xb)
    again = [x.clone() for x, _ in train_loader_48]  # epoch 5: new order and new augmentation
    assert not torch.equal(again[0], first[0][0])


@pytest.mark.slow  # iterates FFCV loaders: numba compiles their pipelines
def test_shards_without_a_process_group(synthetic_dir):
    """world_size > 1, distributed=False: fixed disjoint shards of equal length."""
    shards = [L.train_loader(synthetic_dir / "train.beton", 4, 1, 56, 48, 0, rank, 3) for rank in range(3)]
    orders = [set(s.loader.next_traversal_order().tolist()) for s in shards]
    assert all(len(o) == 40 // 3 for o in orders) and len(set().union(*orders)) == 3 * (40 // 3)
    assert len({len(s) for s in shards}) == 1  # every rank runs the same number of steps


def test_distributed_needs_the_process_group(synthetic_dir):
    assert not torch.distributed.is_initialized()
    with pytest.raises(RuntimeError, match="initialised"):
        L.train_loader(synthetic_dir / "train.beton", 8, 1, 56, 48, 0, rank=0, world_size=2, distributed=True)


@pytest.mark.slow  # iterates FFCV loaders: numba compiles their pipelines
def test_distributed_pads_ranks_with_repeats(synthetic_dir, monkeypatch):
    """FFCV's distributed=True (DistributedSampler): each rank its shard, reshuffled per epoch,
    same seed everywhere -- and padded with repeated samples, which is why evaluation never
    uses it. The process group is faked: only rank and world size are read."""
    world = 3
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda group=None: world)
    orders = []
    for rank in range(world):
        monkeypatch.setattr(torch.distributed, "get_rank", lambda group=None, r=rank: r)
        ld = L.train_loader(synthetic_dir / "train.beton", 2, 1, 56, 48, 9, rank, world, distributed=True)
        assert ld.num_samples == math.ceil(40 / world) and len(ld) == 14 // 2
        orders.append([ld.loader.next_traversal_order().tolist() for _ in range(1)][0])
    flat = sum(orders, [])
    assert len(flat) == 42 and set(flat) == set(range(40))  # 2 padded repeats
    assert len(flat) - len(set(flat)) == 2


@pytest.mark.slow  # iterates FFCV loaders: numba compiles their pipelines
@pytest.mark.timeout(60)
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_dying_pipeline_thread_raises_instead_of_hanging(train_loader_48, monkeypatch):
    from ffcv.loader.epoch_iterator import EpochIterator

    def broken(self):
        raise OSError("simulated failure inside the pipeline thread")

    monkeypatch.setattr(EpochIterator, "run", broken)
    with pytest.raises(RuntimeError, match="pipeline thread stopped"):
        next(iter(train_loader_48))


def test_worker_count_must_be_explicit(synthetic_dir):
    with pytest.raises(ValueError, match="num_workers"):
        L.train_loader(synthetic_dir / "train.beton", 8, -1, 56, 48, 0)
    with pytest.raises(ValueError, match="crop_size"):
        L.train_loader(synthetic_dir / "train.beton", 8, 1, 40, 48, 0)
    with pytest.raises(FileNotFoundError, match="prepare"):
        L.train_loader(synthetic_dir / "nope.beton", 8, 1, 56, 48, 0)


def test_cpu_pipeline_normalises_before_to_tensor():
    """FFCV 1.0.2: a jitted op after ToTensor loops code generation forever on CPU."""
    from ffcv.transforms import NormalizeImage, ToDevice, ToTensor

    ops = L._image_ops(L._decoder(48, 56, True), torch.device("cpu"), True, flip=True)
    kinds = [type(op) for op in ops]
    assert kinds.index(NormalizeImage) < kinds.index(ToTensor) and ToDevice not in kinds
    gpu = [type(op) for op in L._image_ops(L._decoder(48, 56, True), torch.device("cuda:0"), True, flip=True)]
    assert NormalizeImage not in gpu and gpu.index(ToTensor) < gpu.index(ToDevice)  # uint8 crosses to the GPU


# ----------------------------------------------------------------------------------------------
# Evaluation loader
# ----------------------------------------------------------------------------------------------


@pytest.mark.slow  # iterates FFCV loaders: numba compiles their pipelines
def test_eval_shards_are_disjoint_cover_and_match_records(synthetic_dir):
    rows = RecordTable.read(synthetic_dir).rows("val")
    seen = []
    for rank in range(2):
        loader = L.eval_loader(synthetic_dir / "val.beton", 4, 1, rank=rank, world_size=2, channels_last=False)
        assert loader.num_samples == 6 and len(loader) == 2
        for images, labels, boxes, count, index in loader:
            assert images.shape[1:] == (3, 48, 48) and images.is_contiguous()
            assert boxes.shape[1:] == (1, 4) and boxes.dtype == torch.float32
            for i, lab, b, n in zip(index.tolist(), labels.tolist(), boxes, count.tolist()):
                assert lab == rows[i].label and n == len(rows[i].boxes)
                np.testing.assert_array_equal(b[:n].numpy(), rows[i].boxes)
            seen += index.tolist()
    assert seen == list(range(12))  # sequential, each sample exactly once, no padding


@pytest.mark.parametrize("n, world", [(12, 2), (10, 3), (12, 5), (3, 8)])
def test_eval_shard_arithmetic(n, world):
    shards = [L.eval_shard(n, r, world).tolist() for r in range(world)]
    assert sum(shards, []) == list(range(n))
    assert max(map(len, shards)) - min(map(len, shards)) <= 1


@pytest.mark.slow  # iterates FFCV loaders: numba compiles their pipelines
def test_eval_more_ranks_than_samples_gives_empty_shards(synthetic_dir):
    loader = L.eval_loader(synthetic_dir / "test.beton", 4, 1, rank=15, world_size=16)
    assert len(loader) == 0 and list(loader) == [] and loader.num_samples == 0


@pytest.mark.slow  # iterates FFCV loaders: numba compiles their pipelines
def test_eval_batches_reuse_image_buffers_but_not_annotations(synthetic_dir):
    """FFCV hands out reused buffers: images kept past a few batches change underneath (unless
    cloned), the annotation tensors of an EvalBatch are copies and stay valid."""
    def first_and_all(clone: bool):
        loader = L.eval_loader(synthetic_dir / "val.beton", 2, 1, batches_ahead=1, clone_images=clone)
        batches = list(loader)  # 6 batches, 3 buffer slots
        return batches, loader

    batches, _ = first_and_all(False)
    assert len(batches) == 6
    assert torch.equal(batches[0].images, batches[3].images)  # same slot: overwritten
    assert batches[0].index.tolist() == [0, 1] and batches[3].index.tolist() == [6, 7]
    cloned, _ = first_and_all(True)
    assert not torch.equal(cloned[0].images, cloned[3].images)


def test_device_normalisation_matches_imagenet_statistics():
    """The GPU path's normaliser (device-agnostic, so checked on CPU tensors here)."""
    images = torch.randint(0, 256, (2, 5, 6, 3), dtype=torch.uint8).permute(0, 3, 1, 2)  # channels_last view
    expected = (images.float() / 255 - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor(
        [0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    out = L._DeviceNormalize(torch.device("cpu"), channels_last=False)(images)
    torch.testing.assert_close(out, expected)
    assert out.is_contiguous()
    assert L._DeviceNormalize(torch.device("cpu"))(images).is_contiguous(memory_format=torch.channels_last)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_pipelines(synthetic_dir):
    train = L.train_loader(synthetic_dir / "train.beton", 8, 2, 56, 48, 0, device="cuda:0")
    for images, labels in train:
        assert images.is_cuda and labels.is_cuda and images.dtype == torch.float32 and images.shape == (8, 3, 48, 48)
        assert -2.2 < images.min().item() and images.max().item() < 2.7
    seen = []
    for batch in L.eval_loader(synthetic_dir / "val.beton", 5, 2, device="cuda:0", channels_last=False):
        assert batch.images.is_cuda and batch.images.is_contiguous() and batch.boxes.is_cuda
        seen += batch.index.tolist()
    assert seen == list(range(12))

"""Pure pieces of training: the lr schedule and dataset staging from a URI."""

import threading
from pathlib import Path

import pytest

from scm_ray.config import TrainJobConfig, load_config
from scm_ray.data.staging import DONE_MARKER, stage_dataset
from scm_ray.train.schedule import lr_multiplier, lr_per_epoch

CONFIGS = Path(__file__).resolve().parents[2] / "jobs" / "configs"

# The released SCM code multiplies the lr by 0.1 at the start of every 1-based epoch divisible
# by one of its LR steps: ILSVRC steps [10, 12] over 20 epochs, CUB [30] over 30.
RELEASED_LR = {
    "train_imagenet.yaml": [1e-6] * 9 + [1e-7] * 2 + [1e-8] * 8 + [1e-9],
    "train_cub.yaml": [5e-5] * 29 + [5e-6],
}


def test_step_milestone_is_the_1_based_epoch_whose_start_decays():
    kw = dict(steps_per_epoch=10, epochs=30, schedule="step", milestones=[30], gamma=0.1)
    assert lr_multiplier(0, **kw) == 1.0 and lr_multiplier(289, **kw) == 1.0
    assert lr_multiplier(290, **kw) == pytest.approx(0.1)  # first step of epoch 30
    kw["milestones"] = [2, 4]
    assert [lr_multiplier(s, **kw) for s in (9, 10, 29, 30)] == pytest.approx([1, 0.1, 0.1, 0.01])


@pytest.mark.parametrize("name", sorted(RELEASED_LR))
def test_shipped_recipes_follow_the_released_lr_per_epoch(name):
    cfg = load_config(TrainJobConfig, CONFIGS / name)
    o = cfg.optim
    got = lr_per_epoch(o.lr, cfg.train.epochs, steps_per_epoch=7, schedule=o.schedule,
                       milestones=o.step_milestones, gamma=o.step_gamma,
                       warmup_epochs=o.warmup_epochs, min_lr_ratio=o.min_lr / o.lr)
    assert got == pytest.approx(RELEASED_LR[name], rel=1e-9)


def test_imagenet_recipe_global_batch_is_512():
    cfg = load_config(TrainJobConfig, CONFIGS / "train_imagenet.yaml")
    assert cfg.ray.num_workers * cfg.data.batch_size == 512


def test_warmup_then_cosine_to_min_lr():
    kw = dict(steps_per_epoch=10, epochs=5, schedule="cosine", warmup_epochs=1, min_lr_ratio=0.1)
    assert lr_multiplier(0, **kw) == pytest.approx(0.1)
    assert lr_multiplier(9, **kw) == pytest.approx(1.0)
    assert lr_multiplier(10, **kw) == pytest.approx(1.0)
    assert lr_multiplier(30, **kw) == pytest.approx(0.1 + 0.9 * 0.5)
    assert lr_multiplier(50, **kw) == pytest.approx(0.1)


def test_local_root_is_used_in_place(tmp_path):
    assert stage_dataset(str(tmp_path)) == tmp_path
    with pytest.raises(FileNotFoundError, match="data.root: dataset folder not found"):
        stage_dataset(str(tmp_path / "missing"))


def test_uri_is_staged_once_for_concurrent_workers(tmp_path):
    source = tmp_path / "src"
    (source / "sub").mkdir(parents=True)
    (source / "train.beton").write_bytes(b"x" * 1000)
    (source / "sub" / "records.parquet").write_bytes(b"y" * 10)
    cache = tmp_path / "cache"
    results = []
    threads = [threading.Thread(target=lambda: results.append(stage_dataset(f"file://{source}", cache)))
               for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(results)) == 1
    staged = results[0]
    assert (staged / "train.beton").read_bytes() == b"x" * 1000
    assert (staged / "sub" / "records.parquet").read_bytes() == b"y" * 10
    assert (staged / DONE_MARKER).exists()
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        stage_dataset(f"file://{tmp_path}/nope", cache)

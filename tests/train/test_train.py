"""Distributed training on a real local Ray with real FFCV files and real checkpoints on disk."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

ray = pytest.importorskip("ray")

from scm_ray.checkpoint import load_checkpoint, model_from_checkpoint  # noqa: E402
from scm_ray.config import ConfigError, TrainJobConfig, load_config  # noqa: E402
from scm_ray.train.history import read_history  # noqa: E402
from scm_ray.train.trainer import run_training  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.ray]


def _cfg(dataset: Path, storage: Path, name: str, *extra: str) -> TrainJobConfig:
    overrides = [
        f"data.root={dataset}", f"ray.storage_path={storage}", f"ray.name={name}",
        "model.embed_dim=48", "model.depth=2", "model.num_heads=3",
        "scm.num_blocks=2", "scm.iterations=[4, 2]", "scm.start_epoch=0",
        "data.batch_size=16", "data.eval_batch_size=32",
        "train.epochs=2", "optim.schedule=constant", "optim.warmup_epochs=0", "optim.lr=2e-3",
        "ray.num_workers=2", *extra,
    ]
    return load_config(TrainJobConfig, Path("jobs/configs/train_synthetic.yaml"), overrides)


def _checkpoints(run_dir: str) -> list[Path]:
    return sorted(Path(run_dir).glob("checkpoint_epoch*"))


def test_two_workers_train_checkpoint_and_reload(local_ray, synthetic_dataset, tmp_path):
    cfg = _cfg(synthetic_dataset, tmp_path, "two-workers")
    outcome = run_training(cfg)
    assert outcome.error is None and outcome.epochs_done == 2
    history = read_history(outcome.run_dir)
    assert [row["epoch"] for row in history] == [1, 2]
    assert history[1]["train/loss"] < history[0]["train/loss"]
    for key in ("val/gt_known", "val/top1_cls", "val/maxboxacc_v2", "train/images_per_s",
                "scm/lambda_0", "scm/beta_1", "lr"):
        assert key in history[-1], key
    assert (Path(outcome.run_dir) / "summary.txt").read_text().startswith("run folder")
    # the split was covered exactly once across the two ranks
    assert history[-1]["val/num_images"] == 64

    checkpoints = _checkpoints(outcome.run_dir)
    assert [c.name for c in checkpoints] == ["checkpoint_epoch0001", "checkpoint_epoch0002"]
    data = load_checkpoint(checkpoints[-1])
    assert data.epoch == 2 and data.config["scm"]["num_blocks"] == 2
    assert data.metrics["val/gt_known"] == history[-1]["val/gt_known"]
    model = model_from_checkpoint(checkpoints[-1]).eval()
    again = model_from_checkpoint(checkpoints[-1]).eval()
    images = torch.randn(4, 3, 64, 64)
    assert torch.equal(model(images), again(images))
    assert model.scm is None


def test_resume_continues_without_redoing_epochs(local_ray, synthetic_dataset, tmp_path):
    first = run_training(_cfg(synthetic_dataset, tmp_path, "resume", "train.epochs=1"))
    assert first.epochs_done == 1
    epoch1 = read_history(first.run_dir)[0]
    second = run_training(_cfg(synthetic_dataset, tmp_path, "resume", "train.epochs=2"))
    assert second.epochs_done == 2
    history = read_history(second.run_dir)
    assert [row["epoch"] for row in history] == [1, 2]
    assert history[0] == epoch1  # epoch 1 was not redone
    assert history[1]["global_step"] == 2 * epoch1["global_step"]
    # the same name with other settings is refused, naming what changed, before anything runs
    with pytest.raises(ConfigError, match=r"optim.lr: 0.002 -> 0.001") as info:
        run_training(_cfg(synthetic_dataset, tmp_path, "resume", "train.epochs=3", "optim.lr=1e-3"))
    assert info.value.key == "ray.name" and read_history(second.run_dir) == history
    # and epoch 2 saw epoch 2's data: the same numbers as a run that was never interrupted
    straight = read_history(run_training(_cfg(synthetic_dataset, tmp_path, "straight")).run_dir)[1]
    compared = [k for k in straight if k.startswith("val/") or k in ("train/loss", "lr")]
    assert "train/loss" in compared and "val/gt_known" in compared
    assert {k: history[1][k] for k in compared} == {k: straight[k] for k in compared}


def test_worker_failure_restarts_from_latest_checkpoint(local_ray, synthetic_dataset, tmp_path):
    steps_per_epoch = 128 // (16 * 2)
    cfg = _cfg(synthetic_dataset, tmp_path, "faulty", "ray.max_failures=1",
               f"train.inject_failure_at_step={steps_per_epoch + 1}")  # mid epoch 2
    outcome = run_training(cfg)
    assert outcome.error is None and outcome.epochs_done == 2
    assert outcome.failures == 1
    assert [row["epoch"] for row in read_history(outcome.run_dir)] == [1, 2]
    assert "worker failures 1" in (Path(outcome.run_dir) / "summary.txt").read_text()


def test_a_run_that_fails_for_good_still_says_what_it_finished(local_ray, synthetic_dataset, tmp_path):
    steps_per_epoch = 128 // (16 * 2)
    cfg = _cfg(synthetic_dataset, tmp_path, "broken", "ray.max_failures=0",
               f"train.inject_failure_at_step={steps_per_epoch + 1}")  # mid epoch 2, no restart
    outcome = run_training(cfg)
    assert outcome.error is not None and "injected failure" in outcome.error
    assert outcome.epochs_done == 1 and outcome.metrics["epoch"] == 1
    assert outcome.latest_checkpoint.endswith("checkpoint_epoch0001")
    summary = (Path(outcome.run_dir) / "summary.txt").read_text()
    assert "epochs          1 / 2" in summary and "injected failure" in summary


def test_dataset_given_as_file_uri_is_staged(local_ray, synthetic_dataset, tmp_path):
    cache = tmp_path / "cache"
    cfg = _cfg(synthetic_dataset, tmp_path, "uri", "train.epochs=1",
               f"data.root=file://{synthetic_dataset}", f"data.cache_dir={cache}")
    outcome = run_training(cfg)
    assert outcome.epochs_done == 1
    staged = [p for p in cache.iterdir() if p.is_dir()]
    assert len(staged) == 1 and (staged[0] / "train.beton").is_file()  # one copy for two workers


@pytest.mark.parametrize(
    "override,key",
    [
        ("ray.num_workers=8", "ray"),
        ("data.val_split=nope", "data.val_split"),
        ("model.num_classes=7", "data.root"),  # the dataset has 4
        ("ray.checkpoint_metric=val/gt-known", "ray.checkpoint_metric"),  # typo: not reported
        ("model.name=swin_tiny_patch4_window7_224", "model.name"),  # no CLS token to wrap
        ("model.img_size=96 data.resize_size=104 data.crop_size=96", "data.root"),  # val stored at 64 px
    ],
)
def test_bad_config_fails_before_any_worker(local_ray, synthetic_dataset, tmp_path, override, key):
    cfg = _cfg(synthetic_dataset, tmp_path, "bad", *override.split())
    with pytest.raises(ConfigError) as info:
        run_training(cfg)
    assert info.value.key == key
    assert not (tmp_path / "bad").exists()  # nothing started, nothing written


def test_unknown_key_fails_in_the_cli(tmp_path, capsys):
    from scm_ray.cli import main

    assert main(["train", "--config", "jobs/configs/train_synthetic.yaml", "--set", "scm.nope=1"]) == 2
    assert "scm.nope: unknown key" in capsys.readouterr().err


def test_two_nodes(synthetic_dataset, tmp_path):
    """A local two-node cluster: each worker on its own node, one storage path both reach."""
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    try:
        for _ in range(2):
            cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address)
        outcome = run_training(_cfg(synthetic_dataset, tmp_path, "two-nodes", "train.epochs=1"))
        assert outcome.epochs_done == 1
        workers = json.loads((Path(outcome.run_dir) / "workers.json").read_text())
        assert len({w["node_id"] for w in workers.values()}) == 2
    finally:
        ray.shutdown()
        cluster.shutdown()

"""The Ray Train adapter: DDP over two real Ray workers, restarts after a failed worker, several
nodes, with real FFCV files and real checkpoints on disk. What the engine does on its own
(resume, checkpoints kept, the run folder) is tested in process, without Ray: test_engine.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

ray = pytest.importorskip("ray")

from scm_ray.checkpoint import load_checkpoint, model_from_checkpoint  # noqa: E402
from scm_ray.config import ConfigError  # noqa: E402
from scm_ray.train.history import read_history  # noqa: E402
from scm_ray.train.trainer import run_training  # noqa: E402
from tests.train.faults import failing_worker  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.ray]


@pytest.fixture
def _cfg(small_cfg):
    """Two Ray Train workers."""
    return lambda name, *extra: small_cfg(name, "ray.num_workers=2", *extra)


def _checkpoints(run_dir: str) -> list[Path]:
    return sorted(Path(run_dir).glob("checkpoint_epoch*"))


def test_two_workers_train_checkpoint_and_reload(local_ray, _cfg, tmp_path):
    cfg = _cfg("two-workers")
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
    assert history[-1]["val/num_images"] == 64 and history[-1]["k"] == 4
    import pyarrow.parquet as pq

    from scm_ray.results_schema import check_columns

    assert check_columns("metrics.parquet", pq.read_schema(Path(outcome.run_dir) / "metrics.parquet")) == []

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


def test_worker_failure_restarts_from_latest_checkpoint(local_ray, _cfg, tmp_path):
    steps_per_epoch = 128 // (16 * 2)
    cfg = _cfg("faulty", "ray.max_failures=1")
    worker = failing_worker(steps_per_epoch + 1, tmp_path / "failed-once")  # mid epoch 2
    outcome = run_training(cfg, train_fn=worker)
    assert outcome.error is None and outcome.epochs_done == 2
    assert outcome.failures == 1
    assert [row["epoch"] for row in read_history(outcome.run_dir)] == [1, 2]
    assert "worker failures 1" in (Path(outcome.run_dir) / "summary.txt").read_text()


def test_a_run_that_fails_for_good_still_says_what_it_finished(local_ray, _cfg, tmp_path):
    steps_per_epoch = 128 // (16 * 2)
    cfg = _cfg("broken", "ray.max_failures=0")
    worker = failing_worker(steps_per_epoch + 1, tmp_path / "failed-once")  # mid epoch 2, no restart
    outcome = run_training(cfg, train_fn=worker)
    assert outcome.error is not None and "injected failure" in outcome.error
    assert outcome.epochs_done == 1 and outcome.metrics["epoch"] == 1
    assert outcome.latest_checkpoint.endswith("checkpoint_epoch0001")
    summary = (Path(outcome.run_dir) / "summary.txt").read_text()
    assert "epochs          1 / 2" in summary and "injected failure" in summary


def test_dataset_given_as_file_uri_is_staged(local_ray, _cfg, tmp_path):
    cache = tmp_path / "cache"
    cfg = _cfg("uri", "train.epochs=1",
               f"data.root=file://{_cfg('uri').data.root}", f"data.cache_dir={cache}")
    outcome = run_training(cfg)
    assert outcome.epochs_done == 1
    staged = [p for p in cache.iterdir() if p.is_dir()]
    assert len(staged) == 1 and (staged[0] / "train.beton").is_file()  # one copy for two workers


def test_a_worker_group_that_does_not_fit_fails_before_any_worker(local_ray, _cfg, tmp_path):
    with pytest.raises(ConfigError) as info:
        run_training(_cfg("bad", "ray.num_workers=8"))
    assert info.value.key == "ray" and "8 x ray.cpus_per_worker" in str(info.value)
    assert not (tmp_path / "bad").exists()  # nothing started, nothing written


def test_two_nodes(_cfg):
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
        outcome = run_training(_cfg("two-nodes", "train.epochs=1"))
        assert outcome.epochs_done == 1
        workers = json.loads((Path(outcome.run_dir) / "workers.json").read_text())
        assert len({w["node_id"] for w in workers.values()}) == 2
    finally:
        ray.shutdown()
        cluster.shutdown()

"""End to end as a cluster user runs it: jobs/train.py on the synthetic config submitted through the
Job Submission API (repository as working dir, cluster/runtime_env.yaml), its checkpoints and
metrics checked, then jobs/evaluate.py submitted on that run the same way."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from .local_head import REPO, submit_and_wait

pytestmark = [pytest.mark.slow, pytest.mark.ray]

TRAIN_CONFIG = "jobs/configs/train_synthetic.yaml"
JOB_TIMEOUT_S = 900


def _checkpoint_dirs(run_dir: Path) -> list[Path]:
    """checkpoint_* folders; Ray Train also writes checkpoint_manager_snapshot.json there."""
    return sorted(p for p in run_dir.glob("checkpoint_*") if p.is_dir())


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """Absolute paths for data and runs: a submitted job's cwd is Ray's unpacked copy of the
    working dir, so a relative storage path would land inside the session folder."""
    return tmp_path_factory.mktemp("submission")


@pytest.fixture(scope="module")
def dataset(workspace: Path) -> Path:
    out = workspace / "synthetic"
    cmd = [sys.executable, "-m", "scm_ray.cli", "prepare", "synthetic", "--out", str(out),
           "--num-train", "64", "--num-val", "32", "--num-test", "32", "--image-size", "64", "--seed", "0"]
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    return out


@pytest.fixture(scope="module")
def trained_run(job_client, workspace: Path, dataset: Path) -> tuple[Path, str]:
    storage = workspace / "runs"
    logs = submit_and_wait(job_client, [
        "python", "jobs/train.py", "--config", TRAIN_CONFIG,
        "--set", f"ray.storage_path={storage}", "--set", "ray.name=submitted",
        "--set", f"data.root={dataset}", "--set", "train.epochs=2", "--set", "scm.start_epoch=1",
    ], timeout_s=JOB_TIMEOUT_S)
    return storage / "submitted", logs


def test_submitted_training_writes_checkpoints_and_metrics(trained_run):
    import pyarrow.parquet as pq

    from scm_ray.checkpoint import load_checkpoint

    run_dir, logs = trained_run
    assert str(run_dir) in logs, "train.py should print its run folder"
    checkpoints = _checkpoint_dirs(run_dir)
    assert checkpoints, f"no checkpoint_* in {run_dir}: {sorted(p.name for p in run_dir.iterdir())}"
    for checkpoint in checkpoints:
        assert (checkpoint / "model.pt").is_file() and (checkpoint / "meta.json").is_file()
    latest = load_checkpoint(checkpoints[-1])  # weights_only=True: the file is data, not code
    assert latest.epoch >= 1 and latest.model_state
    assert pq.read_table(run_dir / "metrics.parquet").num_rows > 0


def test_submitted_evaluation_scores_every_checkpoint(job_client, trained_run, workspace: Path, dataset: Path):
    import pyarrow.parquet as pq

    run_dir, _ = trained_run
    out = workspace / "eval"
    submit_and_wait(job_client, ["python", "jobs/evaluate.py", "--checkpoints", str(run_dir),
                                 "--data", str(dataset), "--out", str(out)], timeout_s=JOB_TIMEOUT_S)
    rows = pq.read_table(out / "results.parquet").to_pylist()
    names = {Path(str(r["checkpoint"])).name for r in rows}
    assert names == {p.name for p in _checkpoint_dirs(run_dir)}, rows
    assert all(r["status"] == "ok" for r in rows), rows
    assert all(0 <= r["test/gt_known"] <= 100 for r in rows), rows

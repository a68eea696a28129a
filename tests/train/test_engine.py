"""The training engine without Ray (`ray.num_workers: 0`): run folder, checkpoints kept,
resume after a crash, refused resumes and bad configs, on real FFCV files. The Ray Train adapter
over the same engine is tested in test_train.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from scm_ray.checkpoint import load_checkpoint
from scm_ray.config import ConfigError
from scm_ray.train.history import read_history
from scm_ray.train.local import train_in_process
from scm_ray.train.trainer import run_training
from tests.train.faults import InjectedFailure, fail_once

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")

STEPS = 128 // 16  # optimizer steps per epoch of the tiny split at batch 16, one process

# `scm-ray train` as a user runs it, with every `import ray` failing.
NO_RAY_CLI = """
import sys, runpy
class Block:
    def find_spec(self, name, path=None, target=None):
        if name == "ray" or name.startswith("ray."):
            raise ImportError("ray is blocked for this test")
sys.meta_path.insert(0, Block())
sys.argv = ["scm-ray", "train", *sys.argv[1:]]
runpy.run_module("scm_ray.cli", run_name="__main__")
"""


def _scm_ray_train_without_ray(cfg_overrides: list[str]) -> subprocess.CompletedProcess:
    args = ["--config", "jobs/configs/train_synthetic.yaml"]
    for override in cfg_overrides:
        args += ["--set", override]
    env = {**os.environ, "PYTHONPATH": str(Path.cwd())}
    return subprocess.run([sys.executable, "-c", NO_RAY_CLI, *args], capture_output=True, text=True,
                          env=env, timeout=600)


@pytest.mark.slow
def test_in_process_training_needs_no_ray(synthetic_dataset, tmp_path):
    """Two epochs, then the same run continued to three: the run folder a Ray run writes,
    with the best `num_to_keep` checkpoints (here: by lowest epoch) and always the latest."""
    from tests.train.conftest import SMALL

    overrides = [f"data.root={synthetic_dataset}", f"ray.storage_path={tmp_path}", "ray.name=local",
                 *SMALL, "ray.num_workers=0", "ray.num_to_keep=1",
                 "ray.checkpoint_metric=epoch", "ray.checkpoint_mode=min",
                 "train.tracking=[tensorboard, mlflow]", "train.log_every_steps=4"]
    first = _scm_ray_train_without_ray(overrides)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "[scm-ray] epoch 2/2 | loss" in first.stdout
    run_dir = tmp_path / "local"
    assert [row["epoch"] for row in read_history(str(run_dir))] == [1, 2]

    second = _scm_ray_train_without_ray([*overrides, "train.epochs=3"])
    assert second.returncode == 0, second.stdout + second.stderr
    assert "resumed from epoch 2 (step 16)" in second.stdout
    history = read_history(str(run_dir))
    assert [row["epoch"] for row in history] == [1, 2, 3]
    assert [row["global_step"] for row in history] == [STEPS, 2 * STEPS, 3 * STEPS]
    kept = sorted(p.name for p in run_dir.glob("checkpoint_epoch*"))
    assert kept == ["checkpoint_epoch0001", "checkpoint_epoch0003"]  # best (epoch 1) + latest
    assert load_checkpoint(run_dir / kept[-1]).metrics == pytest.approx(history[-1])
    summary = (run_dir / "summary.txt").read_text()
    assert "epochs          3 / 3" in summary
    assert f"best checkpoint {run_dir}/checkpoint_epoch0001 (by epoch)" in summary
    assert not list(run_dir.glob(".checkpoint_epoch*"))  # no staging folder left behind
    _check_tracking(run_dir, history)


def _check_tracking(run_dir: Path, history: list[dict]) -> None:
    """TensorBoard scalars per epoch and per log step, one MLflow run continued by the resume
    (params = the flattened config, metrics per epoch), and curves.png."""
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir))  # per epoch, in the run folder itself
    events.Reload()
    tags = events.Tags()["scalars"]
    for tag in ("val/gt_known", "train/loss", "lr"):
        assert tag in tags, tag
    assert [e.step for e in events.Scalars("val/gt_known")] == [1, 2, 3]
    assert [e.value for e in events.Scalars("val/gt_known")] == pytest.approx([r["val/gt_known"] for r in history])
    steps = EventAccumulator(str(run_dir / "steps"))  # per optimizer step, a run of its own
    steps.Reload()
    assert {"step/train_loss", "step/lr"} <= set(steps.Tags()["scalars"]) and "step/lr" not in tags
    assert [e.step for e in steps.Scalars("step/train_loss")] == [4, 8, 12, 16, 20, 24]

    client = MlflowClient(tracking_uri=f"sqlite:///{run_dir.parent}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name(run_dir.parent.name).experiment_id])
    assert [r.info.run_name for r in runs] == ["local"] and runs[0].info.status == "FINISHED"
    assert runs[0].data.params["optim.lr"] == "0.002"
    logged = client.get_metric_history(runs[0].info.run_id, "val/gt_known")
    assert [m.step for m in logged] == [1, 2, 3]

    png = (run_dir / "curves.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000


@pytest.mark.slow
def test_resume_after_a_crash_matches_an_uninterrupted_run(small_cfg, tmp_path):
    crashed = small_cfg("crashed", "ray.num_workers=0")
    run_dir = f"{tmp_path}/crashed"
    with pytest.raises(InjectedFailure):
        train_in_process(crashed, run_dir, before_step=fail_once(STEPS + 3, tmp_path / "marker"))
    assert [row["epoch"] for row in read_history(run_dir)] == [1]
    epoch1 = read_history(run_dir)[0]
    train_in_process(crashed, run_dir)  # continues from epoch 1's checkpoint
    history = read_history(run_dir)
    assert [row["epoch"] for row in history] == [1, 2]
    assert history[0] == epoch1  # epoch 1 was not redone
    assert history[1]["global_step"] == 2 * STEPS

    # epoch 2 saw epoch 2's data: the same numbers as a run that was never interrupted
    straight = small_cfg("straight", "ray.num_workers=0")
    train_in_process(straight, f"{tmp_path}/straight")
    reference = read_history(f"{tmp_path}/straight")[1]
    compared = [k for k in reference if k.startswith("val/") or k in ("train/loss", "lr")]
    assert "train/loss" in compared and "val/gt_known" in compared
    assert {k: history[1][k] for k in compared} == {k: reference[k] for k in compared}

    # the same name with other settings is refused, naming what changed, before anything runs
    with pytest.raises(ConfigError, match=r"optim.lr: 0.002 -> 0.001") as info:
        run_training(small_cfg("crashed", "ray.num_workers=0", "train.epochs=3", "optim.lr=1e-3"))
    assert info.value.key == "ray.name" and read_history(run_dir) == history


@pytest.mark.parametrize(
    "override,key",
    [
        ("data.val_split=nope", "data.val_split"),
        ("model.num_classes=7", "data.root"),  # the dataset has 4
        ("ray.checkpoint_metric=val/gt-known", "ray.checkpoint_metric"),  # typo: not reported
        ("model.name=swin_tiny_patch4_window7_224", "model.name"),  # no CLS token to wrap
        ("model.img_size=96 data.resize_size=104 data.crop_size=96", "data.root"),  # val stored at 64 px
    ],
)
def test_bad_config_fails_before_training(small_cfg, tmp_path, override, key):
    with pytest.raises(ConfigError) as info:
        run_training(small_cfg("bad", "ray.num_workers=0", *override.split()))
    assert info.value.key == key
    assert not (tmp_path / "bad").exists()  # nothing started, nothing written


def test_unknown_key_fails_in_the_cli(capsys):
    from scm_ray.cli import main

    assert main(["train", "--config", "jobs/configs/train_synthetic.yaml", "--set", "scm.nope=1"]) == 2
    assert "scm.nope: unknown key" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("limit", ["train.max_skipped_steps=3", "train.max_skipped_steps=0",
                                   "train.max_skipped_steps=1000"])
def test_a_run_that_cannot_learn_exits_non_zero_saying_why(synthetic_dataset, tmp_path, capsys, limit):
    """At the largest lr allowed the first update makes the weights huge and every later step
    has a non-finite loss and is skipped: the run ends after train.max_skipped_steps of them
    instead of training on; by default (0) after half an epoch of them in a run of 8 steps an
    epoch, which never reaches the usual 10 before its weights break validation."""
    from scm_ray.cli import main
    from tests.train.conftest import SMALL

    args = ["train", "--config", "jobs/configs/train_synthetic.yaml"]
    for item in [f"data.root={synthetic_dataset}", f"ray.storage_path={tmp_path}", "ray.name=nan",
                 *SMALL, "ray.num_workers=0", limit, "optim.lr=1e30"]:
        args += ["--set", item]
    assert main(args) == 1
    out = capsys.readouterr().out
    if limit.endswith("=1000"):  # never reached: validation meets the non-finite maps first
        assert "training failed: TrainingDiverged: validation after epoch 1: scoremap contains NaN" in out, out[-2000:]
        assert "limit train.max_skipped_steps=1000" in out and "Traceback" not in out
        return
    reason = "optimizer steps in a row skipped or undone"
    allowed = 3 if limit.endswith("=3") else 4  # the default: half an epoch's 8 steps
    assert f"training failed: TrainingDiverged: {allowed + 1} " + reason in out, out[-2000:]
    summary = (tmp_path / "nan" / "summary.txt").read_text()
    assert reason in summary and f"limit train.max_skipped_steps={allowed}" in summary

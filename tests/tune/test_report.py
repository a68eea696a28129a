"""Trial table, ranking, best config, leaderboard, plot and the concurrency cap, from plain data."""

from __future__ import annotations

import math
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from scm_ray.config import ConfigError, TrainJobConfig, load_config
from scm_ray.tune.config import TuneJobConfig
from scm_ray.tune.report import rank, trial_row, write_outputs
from scm_ray.tune.search import concurrency, trials_that_fit

SHIPPED = Path(__file__).resolve().parents[2] / "jobs" / "configs" / "tune_synthetic.yaml"


def _cfg(*overrides: str) -> TuneJobConfig:
    return load_config(TuneJobConfig, SHIPPED, list(overrides))


def _epochs(*values: float) -> list[dict]:
    return [{"epoch": i + 1, "val/gt_known": v, "train/loss": 1.0 / (i + 1)} for i, v in enumerate(values)]


def _rows(cfg: TuneJobConfig) -> list[dict]:
    base = {"optim.lr": 1e-3, "scm.num_blocks": 2, "scm.alpha": 0.002,
            "scm.iterations_first": 4, "scm.iterations_rest": 2}
    made = []
    for trial_id, lr, history, error in [
        ("t0", 1e-3, _epochs(40.0, 55.0, 50.0), None),   # completed, best at epoch 2
        ("t1", 2e-3, _epochs(20.0), None),               # stopped by ASHA after epoch 1
        ("t2", 5e-4, _epochs(60.0, 45.0), "RuntimeError: boom"),
        ("t3", 3e-4, [], "RayActorError: lost"),         # failed before reporting
    ]:
        last = history[-1] if history else {}
        made.append(trial_row(cfg, trial_id, {**base, "optim.lr": lr}, history, last, error, f"/runs/{trial_id}"))
    return made


def test_rows_say_why_each_trial_stopped():
    rows = {r["trial_id"]: r for r in _rows(_cfg())}
    assert rows["t0"]["stop_reason"] == "completed" and rows["t0"]["epochs_run"] == 3
    assert rows["t0"]["best/val/gt_known"] == 55.0 and rows["t0"]["best_epoch"] == 2
    assert rows["t0"]["final/val/gt_known"] == 50.0 and rows["t0"]["final/train/loss"] == pytest.approx(1 / 3)
    assert rows["t1"]["stop_reason"] == "early-stopped" and rows["t1"]["epochs_run"] == 1
    assert rows["t2"]["stop_reason"] == "error" and rows["t3"]["stop_reason"] == "error"
    assert math.isnan(rows["t3"]["best/val/gt_known"])
    no_asha = {r["trial_id"]: r for r in _rows(_cfg("search.scheduler.kind=none"))}
    assert no_asha["t1"]["stop_reason"] == "stopped"


def test_ranking_uses_the_best_epoch_and_puts_silent_trials_last():
    ranked = [r["trial_id"] for r in rank(_rows(_cfg()), "val/gt_known", "max")]
    assert ranked == ["t2", "t0", "t1", "t3"]
    assert [r["trial_id"] for r in rank(_rows(_cfg()), "val/gt_known", "min")][:2] == ["t1", "t0"]


def test_outputs_are_written_and_best_yaml_trains(tmp_path):
    cfg = _cfg()
    rows = rank(_rows(cfg), "val/gt_known", "max")
    board = write_outputs(cfg, str(tmp_path), rows)
    assert board.splitlines()[1].split()[:2] == ["1", "t2"]
    assert (tmp_path / "leaderboard.txt").read_text() == board
    assert (tmp_path / "objective.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = pq.read_table(tmp_path / "trials.parquet").to_pylist()
    assert [r["trial_id"] for r in table] == ["t2", "t0", "t1", "t3"]
    assert {"config/optim.lr", "best/val/gt_known", "final/val/gt_known", "epochs_run",
            "stop_reason", "run_dir"} <= set(table[0])
    best = load_config(TrainJobConfig, tmp_path / "best.yaml")
    assert best.optim.lr == 5e-4 and best.scm.iterations == [4, 2] and best.ray.name == ""
    assert best.model == cfg.model and best.data == cfg.data


def test_concurrency_is_capped_by_what_fits():
    cfg = _cfg("ray.num_workers=1")  # 1 worker x 1 CPU per trial
    assert trials_that_fit(cfg, {"CPU": 2.0}) == 2
    assert concurrency(cfg, {"CPU": 8.0}, embedded=True)[0] == 8
    capped, line = concurrency(_cfg("search.max_concurrent_trials=5", "ray.num_workers=1"), {"CPU": 2.0},
                               embedded=True)
    assert capped == 2 and "capped" in line and "2 trial(s) fit at once" in line
    gpu = _cfg("ray.use_gpu=true", "ray.num_workers=2", "ray.cpus_per_worker=4")
    assert trials_that_fit(gpu, {"CPU": 64.0, "GPU": 5.0}) == 2
    with pytest.raises(ConfigError) as info:
        concurrency(gpu, {"CPU": 64.0}, embedded=True)
    assert info.value.key == "ray"
    assert concurrency(gpu, {"CPU": 64.0}, embedded=False)[0] == 1  # the autoscaler may add GPUs


def test_an_in_process_trial_reserves_one_worker_for_its_own_actor():
    """ray.num_workers=0: the trial's actor trains, so it holds one worker's resources; a Ray
    Train trial's actor holds none (its worker group does)."""
    from scm_ray.tune.search import trial_resources

    cfg = _cfg("ray.num_workers=0", "ray.cpus_per_worker=2")
    assert trial_resources(cfg) == {"cpu": 2.0}
    assert trials_that_fit(cfg, {"CPU": 5.0}) == 2
    chosen, line = concurrency(cfg, {"CPU": 5.0}, embedded=True)
    assert chosen == 2 and "each trial its own process, 2 CPU" in line
    gpu = _cfg("ray.num_workers=0", "ray.use_gpu=true", "ray.gpus_per_worker=0.5")
    assert trial_resources(gpu) == {"cpu": 1.0, "gpu": 0.5}
    assert trials_that_fit(gpu, {"CPU": 8.0, "GPU": 1.0}) == 2
    assert trial_resources(_cfg("ray.num_workers=1")) == {"cpu": 0, "memory": 1}


def test_live_table_shows_searched_values_and_the_objective():
    """The driver's status table (Tune's own is off): searched values, epoch, the objective's
    latest and best value per trial, no resource line. Trials as Tune hands them to callbacks."""
    from types import SimpleNamespace

    from scm_ray.tune.progress import TrialTable

    table = TrialTable("val/gt_known", "max", ["optim.lr", "scm.num_blocks"])
    trials = [SimpleNamespace(trial_id="a1", status="RUNNING", config={"optim.lr": 1e-3, "scm.num_blocks": 0},
                              last_result={}),
              SimpleNamespace(trial_id="b2", status="PENDING", config={"optim.lr": 3e-4, "scm.num_blocks": 4},
                              last_result={})]
    for epoch, value in ((1, 50.0), (2, 40.0)):
        trials[0].last_result = {"epoch": epoch, "val/gt_known": value}
        table.on_trial_result(0, trials, trials[0], trials[0].last_result)
    lines = table.table(trials).splitlines()
    assert lines[0].split() == ["trial", "status", "optim.lr", "scm.num_blocks", "epoch", "val/gt_known",
                                "best", "(max)"]
    assert lines[1].split() == ["a1", "RUNNING", "0.001", "0", "2", "40", "50"]
    assert lines[2].split() == ["b2", "PENDING", "0.0003", "4", "-", "-", "-"]
    assert "CPU" not in table.table(trials)

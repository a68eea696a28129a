"""A real search on a local Ray: 4 trials of one CPU worker each, 2 at a time, ASHA on."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pyarrow.parquet as pq
import pytest

ray = pytest.importorskip("ray")

from scm_ray.cli import main  # noqa: E402
from scm_ray.config import TrainJobConfig, load_config  # noqa: E402
from scm_ray.tune.config import TuneJobConfig  # noqa: E402
from scm_ray.train.history import read_history  # noqa: E402
from scm_ray.train.trainer import run_training  # noqa: E402
from scm_ray.tune.search import run_search  # noqa: E402

from .conftest import SHIPPED, tiny_search  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.ray]

GOOD, BAD = [2e-3, 1e-3], [1e-6, 2e-6]


def test_invalid_search_field_fails_before_anything_starts(tmp_path, capsys):
    code = main(["tune", "--config", str(SHIPPED), "--set", f"ray.storage_path={tmp_path}",
                 "--set", "search.space.scm.nope={choice: [1, 2]}"])
    assert code == 2
    assert "search.space.scm.nope: not a training config field" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == [] and not ray.is_initialized()


def test_a_metric_no_epoch_reports_fails_before_anything_starts(tune_dataset, tmp_path, capsys):
    code = main(["tune", "--config", str(SHIPPED), "--set", f"data.root={tune_dataset}",
                 "--set", f"ray.storage_path={tmp_path}", "--set", "search.metric=val/gt-known"])
    assert code == 2
    assert "search.metric: 'val/gt-known' is not a reported metric" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == [] and not ray.is_initialized()


def test_an_existing_experiment_is_resumed_only_when_asked(tune_dataset, tmp_path, capsys):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "tuner.pkl").write_bytes(b"")  # what Tune leaves in an experiment
    code = main(["tune", "--config", str(SHIPPED), "--set", f"data.root={tune_dataset}",
                 "--set", f"ray.storage_path={tmp_path}", "--set", "search.name=taken"])
    assert code == 2
    assert "search.name: an experiment already exists" in capsys.readouterr().err
    assert not ray.is_initialized()


def test_tiny_search_stops_early_writes_outputs_and_best_yaml_reproduces(local_ray, tune_dataset, tmp_path,
                                                                         capsys):
    """The grid runs the two good learning rates first, two at a time; each near-zero one
    starts only after a good trial ended, so at ASHA's rung (epoch 1, keep the better half)
    it meets their scores and loses: early stopping is certain, not a race."""
    overrides = tiny_search(tune_dataset, tmp_path, "tiny", GOOD + BAD,
                            "search.metric=val/top1_cls", "search.max_concurrent_trials=2",
                            "search.scheduler.grace_period=1", "search.scheduler.reduction_factor=2",
                            "train.tracking=[tensorboard, mlflow]")
    cfg = load_config(TuneJobConfig, SHIPPED, overrides)
    summary = run_search(cfg)
    experiment = tmp_path / "tiny"
    printed = capsys.readouterr().out  # the live table: objective and searched values, no resources
    assert "finished:" in printed and "optim.lr" in printed and "val/top1_cls  best (max)" in printed
    assert "Logical resource usage" not in printed and "Trial status:" not in printed

    from scm_ray.results_schema import check_columns

    assert check_columns("trials.parquet", pq.read_schema(experiment / "trials.parquet")) == []
    rows = pq.read_table(experiment / "trials.parquet").to_pylist()
    by_lr = {row["config/optim.lr"]: row for row in rows}
    assert sorted(by_lr) == sorted(GOOD + BAD)
    for lr in BAD:
        assert by_lr[lr]["stop_reason"] == "early-stopped" and by_lr[lr]["epochs_run"] == 1
    assert any(by_lr[lr]["stop_reason"] == "completed" and by_lr[lr]["epochs_run"] == 2 for lr in GOOD)
    assert all(row["error"] is None for row in rows)
    assert summary.best["config/optim.lr"] in GOOD and rows[0]["trial_id"] == summary.best["trial_id"]
    for name in ("best.yaml", "leaderboard.txt", "objective.png"):
        assert (experiment / name).is_file(), name
    _check_mlflow_groups_the_trials(tmp_path, "tiny", rows)
    for row in rows:  # each trial's start-up, counted from the trial's own start
        startup = json.loads((Path(row["run_dir"]) / "startup.json").read_text())
        assert startup["since"] == "the trial started"
        assert list(startup["phases_s"])[:2] == ["trial", "worker group"] and startup["total_s"] > 0

    # best.yaml is a training config; training it again gives the best trial's first epoch
    best = load_config(TrainJobConfig, experiment / "best.yaml",
                       [f"ray.storage_path={tmp_path}", "ray.name=again"])
    assert best.optim.lr == summary.best["config/optim.lr"]
    outcome = run_training(best)
    assert outcome.error is None
    trial_epoch1 = read_history(summary.best["run_dir"])[0]
    again_epoch1 = read_history(outcome.run_dir)[0]
    compared = [k for k in trial_epoch1 if k.startswith("val/") or k == "train/loss"]
    assert "val/gt_known" in compared and "val/top1_cls" in compared
    for key in compared:
        assert again_epoch1[key] == trial_epoch1[key] or (math.isnan(again_epoch1[key])
                                                          and math.isnan(trial_epoch1[key])), key


def test_in_process_trials_train_in_their_own_actor_and_report_each_epoch(local_ray, tune_dataset, tmp_path,
                                                                          capsys):
    """ray.num_workers=0: no worker group; each trial's actor runs the engine, writes the run
    folder `scm-ray train` writes, and hands Tune every epoch; two trials share the 2 CPUs."""
    from scm_ray.tune.in_process import finished_metrics

    overrides = tiny_search(tune_dataset, tmp_path, "inproc", GOOD, "ray.num_workers=0",
                            "search.scheduler.kind=none")
    summary = run_search(load_config(TuneJobConfig, SHIPPED, overrides))
    printed = capsys.readouterr().out
    assert "2 trial(s) fit at once (2 CPUs; each trial its own process, 1 CPU)" in printed
    rows = pq.read_table(tmp_path / "inproc" / "trials.parquet").to_pylist()
    assert sorted(r["config/optim.lr"] for r in rows) == sorted(GOOD)
    assert all(r["error"] is None and r["stop_reason"] == "completed" and r["epochs_run"] == 2 for r in rows)
    assert summary.best["trial_id"] == rows[0]["trial_id"]
    for row in rows:
        run_dir = Path(row["run_dir"])
        history = read_history(str(run_dir))
        assert [h["epoch"] for h in history] == [1, 2]
        assert row["final/val/gt_known"] == history[-1]["val/gt_known"]
        assert (run_dir / "checkpoint_epoch0002" / "model.pt").is_file()
        assert not (run_dir / "placement_groups").exists()  # no worker group was started
        startup = json.loads((run_dir / "startup.json").read_text())
        assert startup["since"] == "the trial started" and list(startup["phases_s"])[0] == "trial"
        assert "worker group" not in startup["phases_s"]
        # a restarted trial whose run is already at its last epoch reports that epoch again
        assert finished_metrics(str(run_dir), 2)["val/gt_known"] == history[-1]["val/gt_known"]
        assert finished_metrics(str(run_dir), 3) is None


def test_optuna_searcher_and_asha_drive_a_stand_in_trainable(local_ray, tmp_path):
    """The model-based searcher samples the YAML space within its bounds (a stand-in trainable
    replaces training, so this checks the wiring, not learning)."""
    from ray import tune

    from scm_ray.tune.search import build_scheduler, build_searcher, param_space

    cfg = load_config(TuneJobConfig, SHIPPED, ["search.searcher=optuna", "search.num_samples=6"])

    def stand_in(config):
        for epoch in range(1, cfg.train.epochs + 1):
            tune.report({"epoch": epoch, "val/gt_known": 1e4 * config["optim.lr"] + epoch})

    results = tune.Tuner(
        stand_in, param_space=param_space(cfg),
        tune_config=tune.TuneConfig(metric="val/gt_known", mode="max", num_samples=6,
                                    search_alg=build_searcher(cfg, 2), scheduler=build_scheduler(cfg)),
        run_config=tune.RunConfig(storage_path=str(tmp_path), name="optuna", verbose=0),
    ).fit()
    assert len(results) == 6 and results.num_errors == 0
    for result in results:
        assert 3e-4 <= result.config["optim.lr"] <= 3e-3
        assert result.config["scm.num_blocks"] in (0, 2, 4)


def test_optuna_search_trains_for_real_on_uri_storage(local_ray, tune_dataset, tmp_path):
    """Optuna's TPE over real training runs, with the experiment on a storage URI (file://,
    the same code path as s3:// or gs://): every output lands under the URI, the sampled
    learning rates respect the bounds, and best.yaml names the best trial's values."""
    lo, hi = 5e-4, 3e-3
    overrides = tiny_search(tune_dataset, tmp_path / "unused", "tpe", [1e-3],
                            f"ray.storage_path=file://{tmp_path}/uri-runs", "train.epochs=1",
                            "search.space={optim.lr: {loguniform: [%g, %g]}, scm.num_blocks: {choice: [1, 2]}}" % (lo, hi),
                            "search.searcher=optuna", "search.num_samples=2", "search.max_concurrent_trials=1",
                            "search.scheduler.kind=none")
    summary = run_search(load_config(TuneJobConfig, SHIPPED, overrides))

    experiment = tmp_path / "uri-runs" / "tpe"
    assert summary.experiment == f"file://{tmp_path}/uri-runs/tpe"
    rows = pq.read_table(experiment / "trials.parquet").to_pylist()
    assert len(rows) == 2 and all(r["error"] is None and r["stop_reason"] == "completed" for r in rows)
    for row in rows:
        assert lo <= row["config/optim.lr"] <= hi and row["config/scm.num_blocks"] in (1, 2)
        assert (experiment / "runs" / row["trial_id"] / "metrics.parquet").is_file()
    assert len({r["config/optim.lr"] for r in rows}) == 2  # the searcher sampled, not repeated
    best = load_config(TrainJobConfig, experiment / "best.yaml")
    assert best.optim.lr == summary.best["config/optim.lr"]
    assert best.scm.num_blocks == summary.best["config/scm.num_blocks"]
    assert not (tmp_path / "unused").exists()


def _check_mlflow_groups_the_trials(storage, search: str, rows: list[dict]) -> None:
    """Every trial is an MLflow run of the experiment named after the search, in the store of
    the search's storage folder, with its sampled lr as a param and its per-epoch metrics."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{storage}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name(search).experiment_id])
    by_name = {r.info.run_name: r for r in runs}
    assert sorted(by_name) == sorted(row["trial_id"] for row in rows)
    for row in rows:
        run = by_name[row["trial_id"]]
        assert float(run.data.params["optim.lr"]) == row["config/optim.lr"]
        logged = [m.step for m in client.get_metric_history(run.info.run_id, "val/top1_cls")]
        # an early-stopped trial may finish the epoch it was in before ASHA's stop reaches it:
        # MLflow then has that epoch too, trials.parquet counts the epochs Tune received
        assert logged[:row["epochs_run"]] == list(range(1, row["epochs_run"] + 1)), logged
        assert logged == list(range(1, len(logged) + 1)) and len(logged) <= 2

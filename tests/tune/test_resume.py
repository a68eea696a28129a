"""An interrupted search resumes: the driver is killed mid-search, the search is resumed, the
finished trial is kept as it was and the unfinished one continues from its checkpoint (trials on
Ray Train, and trials in their own process)."""

from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

psutil = pytest.importorskip("psutil")
pytest.importorskip("ray")

from scm_ray.config import load_config  # noqa: E402
from scm_ray.tune.config import TuneJobConfig  # noqa: E402
from scm_ray.train.history import read_history  # noqa: E402
from scm_ray.tune.search import run_search  # noqa: E402

from .conftest import SHIPPED, tiny_search  # noqa: E402
from tests.subprocess_env import interrupt_when, own_ray_env  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.ray]

REPO = Path(__file__).resolve().parents[2]
EPOCHS = 4


def _statuses(experiment: Path) -> dict[str, str]:
    """trial id -> status in Tune's saved experiment state (what a restore will see)."""
    statuses = {}
    for path in glob.glob(str(experiment / "experiment_state-*.json")):
        try:
            state = json.loads(Path(path).read_text())
        except (OSError, ValueError):  # being rewritten
            continue
        for trial_json, _ in state["trial_data"]:
            trial = json.loads(trial_json)
            statuses[trial["trial_id"]] = trial["status"]
    return statuses


def _checkpointed_epoch(run_dir: Path, in_process: bool = False) -> int:
    """The latest epoch whose checkpoint Ray Train has registered for the run (what it
    resumes from; a checkpoint folder alone is not registered yet). An in-process trial
    resumes from its run folder's latest checkpoint, each renamed into place whole."""
    if in_process:
        return max((int(p.parent.name.removeprefix("checkpoint_epoch"))
                    for p in run_dir.glob("checkpoint_epoch*/model.pt")), default=0)
    try:
        results = json.loads((run_dir / "checkpoint_manager_snapshot.json").read_text())["checkpoint_results"]
    except (OSError, ValueError, KeyError):
        return 0
    return max((int(r["metrics"]["epoch"]) for r in results), default=0)


def _wait_for_one_done_one_checkpointed(experiment: Path, proc: subprocess.Popen, log: Path,
                                        in_process: bool) -> tuple[str, str]:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"search exited early ({proc.returncode}):\n{log.read_text()[-3000:]}"
        statuses = _statuses(experiment)
        done = [t for t, s in statuses.items() if s == "TERMINATED"]
        running = [t for t, s in statuses.items() if s == "RUNNING"]
        if done and running and _checkpointed_epoch(experiment / "runs" / running[0], in_process):
            return done[0], running[0]
        time.sleep(0.1)
    raise AssertionError(f"no trial finished in time:\n{log.read_text()[-3000:]}")


def _kill(proc: subprocess.Popen) -> None:
    """SIGKILL the search driver and every process it started (its local Ray included)."""
    family = psutil.Process(proc.pid).children(recursive=True)
    os.killpg(proc.pid, signal.SIGKILL)
    for child in family:
        try:
            child.kill()
        except psutil.NoSuchProcess:
            pass
    proc.wait(timeout=30)
    psutil.wait_procs(family, timeout=30)


@pytest.mark.parametrize("workers", [1, 0], ids=["ray-train-trials", "in-process-trials"])
def test_killed_search_resumes_where_it_stopped(tune_dataset, tmp_path, request, workers):
    overrides = tiny_search(tune_dataset, tmp_path, "interrupted", [2e-3, 1e-3],
                            f"train.epochs={EPOCHS}", "ray.num_to_keep=4", "eval.threshold_step=0.01",
                            "search.scheduler.kind=none", "search.max_concurrent_trials=1",
                            f"ray.num_workers={workers}")
    in_process = workers == 0
    experiment = tmp_path / "interrupted"
    env = own_ray_env()  # its own local Ray
    env["TUNE_GLOBAL_CHECKPOINT_S"] = "0"  # save the experiment state at every step
    log = tmp_path / "search.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "jobs/tune.py", "--config", str(SHIPPED), *(f"--set={o}" for o in overrides)],
            cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        finished, unfinished = _wait_for_one_done_one_checkpointed(experiment, proc, log, in_process)
    finally:
        _kill(proc)
    done_run, open_run = experiment / "runs" / finished, experiment / "runs" / unfinished
    done_table = (done_run / "metrics.parquet").read_bytes()
    done_mtime = (done_run / "metrics.parquet").stat().st_mtime_ns
    before = read_history(str(open_run))
    kept = _checkpointed_epoch(open_run, in_process)
    assert kept < EPOCHS, "the second trial finished before the kill; nothing left to resume"

    request.getfixturevalue("local_ray")
    summary = run_search(load_config(TuneJobConfig, SHIPPED, [*overrides, "search.resume=true"]))

    # the finished trial was not run again
    assert (done_run / "metrics.parquet").read_bytes() == done_table
    assert (done_run / "metrics.parquet").stat().st_mtime_ns == done_mtime
    # the unfinished one went on from its latest checkpoint: the epochs up to it are kept as
    # they were measured before the kill (timings included), the rest were trained now
    after = read_history(str(open_run))
    assert [row["epoch"] for row in after] == list(range(1, EPOCHS + 1))
    assert kept >= 1 and after[:kept] == before[:kept]
    rows = pq.read_table(experiment / "trials.parquet").to_pylist()
    assert sorted(r["trial_id"] for r in rows) == sorted([finished, unfinished])
    assert all(r["stop_reason"] == "completed" and r["epochs_run"] == EPOCHS for r in rows)
    assert summary.best is not None and (experiment / "best.yaml").is_file()


def _wait_for_last_checkpoint(experiment: Path, proc: subprocess.Popen, log: Path, epochs: int) -> str:
    """The moment a trial's run has registered its last checkpoint while Tune's saved state
    still says the trial runs: the window in which a killed driver used to leave a search
    that no resume could finish."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"search exited early ({proc.returncode}):\n{log.read_text()[-3000:]}"
        for trial, status in _statuses(experiment).items():
            if status == "RUNNING" and _checkpointed_epoch(experiment / "runs" / trial) == epochs:
                return trial
        time.sleep(0.02)
    raise AssertionError(f"no trial reached its last checkpoint in time:\n{log.read_text()[-3000:]}")


def test_search_killed_after_last_checkpoint_resumes_and_refuses_changes(tune_dataset, tmp_path, request,
                                                                          capsys):
    from scm_ray.cli import main

    epochs = 2
    overrides = tiny_search(tune_dataset, tmp_path, "window", [2e-3], f"train.epochs={epochs}",
                            "search.scheduler.kind=none")
    experiment = tmp_path / "window"
    env = own_ray_env()
    env["TUNE_GLOBAL_CHECKPOINT_S"] = "0"
    log = tmp_path / "search.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "jobs/tune.py", "--config", str(SHIPPED), *(f"--set={o}" for o in overrides)],
            cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        trial = _wait_for_last_checkpoint(experiment, proc, log, epochs)
    finally:
        _kill(proc)
    assert _statuses(experiment)[trial] != "TERMINATED", "the kill missed the window"
    run = experiment / "runs" / trial
    table = (run / "metrics.parquet").read_bytes()
    mtime = (run / "metrics.parquet").stat().st_mtime_ns
    settings = (experiment / "search_settings.json").read_bytes()

    # a resume with other base settings, or another space, is refused before Ray starts
    resume = [*overrides, "search.resume=true"]
    for change, named in [("optim.weight_decay=0.0", "optim.weight_decay: 0.05 -> 0.0"),
                          ("search.space={optim.lr: {choice: [0.002, 0.0005]}}", "search.space.optim.lr.choice")]:
        code = main(["tune", "--config", str(SHIPPED), *(f"--set={o}" for o in [*resume, change])])
        err = capsys.readouterr().err
        assert code == 2 and "search.resume" in err and named in err and "Traceback" not in err, err
        assert (experiment / "search_settings.json").read_bytes() == settings
        assert (run / "metrics.parquet").read_bytes() == table

    request.getfixturevalue("local_ray")
    summary = run_search(load_config(TuneJobConfig, SHIPPED, resume))
    # the finished run was not trained again: its last epoch was reported once more
    assert (run / "metrics.parquet").read_bytes() == table
    assert (run / "metrics.parquet").stat().st_mtime_ns == mtime
    rows = pq.read_table(experiment / "trials.parquet").to_pylist()
    assert [(r["trial_id"], r["stop_reason"], r["epochs_run"]) for r in rows] == [(trial, "completed", epochs)]
    assert summary.best is not None and (experiment / "best.yaml").is_file()


def test_ctrl_c_stops_the_search_with_how_to_resume(tune_dataset, tmp_path):
    """Ctrl-C mid-search: Tune saves its state, the command says how to resume (one line, exit
    130, no traceback, nothing about Tuner.restore)."""
    overrides = tiny_search(tune_dataset, tmp_path, "stopped", [2e-3, 1e-3], "train.epochs=2",
                            "search.scheduler.kind=none", "search.max_concurrent_trials=1")
    experiment = tmp_path / "stopped"
    code, output = interrupt_when(
        ["tune", "--config", str(SHIPPED), *(f"--set={o}" for o in overrides)],
        lambda: any(_checkpointed_epoch(run) for run in (experiment / "runs").glob("*")),
        tmp_path / "search.log", timeout_s=300)
    lines = [line for line in output.splitlines() if "scm-ray tune: interrupted; resume with" in line]
    assert code == 130 and len(lines) == 1, output[-3000:]
    assert "--set search.name=stopped --set search.resume=true" in lines[0]
    assert "Traceback" not in output and "Tuner.restore" not in output, output[-3000:]

    # Tune saved the experiment as it stopped, with the trial that was training in it: what
    # `search.resume=true` restores (the resume itself: the killed-driver tests above)
    from ray import tune

    assert tune.Tuner.can_restore(str(experiment))
    assert any(_checkpointed_epoch(experiment / "runs" / trial) for trial in _statuses(experiment))

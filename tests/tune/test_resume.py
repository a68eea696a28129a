"""An interrupted search resumes: the driver is killed mid-search, the search is resumed, the
finished trial is kept as it was and the unfinished one continues from its checkpoint."""

from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

psutil = pytest.importorskip("psutil")
pytest.importorskip("ray")

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


def _checkpointed_epoch(run_dir: Path) -> int:
    """The latest epoch whose checkpoint Ray Train has registered for the run (what it
    resumes from; a checkpoint folder alone is not registered yet)."""
    try:
        results = json.loads((run_dir / "checkpoint_manager_snapshot.json").read_text())["checkpoint_results"]
    except (OSError, ValueError, KeyError):
        return 0
    return max((int(r["metrics"]["epoch"]) for r in results), default=0)


def _wait_for_one_done_one_checkpointed(experiment: Path, proc: subprocess.Popen, log: Path) -> tuple[str, str]:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"search exited early ({proc.returncode}):\n{log.read_text()[-3000:]}"
        statuses = _statuses(experiment)
        done = [t for t, s in statuses.items() if s == "TERMINATED"]
        running = [t for t, s in statuses.items() if s == "RUNNING"]
        if done and running and _checkpointed_epoch(experiment / "runs" / running[0]):
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


def test_killed_search_resumes_where_it_stopped(tune_dataset, tmp_path, request):
    overrides = tiny_search(tune_dataset, tmp_path, "interrupted", [2e-3, 1e-3],
                            f"train.epochs={EPOCHS}", "ray.num_to_keep=4", "eval.threshold_step=0.01",
                            "search.scheduler.kind=none", "search.max_concurrent_trials=1")
    experiment = tmp_path / "interrupted"
    env = own_ray_env()  # its own local Ray
    env["TUNE_GLOBAL_CHECKPOINT_S"] = "0"  # save the experiment state at every step
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

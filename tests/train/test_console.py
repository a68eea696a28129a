"""A normal run's console: no traceback, no error-level line, no colour codes in a pipe, no
token-auth notice, the epoch line once, and no "(SCM off: warm-up)" for the no-SCM baseline.
Run through the CLI in a subprocess while this test process holds a second Ray on the same host
(what used to kill Ray Train's placement-group cleaner with a traceback)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("ray")

from scm_ray.train.history import format_epoch_line  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.ray]

REPO = Path(__file__).resolve().parents[2]


def test_normal_run_prints_no_traceback_and_no_error(local_ray, synthetic_dataset, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "scm_ray.cli", "train", "--config", "jobs/configs/train_synthetic.yaml",
         "--set", f"data.root={synthetic_dataset}", "--set", f"ray.storage_path={tmp_path}",
         "--set", "ray.name=quiet", "--set", "train.epochs=1", "--set", "ray.num_workers=1",
         "--set", "scm.start_epoch=0", "--set", "optim.schedule=cosine"],
        cwd=REPO, capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    for noise in ("Traceback", "ERROR", " E ", "\x1b[", "Token authentication is enabled", "left behind"):
        assert noise not in out, (noise, out[-3000:])
    assert out.count("[scm-ray] epoch 1/1 |") == 1, out
    assert "local Ray (" in out
    # the start-up breakdown: one line from rank 0, and the same phases in startup.json
    import json
    import re

    line = re.search(r"\[scm-ray\] first optimizer step ([0-9.]+) s after the command started \((.*) s\)", out)
    assert line and out.count("first optimizer step") == 1, out[-3000:]
    saved = json.loads((tmp_path / "quiet" / "startup.json").read_text())
    assert list(saved["phases_s"]) == ["imports", "checks", "ray", "worker group", "dataset", "loaders",
                                       "model", "first batch", "first step"]
    assert line.group(2).startswith("imports ") and abs(float(line.group(1)) - saved["total_s"]) < 0.1
    assert abs(sum(saved["phases_s"].values()) - saved["total_s"]) < 0.01


def test_warm_up_label_only_for_a_model_with_adbs():
    metrics = {"epoch": 1, "train/loss": 0.5, "scm_active": 0}
    assert "(SCM off: warm-up)" in format_epoch_line(metrics, 3, scm_blocks=4)
    assert "SCM off" not in format_epoch_line(metrics, 3, scm_blocks=0)
    assert "SCM off" not in format_epoch_line({**metrics, "scm_active": 1}, 3, scm_blocks=4)

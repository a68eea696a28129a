"""`make demo` end to end at a reduced size: the same CLI entry, a real local Ray, real FFCV
files, training, the evaluation pool and the report; the sizes shrink, nothing is skipped."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

pytest.importorskip("ray")

pytestmark = [pytest.mark.slow, pytest.mark.ray]

REPO = Path(__file__).resolve().parents[2]
LAST_LINE = re.compile(r"demo: GT-Known (\d+\.\d)% \(no SCM (\d+\.\d)%, centre box (\d+\.\d)%, "
                       r"whole image (\d+\.\d)%\) in \d+ s")


def test_demo_runs_end_to_end_and_ends_with_its_summary_line(tmp_path):
    out = tmp_path / "demo"
    proc = subprocess.run(
        [sys.executable, "-m", "scm_ray.cli", "demo", "--out", str(out),
         "--num-train", "256", "--num-val", "64", "--num-test", "64",
         "--set", "train.epochs=2", "--set", "scm.start_epoch=1", "--set", "optim.step_milestones=[2]",
         "--set", "data.eval_batch_size=64", "--set", "train.log_every_steps=2"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    match = LAST_LINE.fullmatch(lines[-1])
    assert match, f"last line is not the summary: {lines[-1]!r}"
    assert all(0.0 <= float(v) <= 100.0 for v in match.groups())
    assert (out / "summary.txt").read_text().splitlines()[-1] == lines[-1]  # kept beside the results
    for step in ("1/5", "2/5", "3/5", "4/5", "5/5"):
        assert f"[demo] {step}" in proc.stdout
    assert "[scm-ray] epoch 1 step 2/4 | loss" in output  # in-epoch progress from rank 0
    # DDP looked for unused parameters during the warm-up epoch only (else it warns on every rank)
    assert "find_unused_parameters" not in output and "Traceback" not in output and "ERROR" not in output

    # both models were trained and every checkpoint each run kept was evaluated, with its pictures
    rows = pq.read_table(out / "results" / "results.parquet").to_pylist()
    assert rows and all(row["error"] is None for row in rows)
    scm_runs = [p for p in (out / "runs").glob("demo-2*") if p.is_dir()]
    plain_runs = [p for p in (out / "runs").glob("demo-no-scm-*") if p.is_dir()]
    assert len(scm_runs) == len(plain_runs) == 1
    kept = [p for run in scm_runs + plain_runs for p in run.glob("checkpoint_epoch*") if p.is_dir()]
    assert len(kept) == len(rows) == 4
    for row in rows:  # picture paths are relative to the results folder
        assert (out / "results" / row["curves_png"]).is_file() and (out / "results" / row["cams_png"]).is_file()

    def chosen(run):  # the demo's pick: best held-out (val) GT-Known, reported on test
        mine = [row for row in rows if row["checkpoint"].startswith(str(run))]
        return min(mine, key=lambda row: (-row["val/gt_known"], row["checkpoint"]))["test/gt_known"]

    assert float(match.group(1)) == pytest.approx(chosen(scm_runs[0]), abs=0.05)
    assert float(match.group(2)) == pytest.approx(chosen(plain_runs[0]), abs=0.05)

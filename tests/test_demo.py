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

REPO = Path(__file__).resolve().parents[1]
LAST_LINE = re.compile(r"demo: GT-Known (\d+\.\d)% \(centre box (\d+\.\d)%, whole image (\d+\.\d)%\) in \d+ s")


def test_demo_runs_end_to_end_and_ends_with_its_summary_line(tmp_path):
    out = tmp_path / "demo"
    proc = subprocess.run(
        [sys.executable, "-m", "scm_ray.cli", "demo", "--out", str(out),
         "--num-train", "256", "--num-val", "64", "--num-test", "64",
         "--set", "train.epochs=2", "--set", "data.eval_batch_size=64", "--set", "train.log_every_steps=2"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    match = LAST_LINE.fullmatch(lines[-1])
    assert match, f"last line is not the summary: {lines[-1]!r}"
    assert all(0.0 <= float(v) <= 100.0 for v in match.groups())
    for step in ("1/4", "2/4", "3/4", "4/4"):
        assert f"[demo] {step}" in proc.stdout
    assert "[scm-ray] epoch 1 step 2/4 | loss" in output  # in-epoch progress from rank 0

    # every checkpoint the run kept was evaluated, with its pictures
    rows = pq.read_table(out / "results" / "results.parquet").to_pylist()
    assert rows and all(row["error"] is None for row in rows)
    kept = [p for p in (out / "runs").glob("demo*/checkpoint_epoch*") if p.is_dir()]
    assert len(kept) == len(rows) == 2
    for row in rows:  # picture paths are relative to the results folder
        assert (out / "results" / row["curves_png"]).is_file() and (out / "results" / row["cams_png"]).is_file()
    assert float(match.group(1)) == pytest.approx(max(row["gt_known"] for row in rows), abs=0.05)

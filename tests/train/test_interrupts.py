"""Ctrl-C (SIGINT to the command's process) ends `prepare`, `train` (and `tune`: tests/tune) with one line
saying how to continue, exit 130 and no traceback; what was written before is kept, and
`train` writes its summary with status `interrupted`."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.subprocess_env import interrupt_when

REPO = Path(__file__).resolve().parents[2]
TRAIN = REPO / "jobs" / "configs" / "train_synthetic.yaml"


def _one_interrupt_line(output: str, command: str) -> str:
    lines = [line for line in output.splitlines() if f"scm-ray {command}: interrupted; resume with" in line]
    assert len(lines) == 1 and "Traceback" not in output and "KeyboardInterrupt" not in output, output[-4000:]
    return lines[0]


def test_interrupted_prepare(tmp_path):
    out = tmp_path / "data"
    out.mkdir()
    (out / "notes.txt").write_text("mine\n")
    code, output = interrupt_when(
        ["prepare", "synthetic", "--num-train", "20000", "--num-val", "10", "--num-test", "10",
         "--num-workers", "1", "--out", str(out)],
        lambda: any(p.suffix == ".jpg" for p in (out / "images").rglob("*.jpg")) if (out / "images").exists() else False,
        tmp_path / "prepare.log")
    assert code == 130, output[-3000:]
    assert "the same command" in _one_interrupt_line(output, "prepare")
    assert (out / "notes.txt").read_text() == "mine\n"


@pytest.mark.slow
@pytest.mark.ray
def test_interrupted_train_writes_its_summary(synthetic_dataset, tmp_path):
    run = tmp_path / "runs" / "stopped"
    code, output = interrupt_when(
        ["train", "--config", str(TRAIN), "--set", f"data.root={synthetic_dataset}",
         "--set", f"ray.storage_path={tmp_path / 'runs'}", "--set", "ray.name=stopped",
         "--set", "train.epochs=50", "--set", "ray.num_workers=1", "--set", "model.depth=1",
         "--set", "scm.num_blocks=1", "--set", "scm.iterations=[2]"],
        lambda: (run / "metrics.parquet").is_file(), tmp_path / "train.log")
    assert code == 130, output[-3000:]
    assert "--set ray.name=stopped" in _one_interrupt_line(output, "train")
    summary = (run / "summary.txt").read_text()
    assert "status          interrupted" in summary and "epochs          " in summary
    assert list(run.glob("checkpoint_epoch*")), "the finished epoch's checkpoint is kept"

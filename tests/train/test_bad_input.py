"""Bad input to `scm-ray train` / `scm-ray tune` is refused before Ray starts: exit 2, one
message naming the field and the file, nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest

from scm_ray.cli import main

REPO = Path(__file__).resolve().parents[2]
TRAIN = REPO / "jobs" / "configs" / "train_synthetic.yaml"
TUNE = REPO / "jobs" / "configs" / "tune_synthetic.yaml"


def _no_ray_started() -> bool:
    ray = pytest.importorskip("ray")
    return not ray.is_initialized()


@pytest.mark.parametrize("command, config, key", [("train", TRAIN, "ray.storage_path"),
                                                   ("tune", TUNE, "ray.storage_path"),
                                                   ("tune", TUNE, "search.storage_path")])
def test_storage_that_cannot_be_written(synthetic_dataset, tmp_path, capsys, command, config, key):
    blocker = tmp_path / "runs"
    blocker.write_text("a file, not a folder\n")
    code = main([command, "--config", str(config), "--set", f"data.root={synthetic_dataset}",
                 "--set", f"{key}={blocker}/sub"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert key in err and str(blocker) in err and "not a folder" in err and "Traceback" not in err
    assert blocker.read_text() == "a file, not a folder\n"
    assert _no_ray_started()

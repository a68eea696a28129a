"""Bad input to `scm-ray train` / `scm-ray tune` is refused before Ray starts: exit 2, one
message naming the field and the file, nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest

from scm_ray.cli import main
from tests.subprocess_env import own_ray_env  # noqa: E402

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


def _damaged_copy(dataset: Path, tmp_path: Path, keep_bytes: int | None = None) -> tuple[Path, Path]:
    """A copy of the prepared dataset whose train.beton is cut short (the last `keep_bytes`
    bytes dropped, by default a third of the file)."""
    import shutil

    copy = tmp_path / "data"
    shutil.copytree(dataset, copy)
    beton = copy / "train.beton"
    data = beton.read_bytes()
    beton.write_bytes(data[: keep_bytes if keep_bytes is not None else len(data) * 2 // 3])
    return copy, beton


def test_beton_layout_is_ffcvs():
    from ffcv.types import ALLOC_TABLE_TYPE, CURRENT_VERSION, HeaderType

    from scm_ray.data.ffcv_io import BETON_ALLOCATION, BETON_HEADER, BETON_VERSION

    assert (BETON_HEADER, BETON_ALLOCATION, BETON_VERSION) == (HeaderType, ALLOC_TABLE_TYPE, CURRENT_VERSION)


def test_damaged_or_mismatched_files_are_named(synthetic_dataset, tmp_path):
    import json

    import pyarrow.parquet as pq

    from scm_ray.data.ffcv_io import DataFileError, check_beton, check_prepared_files, read_info

    info = read_info(synthetic_dataset)
    count = info["splits"]["train"]["count"]
    assert check_beton(synthetic_dataset / "train.beton", count) == count
    whole = (synthetic_dataset / "train.beton").read_bytes()
    for keep in (10, 40, len(whole) // 2, len(whole) - 24, len(whole) - 1):
        beton = tmp_path / "train.beton"
        beton.write_bytes(whole[:keep])
        with pytest.raises(DataFileError, match=str(beton)):
            check_beton(beton)  # the structure alone tells, without dataset.json
    copy, beton = _damaged_copy(synthetic_dataset, tmp_path)
    with pytest.raises(DataFileError, match=f"{beton}: .* bytes, but dataset.json recorded"):
        check_prepared_files(copy, read_info(copy), ["train"])
    beton.write_bytes(whole)
    info = read_info(copy)
    info["splits"]["train"]["count"] += 1
    (copy / "dataset.json").write_text(json.dumps(info))
    with pytest.raises(DataFileError, match="records.parquet has .* 'train' records but dataset.json"):
        check_prepared_files(copy, info, ["train"])
    info["splits"]["train"]["count"] -= 1
    records = pq.read_table(copy / "records.parquet")
    pq.write_table(records.slice(1), copy / "records.parquet")
    with pytest.raises(DataFileError, match="records.parquet has"):
        check_prepared_files(copy, info, ["train"])


def test_truncated_beton_is_refused_before_ray(synthetic_dataset, tmp_path, capsys):
    copy, beton = _damaged_copy(synthetic_dataset, tmp_path)
    before = {p: p.read_bytes() for p in copy.iterdir() if p.is_file()}
    code = main(["train", "--config", str(TRAIN), "--set", f"data.root={copy}",
                 "--set", f"ray.storage_path={tmp_path / 'runs'}", "--set", "ray.max_failures=-1"])
    err = capsys.readouterr().err
    assert code == 2 and f"data.root: {beton}" in err and "prepare the dataset again" in err, err
    assert {p: p.read_bytes() for p in copy.iterdir() if p.is_file()} == before
    assert _no_ray_started() and not (tmp_path / "runs").exists()


@pytest.mark.slow
@pytest.mark.ray
def test_a_damaged_file_the_driver_cannot_see_ends_the_run_at_once(synthetic_dataset, tmp_path):
    """Through a URI the driver does not read the files; the workers find the damage, and the
    run ends at the first failure although ray.max_failures=-1 (retry forever)."""
    import subprocess
    import sys

    copy, beton = _damaged_copy(synthetic_dataset, tmp_path)
    cache = tmp_path / "cache"
    env = own_ray_env()
    proc = subprocess.run(
        [sys.executable, "-m", "scm_ray.cli", "train", "--config", str(TRAIN), "--set", f"data.root=file://{copy}",
         "--set", f"data.cache_dir={cache}", "--set", f"ray.storage_path={tmp_path / 'runs'}",
         "--set", "ray.name=damaged", "--set", "ray.max_failures=-1", "--set", "ray.num_workers=1",
         "--set", "model.depth=1", "--set", "scm.num_blocks=1", "--set", "scm.iterations=[2]"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out[-4000:]
    assert "train.beton" in out and "truncated" in out and "not retried" in out, out[-4000:]
    summary = (tmp_path / "runs" / "damaged" / "summary.txt").read_text()
    assert "worker failures 0" in summary and "train.beton" in summary

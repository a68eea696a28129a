"""`scm-ray prepare ...` end to end on tiny inputs, and jobs/prepare_data.py."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from scm_ray.cli import main
from scm_ray.data.records import RecordTable
from tests.data.test_sources import make_cub, make_imagenet, make_wsol

REPO = Path(__file__).resolve().parents[2]


def test_prepare_synthetic_end_to_end(tmp_path, capsys):
    out = tmp_path / "syn"
    args = ["prepare", "synthetic", "--out", str(out), "--num-train", "16", "--num-val", "4", "--num-test", "4",
            "--image-size", "40x32", "--num-classes", "3", "--seed", "2", "--no-progress"]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "records written: 24 (train 16, val 4, test 4)" in text and "records skipped: 0" in text
    assert "40x32" in text and "bytes written" in text
    assert sorted(p.name for p in out.iterdir()) == ["dataset.json", "images", "records.parquet", "test.beton",
                                                    "train.beton", "val.beton"]
    info = json.loads((out / "dataset.json").read_text())
    assert info["num_classes"] == 3 and info["splits"]["val"]["image_size"] == 40
    assert main(args) == 0
    assert "nothing to do" in capsys.readouterr().out
    # The job entry point: same arguments, same code (reuses the complete folder: fast).
    job = subprocess.run([sys.executable, str(REPO / "jobs/prepare_data.py"), *args[1:]], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert job.returncode == 0, job.stderr
    assert "nothing to do" in job.stdout


def test_prepare_cub_reports_skips_and_strict(tmp_path, capsys):
    cub = make_cub(tmp_path / "src")
    (cub / "images/001.Red/img_2.jpg").unlink()
    out = tmp_path / "cub"
    base = ["prepare", "cub", "--root", str(cub), "--out", str(out), "--eval-size", "32", "--no-progress",
            "--num-workers", "1"]
    assert main(base) == 0
    text = capsys.readouterr().out
    assert "records skipped: 1 (missing_image 1)" in text and "images.txt:2" in text
    timing = re.search(r"time: source read and checked in ([0-9.]+) s, files written in ([0-9.]+) s "
                       r"\(this process: ([0-9.]+) CPU-s of packing", text)
    total = float(re.search(r"prepared in ([0-9.]+) s", text).group(1))
    assert timing and abs(float(timing[1]) + float(timing[2]) - total) <= 0.11, text
    table = RecordTable.read(out)
    assert table.count("train") == 3 and table.count("test") == 1 and table.meta["report"]["skipped"] == {"missing_image": 1}
    assert main(base + ["--strict"]) == 1


def test_prepare_skips_a_truncated_jpeg_the_writer_finds_naming_its_annotation_line(tmp_path, capsys):
    """`--verify decode` (the default) reads a JPEG's header in the check and leaves its strict
    decode to the writer: a truncated JPEG is still skipped and reported at its images.txt line,
    the records table and the .beton hold the rest, and the report counts it."""
    cub = make_cub(tmp_path / "src")
    path = cub / "images/003.Blue/img_5.jpg"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # header intact, scan data cut
    out = tmp_path / "cub"
    assert main(["prepare", "cub", "--root", str(cub), "--out", str(out), "--eval-size", "32",
                 "--no-progress", "--num-workers", "1"]) == 0
    text = capsys.readouterr().out
    assert "could not be decoded while writing" in text
    assert "records skipped: 1 (unreadable_image 1)" in text and "records written: 4" in text
    assert "images.txt:5: unreadable_image: images/003.Blue/img_5.jpg" in text and "JPEG" in text
    table = RecordTable.read(out)
    assert table.count("train") + table.count("test") == 4
    assert "images/003.Blue/img_5.jpg" not in {r.path for s in table.splits for r in table.rows(s)}
    assert table.meta["report"]["skipped"] == {"unreadable_image": 1}
    info = json.loads((out / "dataset.json").read_text())
    assert sum(s["count"] for s in info["splits"].values()) == 4
    assert not list(out.glob("*.errors")) and not list(out.glob("*.tmp"))


def test_prepare_missing_annotation_file_exits_1(tmp_path, capsys):
    cub = make_cub(tmp_path / "src")
    (cub / "bounding_boxes.txt").unlink()
    assert main(["prepare", "cub", "--root", str(cub), "--out", str(tmp_path / "o"), "--no-progress"]) == 1
    assert "bounding_boxes.txt" in capsys.readouterr().err


def test_prepare_imagenet_and_wsol_metadata(tmp_path, capsys):
    root = make_imagenet(tmp_path / "ilsvrc", xml=False)
    assert main(["prepare", "imagenet", "--root", str(root), "--out", str(tmp_path / "in"), "--eval-size", "24",
                 "--max-side", "32", "--short-side", "15", "--no-progress", "--num-workers", "1"]) == 0
    info = json.loads((tmp_path / "in/dataset.json").read_text())
    assert info["max_boxes"] == 2 and info["splits"]["test"]["image_size"] == 24
    assert info["splits"]["test"]["num_boxes"] == 3
    # 30x20 -> 22x15, 20x30 -> 15x22, 25x25 -> 15x15, 40x24 -> 25x15: the short side cap binds
    train = info["splits"]["train"]
    assert train["stored_max_size"] == [25, 22] and train["stored_min_size"] == [15, 15]

    images, meta = make_wsol(tmp_path / "wsol")
    names = tmp_path / "names.txt"
    names.write_text("zero\none\n")
    assert main(["prepare", "wsol-metadata", "--root", str(images), "--metadata", str(meta), "--class-names",
                 str(names), "--out", str(tmp_path / "w"), "--eval-size", "16", "--no-progress", "--num-workers", "1"]) == 0
    table = RecordTable.read(tmp_path / "w")
    assert table.classes == ["zero", "one"] and table.splits == ["train", "val"]
    assert "records written: 4" in capsys.readouterr().out

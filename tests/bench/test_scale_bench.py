"""`scm-ray bench scale` end to end at a tiny size: every stage runs for real (prepare of a
generated ILSVRC tree, the bare loop, an FFCV loader epoch, `scm-ray evaluate` on a local Ray)
and the table and the last line come out in their documented form. No timing is asserted."""

from __future__ import annotations

import re

import pytest

from scm_ray.bench.scale import StageResult, read_once, summary_line
from scm_ray.cli import main

LAST = re.compile(r"scale: cost per image x[0-9.]+ at 80 vs 40 images \(prepare\), x[0-9.]+ \(evaluate\); "
                  r"peak RSS \+-?[0-9]+ MiB \(prepare\), \+-?[0-9]+ MiB \(evaluate\); "
                  r"prepare at [0-9.]+ of the bare loop")


@pytest.mark.slow  # FFCV loaders (numba compiles their pipelines) and a local Ray
def test_bench_scale_prints_table_and_last_line(tmp_path, capsys):
    assert main(["bench", "scale", "--sizes", "40,80", "--work", str(tmp_path), "--cores", "2"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert LAST.fullmatch(out[-1]), out[-1]
    rows = [line.split() for line in out if re.match(r"\s*(40|80) (prepare|bare|loader|evaluate) ", line)]
    final = rows[-8:]  # the whole table printed last, before the summary line
    assert [(r[0], r[1]) for r in final] == [(n, s) for n in ("40", "80") for s in ("prepare", "bare", "loader", "evaluate")]
    by = {(r[0], r[1]): r for r in final}
    assert by[("80", "prepare")][2] == "80" and by[("80", "evaluate")][2] == "16"  # 20 % val
    assert all(float(r[8]) > 0 for r in final)  # peak memory was sampled for every stage
    assert (tmp_path / "tree_80" / "LOC_synset_mapping.txt").is_file()
    warmed = [line for line in out if line.startswith("N=80: generated in")]
    assert len(warmed) == 1 and re.fullmatch(r"N=80: generated in [0-9.]+ s, its files read once in [0-9.]+ s "
                                             r"\([0-9]+ MiB; not part of any figure\)", warmed[0]), warmed
    serial = [line for line in out if line.startswith("N=80: prepare's one-process parts:")]
    assert len(serial) == 1 and re.fullmatch(r"N=80: prepare's one-process parts: source [0-9.]+ s \([0-9]+ us/image\), "
                                             r"packing [0-9.]+ CPU-s \([0-9]+ us/image\)", serial[0]), serial


def test_summary_line_keeps_its_form_when_memory_falls():
    """Growth is printed after a fixed "+", so a fall reads "+-N MiB" and still parses as one number."""
    def row(stage: str, n: int, rate: float, peak: float) -> StageResult:
        return StageResult(stage, n, n, 1.0, 1.0, rate, peak, 2)

    results = [row("prepare", 10, 100, 300), row("bare", 10, 200, 100), row("evaluate", 10, 50, 900),
               row("prepare", 40, 125, 295), row("bare", 40, 200, 100), row("evaluate", 40, 50, 920)]
    assert summary_line(results) == ("scale: cost per image x0.80 at 40 vs 10 images (prepare), x1.00 (evaluate); "
                                     "peak RSS +-5 MiB (prepare), +20 MiB (evaluate); prepare at 0.62 of the bare loop")


def test_read_once_reads_every_byte_of_the_tree(tmp_path):
    """The warm-up before prepare and the bare loop reads every file, nested ones too, whole."""
    (tmp_path / "train" / "n01").mkdir(parents=True)
    sizes = {"a.JPEG": 0, "train/b.xml": 10, "train/n01/c.JPEG": (1 << 20) + 7}
    for name, size in sizes.items():
        (tmp_path / name).write_bytes(bytes(range(256)) * (size // 256) + b"x" * (size % 256))
    total, seconds = read_once(tmp_path, chunk=4096)
    assert total == sum(sizes.values()) and seconds >= 0

"""Source -> DIR/records.parquet -> DIR/<split>.beton + DIR/dataset.json, with a summary.

`prepare_synthetic` is what the demo and the tests call: it is idempotent (a fingerprint of every
argument that changes the output is stored in dataset.json, which is written last; a complete
folder with the same fingerprint is left alone).
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from scm_ray.data import synthetic
from scm_ray.data.ffcv_io import INFO_FILE, Encoders, UnreadableImages, WriteOptions, read_info, write_dataset
from scm_ray.data.records import RECORDS_FILE, Record, RecordTable, write_records
from scm_ray.data.report import Report
from scm_ray.data.sources import Conversion

# Bump when the synthetic renderer or the stored layout changes, so old folders are rebuilt.
SYNTHETIC_VERSION = 2


@dataclass
class PrepareSummary:
    """What a prepare run did; `lines()` is the human summary the CLI prints."""

    out_dir: Path
    info: dict[str, Any]
    report: Report = field(default_factory=Report)
    seconds: float = 0.0
    reused: bool = False
    image_bytes: int = 0
    source_seconds: float | None = None  # reading and checking the source (prepare's serial part)
    packing_cpu_seconds: float | None = None  # this process's CPU while the files were written

    def lines(self) -> list[str]:
        info = self.info
        total = sum(s["bytes"] for s in info["splits"].values())
        records = self.out_dir / RECORDS_FILE
        head = "already prepared (same fingerprint), nothing to do" if self.reused else f"prepared in {self.seconds:.1f} s"
        names = info["class_names"]
        out = [
            f"{self.out_dir}: {head}",
            f"  source {info['source']}; {info['num_classes']} classes: "
            + ", ".join(names[:6]) + (" ..." if len(names) > 6 else ""),
            f"  {'split':<10} {'kind':<6} {'images':>8} {'boxes':>8} {'stored size (w x h)':>24} {'bytes':>12}",
        ]
        for name, s in info["splits"].items():
            lo, hi = s["stored_min_size"], s["stored_max_size"]
            size = f"{lo[0]}x{lo[1]}" if lo == hi else f"{lo[0]}x{lo[1]}..{hi[0]}x{hi[1]}"
            out.append(f"  {name:<10} {s['kind']:<6} {s['count']:>8} {s['num_boxes']:>8} {size:>24} {_human(s['bytes']):>12}")
        written = total + (records.stat().st_size if records.is_file() else 0) + self.image_bytes
        out.append(f"  max boxes per image {info['max_boxes']}; bytes written {_human(written)} "
                   f"(.beton {_human(total)}" + (f", JPEGs {_human(self.image_bytes)}" if self.image_bytes else "") + ")")
        if self.source_seconds is not None and self.packing_cpu_seconds is not None:
            writing = self.seconds - self.source_seconds
            out.append(f"  time: source read and checked in {self.source_seconds:.1f} s, files written in "
                       f"{writing:.1f} s (this process: {self.packing_cpu_seconds:.1f} CPU-s of packing, "
                       "the encoding processes the rest)")
        if not self.reused:
            out += ["  " + line for line in self.report.lines()]
        return out


def _human(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def write_prepared(
    conversion: Conversion,
    out_dir: str | Path,
    options: WriteOptions = WriteOptions(),
    *,
    fingerprint: str | None = None,
    progress: bool = True,
    started: float | None = None,
    image_bytes: int = 0,
    encoders: Encoders | None = None,
    source_seconds: float | None = None,
) -> PrepareSummary:
    """Records + one .beton per split + dataset.json for a converted source (`encoders`: see
    write_dataset). `source_seconds`: how long the conversion took, for the summary's time
    line, which also gives this process's CPU time while writing (what does not spread over
    the encoding processes: README "Capacity planning")."""
    started = time.perf_counter() if started is None else started
    cpu = time.process_time()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / INFO_FILE).unlink(missing_ok=True)  # incomplete until rewritten at the end
    try:
        info = _write_all(conversion, out_dir, options, fingerprint, progress, encoders)
    except UnreadableImages as err:
        # JPEGs the check only read the header of (Verify "write") and the writer could not
        # decode: skipped and reported like any unreadable image, then everything written
        # again without them (a rare second pass instead of a second decode of every image).
        conversion = conversion.without(err.failures)
        print(f"{len(err.failures)} images could not be decoded while writing ({err}); writing again "
              "without them", flush=True)
        info = _write_all(conversion, out_dir, options, fingerprint, progress, encoders)
    return PrepareSummary(out_dir, info, conversion.report, time.perf_counter() - started, image_bytes=image_bytes,
                          source_seconds=source_seconds, packing_cpu_seconds=time.process_time() - cpu)


def _write_all(conversion: Conversion, out_dir: Path, options: WriteOptions, fingerprint: str | None,
               progress: bool, encoders: Encoders | None) -> dict[str, Any]:
    if not conversion.records:
        raise ValueError("no valid records to write:\n" + "\n".join(conversion.report.lines()))
    table = write_records(
        out_dir / RECORDS_FILE, conversion.records, source=conversion.source, root=conversion.root,
        class_names=conversion.class_names, extra={"report": conversion.report.to_dict(), **conversion.extra},
    )
    return write_dataset(table, out_dir, options, fingerprint=fingerprint, progress=progress, encoders=encoders)


def fingerprint(payload: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def is_complete(out_dir: Path, expected: str) -> dict[str, Any] | None:
    """dataset.json of a complete folder with this fingerprint (every file present at its
    recorded size), else None."""
    try:
        info = read_info(out_dir)
    except (FileNotFoundError, ValueError, json.JSONDecodeError):
        return None
    if info.get("fingerprint") != expected or not (out_dir / RECORDS_FILE).is_file():
        return None
    for s in info["splits"].values():
        path = out_dir / s["file"]
        if not path.is_file() or path.stat().st_size != s["bytes"]:
            return None
    return info


def _reusable_images(out_dir: Path, spec_meta: dict[str, Any]) -> tuple[list[Record], int] | None:
    """Records (and JPEG bytes) of images already rendered in out_dir for this exact spec."""
    try:
        table = RecordTable.read(out_dir)
    except (FileNotFoundError, ValueError):
        return None
    if table.meta.get("synthetic") != spec_meta:
        return None
    records = [r for split in table.splits for r in table.rows(split)]
    paths = [table.image_path(r) for r in records]
    if not all(p.is_file() for p in paths):
        return None
    for r in records:
        r.index = -1
    return records, sum(p.stat().st_size for p in paths)


def _render_chunk(args: tuple) -> list[tuple]:
    return synthetic.render_chunk(*args)


def _worker_init() -> None:
    import cv2

    cv2.setNumThreads(1)


def generate_synthetic(spec: synthetic.SyntheticSpec, out_dir: Path, num_workers: int = 1,
                       progress: bool = True) -> tuple[list[Record], int]:
    """Render every split's JPEGs into out_dir/images; return the records and the JPEG bytes."""
    jobs = []
    for split in synthetic.SPLITS:
        n = spec.count(split)
        jobs += [(spec, str(out_dir), split, s, min(s + 256, n)) for s in range(0, n, 256)]
    total = sum(spec.count(s) for s in synthetic.SPLITS)
    bar = tqdm(total=total, desc="rendering synthetic images", unit="img", disable=not progress)
    rows: list[tuple] = []
    if num_workers > 1 and total >= 1024:
        # spawn, not fork: a parent that runs threads (a local Ray, torch, a watchdog) can hold
        # a lock at fork time, and the forked renderers then wait on it forever.
        with multiprocessing.get_context("spawn").Pool(num_workers, initializer=_worker_init) as pool:
            for chunk in pool.imap(_render_chunk, jobs):
                rows += chunk
                bar.update(len(chunk))
    else:
        for job in jobs:
            chunk = _render_chunk(job)
            rows += chunk
            bar.update(len(chunk))
    bar.close()
    records = [Record(*row) for row in rows]
    image_bytes = sum((out_dir / r.path).stat().st_size for r in records)
    return records, image_bytes


def prepare_synthetic(
    out_dir: str | Path,
    *,
    num_train: int = 3000,
    num_val: int = 400,
    num_test: int = 400,
    image_size: int | tuple[int, int] = 64,
    num_classes: int = 4,
    seed: int = 0,
    max_objects: int = 1,
    eval_size: int | None = None,
    max_side: int = 512,
    short_side: int | None = None,
    jpeg_quality: int = 90,
    write_mode: str = "jpg",
    num_workers: int = 2,
    progress: bool = True,
    force: bool = False,
) -> PrepareSummary:
    """Generate the synthetic WSOL dataset and prepare it (records + .beton per split).

    Evaluation splits are stored at eval_size x eval_size (default: the image's longest side,
    i.e. no resampling for square images). Idempotent: re-running with the same arguments on a
    complete folder returns at once with `reused=True`; `force` rebuilds.
    """
    started = time.perf_counter()
    out_dir = Path(out_dir)
    spec = synthetic.SyntheticSpec(
        num_train=num_train, num_val=num_val, num_test=num_test, image_size=image_size,
        num_classes=num_classes, seed=seed, max_objects=max_objects,
    )
    options = WriteOptions(
        train_splits=("train",), max_side=max_side, short_side=short_side, eval_size=eval_size or max(spec.size),
        jpeg_quality=jpeg_quality, write_mode=write_mode, num_workers=num_workers,
    )
    # num_workers does not change the output, so it is not part of the fingerprint.
    key = fingerprint({"version": SYNTHETIC_VERSION, "spec": asdict(spec),
                       "options": {k: v for k, v in asdict(options).items() if k != "num_workers"}})
    if not force and (info := is_complete(out_dir, key)) is not None:
        return PrepareSummary(out_dir, info, reused=True)
    (out_dir / INFO_FILE).unlink(missing_ok=True)
    spec_meta = json.loads(json.dumps({"version": SYNTHETIC_VERSION, **asdict(spec)}))
    reused = None if force else _reusable_images(out_dir, spec_meta)
    if reused is not None:  # same images, other storage options: only the .beton files change
        records, image_bytes = reused
    else:
        records, image_bytes = generate_synthetic(spec, out_dir, num_workers, progress)
    report = Report()
    for r in records:
        report.written[r.split] += 1
    conversion = Conversion("synthetic", out_dir, records, synthetic.class_names(num_classes), report,
                            extra={"synthetic": spec_meta})
    return write_prepared(conversion, out_dir, options, fingerprint=key, progress=progress,
                          started=started, image_bytes=image_bytes)

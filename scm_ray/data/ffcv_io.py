"""Record table -> one FFCV .beton per split, plus DIR/dataset.json describing what was written.

Fields of every .beton (FIELDS, in this order):
  image      RGBImageField (JPEG by default). Training splits keep their aspect ratio, the longest
             side capped at `max_side` (and, optionally, the shortest at `short_side`: storing
             at the training resize size makes decoding cheaper); evaluation splits are stored already resized to
             eval_size x eval_size, so the evaluation boxes below are exact, not re-derived.
  label      IntField, 0-based class.
  boxes      NDArrayField float32 (max_boxes, 4): [x0, y0, x1, y1] in stored-image pixels,
             zero-padded after the first box_count rows.
  box_count  IntField.
  orig_size  NDArrayField int32 (2,): original (width, height).
  index      IntField: the row's record index within its split (RecordTable.rows(split)[index]).

FFCV 1.0.2 pitfall handled here: DatasetWriter's parent process waits until its worker processes
have written every sample, so a sample whose __getitem__ raises hangs the writer forever. The
source below therefore never raises: failures go to an error file, a placeholder is written, and
the .beton is deleted afterwards with an error naming the images.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Literal

import numpy as np

from scm_ray.data.images import read_rgb
from scm_ray.data.numba_cache import cache_typed_dict
from scm_ray.data.preprocess import resize_image
from scm_ray.data.records import Record, RecordTable

FIELDS = ("image", "label", "boxes", "box_count", "orig_size", "index")
INFO_FILE = "dataset.json"
INFO_FORMAT = 1
SplitKind = Literal["train", "eval"]


class WriterError(RuntimeError):
    """A split could not be written (an image failed to decode, too many boxes, ...)."""


class UnreadableImages(WriterError):
    """Images that failed to decode while a split was written; `failures` maps each record
    path to why. prepare.write_prepared skips them and writes again."""

    def __init__(self, split: str, out_path: Path, failures: dict[str, str]):
        first = next(iter(failures.items()))
        super().__init__(f"{split}: {len(failures)} images failed while writing {out_path}: {first[0]}: {first[1]}")
        self.failures = failures


class DataFileError(ValueError):
    """A prepared file is damaged or does not match the others (truncated .beton, counts that
    disagree): restarting cannot fix it, preparing the dataset again does."""


# The .beton layout (FFCV 1.x, ffcv/types.py): a fixed header, then field descriptors and one
# metadata row per sample, then data pages, then the allocation table (sample_id, ptr, size)
# from header.alloc_table_ptr to the end of the file. Kept here so the check needs no ffcv
# import (numba compilation costs the driver seconds); tests compare it with FFCV's.
BETON_HEADER = np.dtype([("version", "<u2"), ("num_fields", "<u2"), ("page_size", "<u4"),
                         ("num_samples", "<u8"), ("alloc_table_ptr", "<u8")], align=True)
BETON_ALLOCATION = np.dtype([("sample_id", "<u8"), ("ptr", "<u8"), ("size", "<u8")])
BETON_VERSION = 2


def check_beton(path: str | Path, count: int | None = None, size: int | None = None) -> int:
    """Check a .beton's structure cheaply (header and allocation table, not the pixels) and
    return its sample count; a DataFileError names the file otherwise. `count` and `size` are
    what dataset.json recorded. A truncated file (a copy cut short) would otherwise open and
    fail deep in FFCV (`negative dimensions are not allowed`) on every worker restart."""
    path = Path(path)

    def bad(why: str) -> DataFileError:
        return DataFileError(f"{path}: {why}; prepare the dataset again (`scm-ray prepare ... --out "
                             f"{path.parent}`) or copy the file again")

    actual = path.stat().st_size
    if size is not None and actual != size:
        raise bad(f"{actual} bytes, but dataset.json recorded {size} when it was written (truncated or replaced)")
    with path.open("rb") as stream:
        raw = stream.read(BETON_HEADER.itemsize)
        if len(raw) < BETON_HEADER.itemsize:
            raise bad(f"{actual} bytes, too short for an FFCV header")
        header = np.frombuffer(raw, BETON_HEADER)[0]
        samples, table_at = int(header["num_samples"]), int(header["alloc_table_ptr"])
        if int(header["version"]) != BETON_VERSION or int(header["num_fields"]) != len(FIELDS):
            raise bad(f"not a scm-ray .beton (FFCV version {header['version']}, {header['num_fields']} fields)")
        if count is not None and samples != count:
            raise bad(f"holds {samples} samples, dataset.json says {count}")
        table_bytes = actual - table_at
        if table_bytes <= 0 or table_bytes % BETON_ALLOCATION.itemsize:
            raise bad(f"truncated: its allocation table starts at byte {table_at} of {actual}")
        stream.seek(table_at)
        table = np.frombuffer(stream.read(), BETON_ALLOCATION)
    # Every sample allocates once per variable-size field (image, boxes, ...): equal counts.
    ids = table["sample_id"]
    per_sample = np.bincount(ids, minlength=samples) if len(ids) and int(ids.max()) < samples else None
    if (per_sample is None or per_sample.min() == 0 or per_sample.min() != per_sample.max()
            or int((table["ptr"] + table["size"]).max()) > table_at):
        raise bad("truncated or damaged: its allocation table does not cover every sample's data")
    return samples


def check_prepared_files(root: str | Path, info: dict[str, Any], splits: list[str]) -> None:
    """The splits' .beton files and records.parquet agree with dataset.json (sizes, counts);
    a DataFileError names the file that does not."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    root = Path(root)
    records = root / (info.get("records") or "records.parquet")
    counts = None
    if records.is_file():
        try:
            column = pq.read_table(records, columns=["split"]).column("split")
            counts = {str(k): int(v) for k, v in zip(*pc.value_counts(column).flatten())}
        except Exception as err:  # pyarrow raises several kinds for a damaged file
            raise DataFileError(f"{records}: cannot be read ({err}); prepare the dataset again") from None
    for split in splits:
        entry = info["splits"][split]
        if counts is not None and counts.get(split, 0) != entry["count"]:
            raise DataFileError(f"{records} has {counts.get(split, 0)} {split!r} records but dataset.json "
                                f"says {root / entry['file']} holds {entry['count']}; prepare the dataset again")
        check_beton(root / entry["file"], entry["count"], entry.get("bytes"))


@dataclass(frozen=True)
class WriteOptions:
    """How splits are stored. Splits named in `train_splits` are stored for training; every
    other split is an evaluation split."""

    train_splits: tuple[str, ...] = ("train",)
    max_side: int = 512
    short_side: int | None = None  # also cap the shortest side (e.g. at the training resize size)
    eval_size: int = 224
    jpeg_quality: int = 90
    write_mode: Literal["jpg", "raw"] = "jpg"
    max_boxes: int | None = None  # None: the most boxes on any image of the table
    num_workers: int = 4

    def __post_init__(self) -> None:
        if self.max_side < 8 or self.eval_size < 8:
            raise ValueError(f"max_side and eval_size must be >= 8, got {self.max_side}, {self.eval_size}")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality must be in [1, 100], got {self.jpeg_quality}")
        if self.short_side is not None and self.short_side < 8:
            raise ValueError(f"short_side must be >= 8, got {self.short_side}")
        if self.max_boxes is not None and self.max_boxes < 1:
            raise ValueError(f"max_boxes must be >= 1, got {self.max_boxes}")

    def kind(self, split: str) -> SplitKind:
        return "train" if split in self.train_splits else "eval"


def stored_size(kind: SplitKind, width: int, height: int, max_side: int, eval_size: int,
                short_side: int | None = None) -> tuple[int, int]:
    """(width, height) an image is stored at: never enlarged; longest side <= max_side and, if
    given, shortest side <= short_side."""
    if kind == "eval":
        return eval_size, eval_size
    scale = min(1.0, max_side / max(width, height), (short_side or math.inf) / min(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def scale_boxes(boxes: np.ndarray, src: tuple[int, int], dst: tuple[int, int]) -> np.ndarray:
    """Boxes (K, 4) from a src (w, h) pixel grid to a dst (w, h) grid: x * dst_w / src_w,
    y * dst_h / src_h (the evaluation convention)."""
    sx, sy = dst[0] / src[0], dst[1] / src[1]
    return np.asarray(boxes, np.float64).reshape(-1, 4) * [sx, sy, sx, sy]  # (K, 4) float64


def pixel_grid_boxes(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    """Boxes (K, 4) on a width x height pixel grid as the reference evaluations hold them: every
    coordinate truncated to a whole pixel (wsolevaluation's int(), exact here because the boxes
    are scaled in float64) and x1, y1 clipped to width - 1, height - 1 (the released SCM code).
    Under the +1 IoU convention a fractional or one-past-the-edge corner is a different box."""
    grid = np.floor(np.asarray(boxes, np.float64).reshape(-1, 4))  # (K, 4)
    return np.minimum(grid, [width - 1, height - 1, width - 1, height - 1]).clip(min=0)


class SplitSource:
    """Indexable sample source for ffcv's DatasetWriter (used in forked writer processes)."""

    def __init__(self, root: Path, rows: list[Record], kind: SplitKind, max_side: int, short_side: int | None,
                 eval_size: int, max_boxes: int, error_file: Path):
        self.root, self.rows, self.kind = root, rows, kind
        self.max_side, self.short_side, self.eval_size, self.max_boxes = max_side, short_side, eval_size, max_boxes
        self.error_file = error_file

    def __len__(self) -> int:
        return len(self.rows)

    def load(self, r: Record) -> tuple[np.ndarray, np.ndarray]:
        image = read_rgb(self.root / r.path, strict=True)  # (H, W, 3)
        if image.shape[:2] != (r.height, r.width):
            raise ValueError(f"decoded {image.shape[1]}x{image.shape[0]}, record says {r.width}x{r.height}")
        size = stored_size(self.kind, r.width, r.height, self.max_side, self.eval_size, self.short_side)
        boxes = scale_boxes(r.boxes, (r.width, r.height), size)  # (K, 4)
        if self.kind == "eval":  # scored on this grid: whole pixels, like the reference
            boxes = pixel_grid_boxes(boxes, *size)
        return resize_image(image, size), boxes.astype(np.float32)

    def __getitem__(self, i: int) -> tuple[Any, ...]:
        r = self.rows[i]
        boxes = np.zeros((self.max_boxes, 4), np.float32)  # (max_boxes, 4)
        try:
            image, scaled = self.load(r)
            boxes[: len(scaled)] = scaled
        except Exception as exc:  # never raise: see the module docstring
            with open(self.error_file, "a") as f:
                f.write(json.dumps({"path": r.path, "error": f"{type(exc).__name__}: {exc}"}) + "\n")
            image = np.zeros((8, 8, 3), np.uint8)
        orig = np.array([r.width, r.height], np.int32)
        return image, int(r.label), boxes, int(len(r.boxes)), orig, int(r.index)


@contextlib.contextmanager
def _writer_progress(enabled: bool) -> Iterator[None]:
    """DatasetWriter always draws a tqdm bar; swap in a silent one when progress is off."""
    import ffcv.writer

    original = ffcv.writer.tqdm
    if not enabled:
        ffcv.writer.tqdm = functools.partial(original, disable=True)
    try:
        yield
    finally:
        ffcv.writer.tqdm = original


def write_split(
    table: RecordTable,
    split: str,
    out_path: str | Path,
    kind: SplitKind,
    *,
    max_side: int = 512,
    eval_size: int = 224,
    short_side: int | None = None,
    max_boxes: int | None = None,
    jpeg_quality: int = 90,
    write_mode: Literal["jpg", "raw"] = "jpg",
    num_workers: int = 4,
    progress: bool = True,
) -> dict[str, Any]:
    """Write one split to a .beton (atomically: temp file + rename); return its dataset.json
    entry."""
    cache_typed_dict()
    from ffcv.fields import IntField, NDArrayField, RGBImageField
    from ffcv.writer import DatasetWriter

    out_path = Path(out_path)
    rows = table.rows(split)
    max_boxes = max_boxes or table.max_boxes()
    too_many = [r.path for r in rows if len(r.boxes) > max_boxes]
    if too_many:
        raise WriterError(f"{split}: {len(too_many)} images have more than max_boxes={max_boxes} boxes, "
                          f"e.g. {too_many[0]}; raise max_boxes")
    if not rows:
        raise WriterError(f"{split}: no records to write")
    tmp = out_path.with_name(out_path.name + ".tmp")
    errors = out_path.with_name(out_path.name + ".errors")
    errors.unlink(missing_ok=True)
    fields = {
        "image": RGBImageField(write_mode=write_mode, jpeg_quality=jpeg_quality),
        "label": IntField(),
        "boxes": NDArrayField(np.dtype("float32"), (max_boxes, 4)),
        "box_count": IntField(),
        "orig_size": NDArrayField(np.dtype("int32"), (2,)),
        "index": IntField(),
    }
    # Small page size for small splits: every writer process fills its own pages, so a tiny
    # split with the default 8 MiB pages costs 8 MiB per process on disk.
    page_size = 1 << 21 if len(rows) < 5000 else 1 << 23
    source = SplitSource(table.root, rows, kind, max_side, short_side, eval_size, max_boxes, errors)
    started = time.perf_counter()
    # One process per ~100 images: on tiny splits more only adds half-empty pages and fork time,
    # while from a few hundred images on, every core given must work (bench scale: prepare vs
    # a bare decode-resize-encode loop on the same cores).
    workers = max(1, min(num_workers, len(rows) // 100))
    writer = DatasetWriter(str(tmp), fields, page_size=page_size, num_workers=workers)
    with _writer_progress(progress):
        writer.from_indexed_dataset(source, chunksize=max(1, min(100, len(rows) // workers)))
    if errors.is_file() and errors.stat().st_size:
        failed = [json.loads(line) for line in errors.read_text().splitlines()]
        errors.unlink()
        tmp.unlink(missing_ok=True)
        raise UnreadableImages(split, out_path, {f["path"]: f["error"] for f in failed})
    errors.unlink(missing_ok=True)
    tmp.replace(out_path)
    sizes = np.array([stored_size(kind, r.width, r.height, max_side, eval_size, short_side) for r in rows])  # (n, 2)
    entry: dict[str, Any] = {
        "file": out_path.name,
        "kind": kind,
        "count": len(rows),
        "num_boxes": int(sum(len(r.boxes) for r in rows)),
        "max_boxes": max_boxes,
        "stored_min_size": sizes.min(axis=0).tolist(),
        "stored_max_size": sizes.max(axis=0).tolist(),
        "orig_min_size": [min(r.width for r in rows), min(r.height for r in rows)],
        "orig_max_size": [max(r.width for r in rows), max(r.height for r in rows)],
        "write_mode": write_mode,
        "jpeg_quality": jpeg_quality,
        "bytes": out_path.stat().st_size,
        "seconds": round(time.perf_counter() - started, 2),
    }
    entry.update({"image_size": eval_size} if kind == "eval" else {"max_side": max_side, "short_side": short_side})
    return entry


def write_dataset(
    table: RecordTable,
    out_dir: str | Path,
    options: WriteOptions = WriteOptions(),
    *,
    splits: list[str] | None = None,
    fingerprint: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Write DIR/<split>.beton for every split (or `splits`) and DIR/dataset.json, last, so a
    folder with a dataset.json is complete. Returns the dataset.json content."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    max_boxes = options.max_boxes or table.max_boxes()
    entries = {}
    for split in splits or table.splits:
        if progress:
            print(f"writing {split}.beton ({table.count(split)} images, {options.kind(split)})", flush=True)
        entries[split] = write_split(
            table, split, out_dir / f"{split}.beton", options.kind(split),
            max_side=options.max_side, eval_size=options.eval_size, short_side=options.short_side, max_boxes=max_boxes,
            jpeg_quality=options.jpeg_quality, write_mode=options.write_mode, num_workers=options.num_workers,
            progress=progress,
        )
    records_path = table.path.resolve() if table.path else None
    info = {
        "format": INFO_FORMAT,
        "fingerprint": fingerprint,
        "source": table.source,
        "records": os.path.relpath(records_path, out_dir.resolve()) if records_path else None,
        "num_classes": table.num_classes,
        "class_names": table.classes,
        "max_boxes": max_boxes,
        "fields": list(FIELDS),
        "box_format": "x0,y0,x1,y1 in stored-image pixels",
        "splits": entries,
    }
    write_info(out_dir, info)
    return info


def write_info(out_dir: Path, info: dict[str, Any]) -> None:
    tmp = out_dir / (INFO_FILE + ".tmp")
    tmp.write_text(json.dumps(info, indent=1))
    tmp.replace(out_dir / INFO_FILE)


def read_info(path: str | Path) -> dict[str, Any]:
    """dataset.json of a prepared folder (`path` is the folder, the json, or a .beton in it)."""
    path = Path(path)
    if path.suffix == ".beton":
        path = path.parent
    if path.is_dir():
        path = path / INFO_FILE
    if not path.is_file():
        raise FileNotFoundError(f"dataset description not found: {path} (run `scm-ray prepare` first)")
    info = json.loads(path.read_text())
    if info.get("format") != INFO_FORMAT:
        raise ValueError(f"{path}: dataset.json format {info.get('format')}, this code reads {INFO_FORMAT}")
    return info


def check_split(info: dict[str, Any], split: str, *, kind: SplitKind | None = None,
                eval_size: int | None = None, num_classes: int | None = None) -> dict[str, Any]:
    """The split's dataset.json entry, after checking it is what the caller was built for;
    a mismatch (e.g. a model evaluating at 224 px on a split stored at 64 px) is an error here
    rather than silently wrong boxes later."""
    if split not in info["splits"]:
        raise ValueError(f"split {split!r} was not prepared; prepared: {sorted(info['splits'])}")
    entry = info["splits"][split]
    if kind is not None and entry["kind"] != kind:
        raise ValueError(f"split {split!r} is stored for {entry['kind']}, not {kind}")
    if eval_size is not None and entry["kind"] == "eval" and entry["image_size"] != eval_size:
        raise ValueError(f"split {split!r} is stored at {entry['image_size']} px, expected {eval_size}; "
                         "prepare it again with that evaluation size")
    if num_classes is not None and info["num_classes"] != num_classes:
        raise ValueError(f"dataset has {info['num_classes']} classes, the model {num_classes}")
    return entry

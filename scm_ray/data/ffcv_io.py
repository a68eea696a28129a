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

The files are written by data/beton.py (FFCV's layout, byte for byte, without FFCV's writer):
spawned processes decode, resize and encode chunks of records in order while this process packs
them into pages. An image that cannot be decoded is reported by path, never a hang (FFCV 1.0.2's
DatasetWriter waits forever for a sample whose worker raised).
"""

from __future__ import annotations

import itertools
import json
import math
import os
import pickle
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Literal

import cv2
import numpy as np
from tqdm import tqdm

from scm_ray.data import beton
from scm_ray.data.images import read_image
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


# check_beton reads the .beton layout with data/beton.py's dtypes: no ffcv import (numba
# compilation costs seconds); tests compare them with FFCV's.
BETON_HEADER, BETON_ALLOCATION, BETON_VERSION = beton.HEADER, beton.ALLOCATION, beton.VERSION


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


@dataclass(frozen=True)
class SplitPlan:
    """How one split's images are stored: all an encoding worker needs besides the records."""

    root: str
    kind: SplitKind
    max_side: int
    short_side: int | None
    eval_size: int
    max_boxes: int
    jpeg_quality: int
    write_mode: Literal["jpg", "raw"]

    def encode(self, r: Record) -> tuple:
        """A record -> its .beton field values (FIELDS order)."""
        # BGR: OpenCV's JPEG encoder takes it, and the resize does not mix channels, so this is
        # FFCV's RGBImageField encoding (RGB -> BGR -> imencode) without the two channel swaps
        image = read_image(Path(self.root) / r.path, strict=True, order="BGR")  # (H, W, 3)
        if image.shape[:2] != (r.height, r.width):
            raise ValueError(f"decoded {image.shape[1]}x{image.shape[0]}, record says {r.width}x{r.height}")
        size = stored_size(self.kind, r.width, r.height, self.max_side, self.eval_size, self.short_side)
        scaled = scale_boxes(r.boxes, (r.width, r.height), size)  # (K, 4)
        if self.kind == "eval":  # scored on this grid: whole pixels, like the reference
            scaled = pixel_grid_boxes(scaled, *size)
        boxes = np.zeros((self.max_boxes, 4), np.float32)  # (max_boxes, 4), zero rows after K
        boxes[: len(scaled)] = scaled
        image = resize_image(image, size)  # (h, w, 3) BGR
        if self.write_mode == "jpg":
            ok, data = cv2.imencode(".jpg", image, [int(cv2.IMWRITE_JPEG_QUALITY), self.jpeg_quality])
            if not ok:
                raise ValueError("JPEG encoding failed")
            stored = beton.Image(data.tobytes(), size[0], size[1], "jpg")
        else:  # raw pixels are stored RGB
            stored = beton.Image(cv2.cvtColor(image, cv2.COLOR_BGR2RGB).tobytes(), size[0], size[1], "raw")
        orig = np.array([r.width, r.height], np.int32)
        return stored, int(r.label), boxes, int(len(r.boxes)), orig, int(r.index)


def encode_chunk(task: tuple[SplitPlan, list[Record]]) -> list[tuple[tuple | None, tuple[str, str] | None]]:
    """(values, None) per record, or (None, (path, why)) for an image that cannot be decoded.
    Arrays travel as their bytes (the writer takes either; bytes pickle faster)."""
    plan, rows = task
    out = []
    for r in rows:
        try:
            out.append((tuple(v.tobytes() if isinstance(v, np.ndarray) else v for v in plan.encode(r)), None))
        except Exception as exc:  # reported by path, the split is written again without it
            out.append((None, (r.path, f"{type(exc).__name__}: {exc}")))
    return out


def _fields(max_boxes: int) -> list[beton.Field]:
    return [beton.Field("image", beton.RGB_FIELD), beton.Field("label", beton.INT_FIELD),
            beton.Field("boxes", beton.NDARRAY_FIELD, np.dtype("float32"), (max_boxes, 4)),
            beton.Field("box_count", beton.INT_FIELD),
            beton.Field("orig_size", beton.NDARRAY_FIELD, np.dtype("int32"), (2,)),
            beton.Field("index", beton.INT_FIELD)]


# Records per task handed to an encoding process, and tasks in flight per process: enough to
# keep every process busy while the parent packs pages, few enough to bound what waits in memory.
CHUNK, IN_FLIGHT_PER_WORKER = 32, 8


class Encoders:
    """The processes that decode, resize and encode records for the writer (encode_chunk), their
    results handed back in order. A context manager; prepare starts it before it parses the
    source, so the processes' start-up overlaps that work. One worker encodes in this process.

    Why not multiprocessing.Pool: its task and result threads, and one pickled bytes object per
    image, cost the parent ~135 us an image (measured on 8,000 ImageNet-shaped images), and the
    parent is the one process of a prepare that more cores do not help (README, "Capacity
    planning"). Here each process has its own pipe; its tasks go out in turn, a chunk's images
    come back as one blob beside a small pickled header, and the parent reads whichever pipe is
    ready into a reorder buffer: ~50 us an image. A process that dies is an error, not a hang."""

    def __init__(self, workers: int):
        self.workers = max(1, workers)
        self.pipes: list = []
        self.processes: list = []

    def __enter__(self) -> Encoders:
        if self.workers > 1:
            import multiprocessing

            # spawn, not fork: the parent may run threads (a local Ray, a progress bar) whose
            # locks a forked child would inherit held.
            context = multiprocessing.get_context("spawn")
            for _ in range(self.workers):
                mine, theirs = context.Pipe()
                process = context.Process(target=_encode_loop, args=(theirs,), daemon=True)
                process.start()
                theirs.close()
                self.pipes.append(mine)
                self.processes.append(process)
        return self

    def __exit__(self, exc_type, *_) -> None:
        # after an error or Ctrl-C the processes may be mid-task with results nobody will read:
        # ended at once; after the work, asked to stop
        for pipe in self.pipes if exc_type is None else ():
            try:
                pipe.send_bytes(b"")
            except OSError:
                pass
        for process in self.processes:
            process.join(timeout=5 if exc_type is None else 0)
            if process.is_alive():
                process.terminate()
                process.join()
        for pipe in self.pipes:
            pipe.close()
        self.pipes, self.processes = [], []

    def map(self, tasks: Iterable[tuple[SplitPlan, list[Record]]]) -> Iterator[list]:
        """encode_chunk of every task, in order, at most IN_FLIGHT_PER_WORKER tasks per process
        ahead of the caller."""
        if not self.pipes:
            yield from map(encode_chunk, tasks)
            return
        from multiprocessing.connection import wait

        todo, sent, ready = iter(tasks), 0, {}
        waiting = dict.fromkeys(self.pipes, 0)  # pipe -> its tasks not yet answered

        def send() -> None:
            nonlocal sent
            if (task := next(todo, None)) is not None:
                pipe = self.pipes[sent % len(self.pipes)]
                try:
                    pipe.send_bytes(pickle.dumps((sent, task), pickle.HIGHEST_PROTOCOL))
                except OSError:
                    raise self._lost() from None
                waiting[pipe] += 1
                sent += 1

        for _ in range(len(self.pipes) * IN_FLIGHT_PER_WORKER):
            send()
        for done in itertools.count():
            if done == sent:
                return
            while done not in ready:
                for pipe in wait([p for p, n in waiting.items() if n]):
                    number, result = self._receive(pipe)
                    waiting[pipe] -= 1
                    ready[number] = result
            send()
            yield ready.pop(done)

    def _receive(self, pipe) -> tuple[int, list]:
        try:
            number, header = pickle.loads(pipe.recv_bytes())
            blob = memoryview(pipe.recv_bytes())
        except (EOFError, OSError):
            raise self._lost() from None
        return number, _unpack(header, blob)

    def _lost(self) -> WriterError:
        for process in self.processes:
            process.join(timeout=1)  # an exit code to report
        codes = [p.exitcode for p in self.processes]
        return WriterError(f"an image-encoding process ended unexpectedly (exit codes {codes}; "
                           "-9: killed, e.g. out of memory)")


def _encode_loop(pipe) -> None:
    """An encoding process: tasks in, results out (header, then the chunk's images as one blob),
    until an empty message or the parent's end."""
    import signal

    cv2.setNumThreads(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle (it stops us)
    while True:
        try:
            message = pipe.recv_bytes()
        except (EOFError, OSError):
            return
        if not message:
            return
        number, task = pickle.loads(message)
        header, blob = _pack(encode_chunk(task))
        pipe.send_bytes(pickle.dumps((number, header), pickle.HIGHEST_PROTOCOL))
        pipe.send_bytes(blob)


def _pack(results: list) -> tuple[list, bytes]:
    """encode_chunk's results as (header, blob): each stored image's data moves to the blob,
    its place in the header keeps (width, height, mode, byte count) and the other fields."""
    header = []
    for values, failure in results:
        if values is None:
            header.append((None, failure))
        else:
            image = values[0]
            header.append(((image.width, image.height, image.mode, len(image.data)) + values[1:], None))
    return header, b"".join(values[0].data for values, _ in results if values is not None)


def _unpack(header: list, blob: memoryview) -> list:
    """_pack undone; each image's data is a view of the blob (no copy until the page)."""
    out, at = [], 0
    for values, failure in header:
        if values is None:
            out.append((None, failure))
            continue
        width, height, mode, size = values[:4]
        out.append(((beton.Image(blob[at:at + size], width, height, mode), *values[4:]), None))
        at += size
    return out


def _page_size(count: int) -> int:
    """2 MiB pages for small splits (their last, mostly empty page is on disk too), 8 MiB else."""
    return 1 << 21 if count < 5000 else 1 << 23


def _write_splits(table: RecordTable, targets: dict[str, tuple[Path, SplitKind]], options: WriteOptions,
                  max_boxes: int, progress: bool, encoders: Encoders | None = None) -> dict[str, dict[str, Any]]:
    """Every target split in one pass of the encoding processes (the next split's images are
    encoded while this one's last pages are written); each file atomically (temp + rename).
    Records are read from the table a chunk at a time, so memory does not grow with the splits.
    Images that fail to decode are collected over every split and raised together at the end
    as UnreadableImages (their splits are not written)."""
    for split in targets:
        _check_boxes(table.split_table(split), split, max_boxes)
    if encoders is None:  # one process per ~100 images: on tiny splits more only costs start-up
        with Encoders(min(options.num_workers, sum(table.count(s) for s in targets) // 100)) as own:
            return _write_splits(table, targets, options, max_boxes, progress, own)
    plans = {split: SplitPlan(str(table.root), kind, options.max_side, options.short_side, options.eval_size,
                              max_boxes, options.jpeg_quality, options.write_mode)
             for split, (_, kind) in targets.items()}
    results = encoders.map((plans[split], chunk) for split in targets for chunk in table.chunks(split, CHUNK))
    entries, failures, failed_splits = {}, {}, []
    for split, (path, kind) in targets.items():
        count = table.count(split)
        if progress:
            print(f"writing {path.name} ({count} images, {kind})", flush=True)
        started = time.perf_counter()
        failed, stored = _write_one(path, count, results, max_boxes, progress)
        if failed:
            failures.update(failed)
            failed_splits.append(split)
            continue
        entries[split] = _entry(path, table.split_table(split), plans[split], stored, time.perf_counter() - started)
    if failures:
        raise UnreadableImages(", ".join(failed_splits), Path(next(iter(targets.values()))[0]).parent, failures)
    return entries


def _check_boxes(part, split: str, max_boxes: int) -> None:
    """A split with no records, or an image with more boxes than the file has slots, is a
    WriterError before anything is written."""
    import pyarrow.compute as pc

    if not part.num_rows:
        raise WriterError(f"{split}: no records to write")
    over = pc.greater(pc.list_value_length(part["boxes"]), max_boxes)
    if too_many := pc.sum(over).as_py():
        first = part.filter(over)["path"][0].as_py()
        raise WriterError(f"{split}: {too_many} images have more than max_boxes={max_boxes} boxes, "
                          f"e.g. {first}; raise max_boxes")


def _write_one(path: Path, count: int, results: Iterator[list], max_boxes: int,
               progress: bool) -> tuple[dict[str, str], list[list[int]]]:
    """One split's .beton from its share of `results`: ({path: why} of images that failed, in
    which case the file is not written; [smallest (w, h), largest (w, h)] stored)."""
    tmp = path.with_name(path.name + ".tmp")
    failures: dict[str, str] = {}
    low, high = [math.inf, math.inf], [0, 0]  # stored (w, h), each side on its own
    bar = tqdm(total=count, desc=f"  {path.name}", unit="img", disable=not progress, leave=False)
    done = 0
    try:
        with beton.BetonWriter(tmp, _fields(max_boxes), count, _page_size(count)) as writer:
            while done < count:
                for values, failure in next(results):
                    done += 1
                    if failure is not None:
                        failures[failure[0]] = failure[1]
                    elif not failures:
                        writer.add(values)
                        size = (values[0].width, values[0].height)
                        low, high = list(map(min, low, size)), list(map(max, high, size))
                bar.update(done - bar.n)
            if failures:
                raise _SplitFailed
    except _SplitFailed:
        tmp.unlink(missing_ok=True)
        return failures, [low, high]
    except ValueError as err:  # a field that does not fit a page, ...
        tmp.unlink(missing_ok=True)
        raise WriterError(str(err)) from None
    except BaseException:  # Ctrl-C, a lost encoding process: no half file left behind
        tmp.unlink(missing_ok=True)
        raise
    finally:
        bar.close()
    tmp.replace(path)
    return {}, [low, high]


class _SplitFailed(Exception):
    """Some images of the split could not be decoded: its file is abandoned."""


def _entry(path: Path, part, plan: SplitPlan, stored: list[list[int]], seconds: float) -> dict[str, Any]:
    """The split's dataset.json entry (`part`: its rows of the record table)."""
    import pyarrow.compute as pc

    width, height = pc.min_max(part["width"]).as_py(), pc.min_max(part["height"]).as_py()
    entry: dict[str, Any] = {
        "file": path.name,
        "kind": plan.kind,
        "count": part.num_rows,
        "num_boxes": int(pc.sum(pc.list_value_length(part["boxes"])).as_py() or 0),
        "max_boxes": plan.max_boxes,
        "stored_min_size": stored[0],
        "stored_max_size": stored[1],
        "orig_min_size": [width["min"], height["min"]],
        "orig_max_size": [width["max"], height["max"]],
        "write_mode": plan.write_mode,
        "jpeg_quality": plan.jpeg_quality,
        "bytes": path.stat().st_size,
        "seconds": round(seconds, 2),
    }
    entry.update({"image_size": plan.eval_size} if plan.kind == "eval"
                 else {"max_side": plan.max_side, "short_side": plan.short_side})
    return entry


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
    entry. write_dataset writes every split in one pass."""
    options = WriteOptions(train_splits=(split,) if kind == "train" else (), max_side=max_side,
                           short_side=short_side, eval_size=eval_size, jpeg_quality=jpeg_quality,
                           write_mode=write_mode, num_workers=num_workers)
    targets = {split: (Path(out_path), kind)}
    return _write_splits(table, targets, options, max_boxes or table.max_boxes(), progress)[split]


def write_dataset(
    table: RecordTable,
    out_dir: str | Path,
    options: WriteOptions = WriteOptions(),
    *,
    splits: list[str] | None = None,
    fingerprint: str | None = None,
    progress: bool = True,
    encoders: Encoders | None = None,
) -> dict[str, Any]:
    """Write DIR/<split>.beton for every split (or `splits`) and DIR/dataset.json, last, so a
    folder with a dataset.json is complete. Returns the dataset.json content. `encoders`:
    processes already started (else started here, as many as the images need)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    max_boxes = options.max_boxes or table.max_boxes()
    targets = {split: (out_dir / f"{split}.beton", options.kind(split)) for split in splits or table.splits}
    entries = _write_splits(table, targets, options, max_boxes, progress, encoders)
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

"""The canonical record table (docs/data-formats.md): one Parquet file, one row per image, every
source converted to it, every later stage (the .beton writer, evaluation) reading only it.

Columns: path (relative to the image root), label (0-based), split, width, height (original
pixels) and boxes (list of [x0, y0, x1, y1] in original pixels; several per image for ILSVRC).
A JSON metadata block in the Parquet schema carries what a row cannot: the source, the image
root, the class names, per-split counts and the conversion report.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

FORMAT_VERSION = 1
META_KEY = b"scm_ray.records"
RECORDS_FILE = "records.parquet"

SCHEMA = pa.schema(
    [
        pa.field("path", pa.string(), nullable=False),
        pa.field("label", pa.int64(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("width", pa.int32(), nullable=False),
        pa.field("height", pa.int32(), nullable=False),
        pa.field("boxes", pa.list_(pa.list_(pa.float32())), nullable=False),
    ]
)


class RecordError(ValueError):
    """A record table is malformed or does not match what the caller needs."""


@dataclass(slots=True)
class Record:
    """One image. `boxes` is (K, 4) float32 [x0, y0, x1, y1] in original pixels (K may be 0 for
    training images of sources without training boxes). `index` is the row's position within
    its split (the record index stored in the .beton), -1 before the table is written."""

    path: str
    label: int
    split: str
    width: int
    height: int
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    index: int = -1

    def __post_init__(self) -> None:
        boxes = np.asarray(self.boxes, np.float32)
        if boxes.size == 0:
            self.boxes = _NO_BOXES  # most training images: one shared array, not one per record
        elif boxes.ndim != 2 or boxes.shape[1] != 4:
            self.boxes = boxes.reshape(-1, 4)  # (K, 4)
        else:
            self.boxes = boxes  # (K, 4) already: no second array object (a view) per record


_NO_BOXES = np.zeros((0, 4), np.float32)
_NO_BOXES.flags.writeable = False  # shared by every record without boxes


def _to_table(records: Sequence[Record]) -> pa.Table:
    columns = {
        "path": [r.path for r in records],
        "label": [int(r.label) for r in records],
        "split": [r.split for r in records],
        "width": [int(r.width) for r in records],
        "height": [int(r.height) for r in records],
        "boxes": [r.boxes.tolist() for r in records],
    }
    return pa.Table.from_pydict(columns, schema=SCHEMA)


def _check(records: Sequence[Record], num_classes: int) -> None:
    """Refuse a table the loaders would silently mis-handle; sources report bad input long
    before this, so a failure here is a bug in the caller."""
    seen: set[tuple[str, str]] = set()
    for i, r in enumerate(records):
        where = f"record {i} ({r.split}/{r.path})"
        if not 0 <= r.label < num_classes:
            raise RecordError(f"{where}: label {r.label} outside [0, {num_classes})")
        if r.width < 1 or r.height < 1:
            raise RecordError(f"{where}: size {r.width}x{r.height}")
        if (r.split, r.path) in seen:
            raise RecordError(f"{where}: duplicate path in split")
        seen.add((r.split, r.path))
        b = r.boxes
        if len(b) and not (
            np.all(b[:, 0] >= 0) and np.all(b[:, 1] >= 0) and np.all(b[:, 2] > b[:, 0])
            and np.all(b[:, 3] > b[:, 1]) and np.all(b[:, 2] <= r.width)
            and np.all(b[:, 3] <= r.height)
        ):
            raise RecordError(f"{where}: box outside the {r.width}x{r.height} image: {b.tolist()}")


def _split_order(records: Iterable[Record]) -> list[str]:
    order: list[str] = []
    for r in records:
        if r.split not in order:
            order.append(r.split)
    return order


def write_records(
    path: str | Path,
    records: Sequence[Record],
    *,
    source: str,
    root: str | Path,
    class_names: Sequence[str],
    extra: dict[str, Any] | None = None,
) -> "RecordTable":
    """Write the table atomically (temp file + rename) and return it as read back.

    `root` is the folder image paths are relative to; it is stored relative to the Parquet
    file's folder when inside it, so a dataset folder that holds its own images can move.
    """
    path = Path(path)
    _check(records, len(class_names))
    root = Path(root).resolve()
    try:
        root_text = os.path.relpath(root, path.parent.resolve())
        if root_text.startswith(".."):
            root_text = str(root)
    except ValueError:  # different drives
        root_text = str(root)
    splits = _split_order(records)
    meta = {
        "format": FORMAT_VERSION,
        "source": source,
        "root": root_text,
        "class_names": list(class_names),
        "splits": splits,
        "counts": {s: sum(r.split == s for r in records) for s in splits},
        "num_boxes": {s: int(sum(len(r.boxes) for r in records if r.split == s)) for s in splits},
        **(extra or {}),
    }
    table = _to_table(records)
    table = table.replace_schema_metadata({META_KEY: json.dumps(meta).encode()})
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, tmp)
    tmp.replace(path)
    return RecordTable(table, meta, path)


class RecordTable:
    """Read side of records.parquet: what training, evaluation and the .beton writer need.

    >>> table = RecordTable.read("data/synthetic/records.parquet")
    >>> table.classes, table.splits, len(table.rows("test")), table.root
    """

    def __init__(self, table: pa.Table, meta: dict[str, Any], path: Path | None = None):
        self.table = table
        self.meta = meta
        self.path = path
        self._rows: dict[str, list[Record]] = {}

    @classmethod
    def read(cls, path: str | Path) -> "RecordTable":
        """Read a records.parquet file (or the dataset folder holding one)."""
        path = Path(path)
        if path.is_dir():
            path = path / RECORDS_FILE
        if not path.is_file():
            raise FileNotFoundError(f"record table not found: {path}")
        table = pq.read_table(path)
        raw = (table.schema.metadata or {}).get(META_KEY)
        if raw is None:
            raise RecordError(f"{path}: no {META_KEY.decode()} metadata block; not a scm-ray record table")
        meta = json.loads(raw)
        if meta.get("format") != FORMAT_VERSION:
            raise RecordError(f"{path}: record format {meta.get('format')}, this code reads {FORMAT_VERSION}")
        missing = [n for n in SCHEMA.names if n not in table.schema.names]
        if missing:
            raise RecordError(f"{path}: missing columns {missing}")
        return cls(table.select(SCHEMA.names).cast(SCHEMA), meta, path)

    @property
    def classes(self) -> list[str]:
        return list(self.meta["class_names"])

    @property
    def num_classes(self) -> int:
        return len(self.meta["class_names"])

    @property
    def splits(self) -> list[str]:
        return list(self.meta["splits"])

    @property
    def source(self) -> str:
        return str(self.meta["source"])

    @property
    def root(self) -> Path:
        """Absolute image root."""
        root = Path(self.meta["root"])
        if not root.is_absolute() and self.path is not None:
            root = (self.path.parent / root).resolve()
        return root

    def __len__(self) -> int:
        return self.table.num_rows

    def count(self, split: str) -> int:
        return int(self.meta["counts"].get(split, 0))

    def _require(self, split: str) -> None:
        if split not in self.meta["splits"]:
            raise KeyError(f"split {split!r} not in the record table; it has {self.splits}")

    def split_table(self, split: str) -> pa.Table:
        """The split's rows as an Arrow table, in record-index order."""
        self._require(split)
        mask = pc.equal(self.table["split"], split)
        return self.table.filter(mask)

    def rows(self, split: str) -> list[Record]:
        """The split's records in record-index order (row i has index i); cached."""
        if split not in self._rows:
            self._rows[split] = [r for chunk in self.chunks(split, 1 << 16) for r in chunk]
        return self._rows[split]

    def chunks(self, split: str, size: int) -> Iterator[list[Record]]:
        """The split's records in record-index order, `size` at a time, each made as it is read:
        a pass over ImageNet's 1.28 M records need not hold them all as Python objects (rows()
        does, ~3 KB each)."""
        part = self.split_table(split)
        for start in range(0, part.num_rows, size):
            t = part.slice(start, size).to_pydict()
            yield [Record(p, lab, split, w, h, np.asarray(b, np.float32).reshape(-1, 4), start + i)
                   for i, (p, lab, w, h, b) in enumerate(zip(t["path"], t["label"], t["width"], t["height"],
                                                             t["boxes"]))]

    def image_path(self, record: Record) -> Path:
        return self.root / record.path

    def max_boxes(self) -> int:
        """Most boxes on one image over all splits (at least 1)."""
        counts = pc.list_value_length(self.table["boxes"])
        return max(1, int(pc.max(counts).as_py() or 0))


"""The FFCV 1.x .beton layout, and a writer that produces it without FFCV's DatasetWriter.

Why our own writer: FFCV's writer needs `import ffcv` (which imports torch: ~2 s per prepare),
runs each split with its own pool of forked processes and a parent that polls every 0.1 s, and
packs every sample through per-field Python calls. Here worker processes only decode, resize and
encode (data/ffcv_io.py); one parent process packs the encoded samples into pages in sample order
while the workers go on, across splits. The bytes are the same as FFCV's writer with one worker
(tests/data/test_beton.py compares them), so FFCV's Loader and Reader read these files unchanged.

Layout (FFCV 1.x, ffcv/types.py and ffcv/writer.py):
  header               HEADER, alloc_table_ptr filled in last
  field descriptors    one FIELD_DESC per field: type id, name, field arguments
  metadata             one row per sample (metadata_dtype): scalars inline, pointers to data
  zeros                up to the next multiple of page_size
  pages                page_size bytes each; a sample's data never spans two pages
  allocation table     (sample_id, ptr, size) per data region, in allocation order
"""

from __future__ import annotations

import json
import mmap
import os
import shutil
import struct
from pathlib import Path
from typing import NamedTuple

import numpy as np

HEADER = np.dtype([("version", "<u2"), ("num_fields", "<u2"), ("page_size", "<u4"),
                   ("num_samples", "<u8"), ("alloc_table_ptr", "<u8")], align=True)
ALLOCATION = np.dtype([("sample_id", "<u8"), ("ptr", "<u8"), ("size", "<u8")])
FIELD_DESC = np.dtype([("type_id", "<u1"), ("name", ("<u1", 16)), ("arguments", ("<u1", (1024,)))], align=True)
VERSION = 2
MIN_PAGE_SIZE = 1 << 21

# FFCV's field type ids, and the image field's metadata and storage modes.
INT_FIELD, RGB_FIELD, NDARRAY_FIELD = 1, 2, 4
RGB_METADATA = np.dtype([("mode", "<u1"), ("width", "<u2"), ("height", "<u2"), ("data_ptr", "<u8")])
IMAGE_MODES = {"jpg": 0, "raw": 1}
_NDARRAY_ARGS = np.dtype([("shape", "<u8", 32), ("type_length", "<u8")])


class Field(NamedTuple):
    """One field of a .beton: its FFCV type, and for an NDArrayField its dtype and shape."""

    name: str
    type_id: int
    dtype: np.dtype | None = None
    shape: tuple[int, ...] = ()

    @property
    def metadata(self) -> np.dtype:
        """The field's part of a metadata row: the value (int), or a pointer to its data."""
        return {INT_FIELD: np.dtype("<i8"), RGB_FIELD: RGB_METADATA, NDARRAY_FIELD: np.dtype("<u8")}[self.type_id]

    @property
    def nbytes(self) -> int:
        return int(self.dtype.itemsize * np.prod(self.shape)) if self.type_id == NDARRAY_FIELD else 0

    def descriptor(self) -> np.ndarray:
        """The field's FIELD_DESC row (an NDArrayField's arguments: its shape, then its dtype as
        JSON, as FFCV's NDArrayField.from_binary reads them)."""
        row = np.zeros((), FIELD_DESC)
        name = np.frombuffer(self.name.encode("ascii")[:16], "<u1")
        row["type_id"], row["name"][: len(name)] = self.type_id, name
        if self.type_id == NDARRAY_FIELD:
            args = np.zeros((), _NDARRAY_ARGS)
            args["shape"][: len(self.shape)] = self.shape
            kind = np.frombuffer(json.dumps(self.dtype.descr).encode("ascii"), "<u1")
            args["type_length"] = len(kind)
            packed = np.concatenate([np.atleast_1d(args).view("<u1"), kind])
            row["arguments"][: len(packed)] = packed
        return row


def metadata_dtype(fields: list[Field]) -> np.dtype:
    """A metadata row: the fields' parts side by side, C-aligned, named f0, f1, ... (FFCV's)."""
    return np.dtype([("", f.metadata) for f in fields], align=True)


class Image(NamedTuple):
    """An image as stored: JPEG bytes (mode "jpg") or raw RGB bytes (mode "raw"), or a view of them."""

    data: bytes | memoryview
    width: int
    height: int
    mode: str = "jpg"


def _align(offset: int, page_size: int) -> int:
    return -(-offset // page_size) * page_size


class _PageFull(Exception):
    """Part of a sample went to a page that then filled up: the sample starts again."""


_TABLE_BATCH = 1 << 14  # allocation-table rows held before they go to the side file (24 bytes each)


def _blob(field: Field, nbytes: int, value) -> bytes:
    """The bytes a data-holding field stores: an Image's data, an NDArrayField's array (or the
    bytes of one, as encoding processes send them: cheaper to pickle) of `nbytes` bytes."""
    if field.type_id == RGB_FIELD:
        return value.data
    if not isinstance(value, (bytes, bytearray)):
        value = np.ascontiguousarray(value, field.dtype).tobytes()
    if len(value) != nbytes:
        raise ValueError(f"{field.name}: {len(value)} bytes, the field holds {nbytes}")
    return value


def _row_struct(row: np.dtype, fields: list[Field]) -> struct.Struct:
    """A metadata row as one struct: its leaves (an int, a pointer, or an image's mode, width,
    height and pointer) at the row dtype's offsets, padding bytes between; one pack per sample."""
    codes = {INT_FIELD: [(0, "q")], NDARRAY_FIELD: [(0, "Q")],
             RGB_FIELD: [(RGB_METADATA.fields[n][1], c) for n, c in
                         (("mode", "B"), ("width", "H"), ("height", "H"), ("data_ptr", "Q"))]}
    layout, at = "<", 0
    for i, field in enumerate(fields):
        base = row.fields[f"f{i}"][1]
        for offset, code in codes[field.type_id]:
            layout += "x" * (base + offset - at) + code
            at = base + offset + struct.calcsize("<" + code)
    packed = struct.Struct(layout + "x" * (row.itemsize - at))
    assert packed.size == row.itemsize, (packed.size, row.itemsize)
    return packed


class BetonWriter:
    """Writes samples, in order, to a .beton. Use as a context manager; `add` each sample.

    Memory is one page plus the metadata rows (a few dozen bytes per sample); the allocation
    table goes to a side file and is appended at the end. Full pages are written past the page
    cache (O_DIRECT, where the file system takes it; `direct=False` never): a prepare writes the
    whole dataset once (70 GB for ImageNet), which through the cache would push out everything
    else and, on a VM, cost ~2 s of kernel time per GB of fresh memory (`scm-ray bench scale`).
    """

    def __init__(self, path: str | Path, fields: list[Field], num_samples: int, page_size: int = 1 << 23,
                 direct: bool = True):
        if page_size < MIN_PAGE_SIZE or page_size & (page_size - 1):
            raise ValueError(f"page_size must be a power of 2 >= {MIN_PAGE_SIZE}, got {page_size}")
        self.path, self.fields, self.num_samples, self.page_size = Path(path), fields, num_samples, page_size
        self.metadata = np.zeros(num_samples, metadata_dtype(fields))  # (n,) rows
        self._rows = self.metadata.view(np.uint8).reshape(-1)  # (n * row bytes,) the same memory
        self._row = _row_struct(self.metadata.dtype, fields)
        self._nbytes = [f.nbytes for f in fields]  # an NDArrayField's size, checked per sample
        self.metadata_at = HEADER.itemsize + len(fields) * FIELD_DESC.itemsize
        self.data_at = _align(self.metadata_at + self.metadata.nbytes, page_size)
        self._buffer = mmap.mmap(-1, page_size)  # page-aligned memory, as O_DIRECT needs
        self.page = np.frombuffer(self._buffer, np.uint8)  # (page_size,) view of it
        self.direct = direct
        self.page_number, self.used = -1, 0  # no page yet
        self.written = 0  # samples added
        self._allocations: list[tuple[int, int, int]] = []  # (sample, ptr, size) not yet in the table file

    def __enter__(self) -> BetonWriter:
        # header, descriptors and metadata are written last, through the cache, before the
        # pages; the zeros up to the first page are a hole
        self.file = open(self.path, "wb")
        self.fd = self._open_direct() if self.direct else None
        self.table = open(self.path.with_name(self.path.name + ".alloc"), "w+b")
        return self

    def _open_direct(self) -> int | None:
        """A second descriptor whose writes bypass the page cache, or None where the platform or
        the file system has none (tmpfs refuses O_DIRECT at open)."""
        flag = getattr(os, "O_DIRECT", 0)
        if not flag:
            return None
        try:
            return os.open(self.path, os.O_WRONLY | flag)
        except OSError:
            return None

    def add(self, values: tuple) -> None:
        """Write the next sample: per field an int (IntField), an array or its bytes
        (NDArrayField) or an Image. Its data is placed as FFCV's allocator places it: field by
        field into the current page; a sample that does not fit starts again on a fresh page
        (what was already copied stays behind in the old page, as in FFCV's files)."""
        if self.written >= self.num_samples:
            raise ValueError(f"{self.path}: more than the {self.num_samples} samples announced")
        blobs = [_blob(field, nbytes, value) for field, nbytes, value in zip(self.fields, self._nbytes, values)
                 if field.type_id != INT_FIELD]
        ptrs = iter(self._place(blobs))
        leaves: list[int] = []  # the row's values in _row_struct's order
        for field, value in zip(self.fields, values):
            if field.type_id == INT_FIELD:
                leaves.append(value)
            elif field.type_id == NDARRAY_FIELD:
                leaves.append(next(ptrs))
            else:
                leaves += (IMAGE_MODES[value.mode], value.width, value.height, next(ptrs))
        self._row.pack_into(self._rows, self.written * self._row.size, *leaves)
        self.written += 1

    def _place(self, blobs: list[bytes]) -> list[int]:
        """Copy a sample's data regions into pages, in order; their file offsets."""
        for attempt in range(2):
            ptrs: list[int] = []
            try:
                for blob in blobs:
                    ptrs.append(self._malloc(blob, started=bool(ptrs)))
                break
            except _PageFull:
                if attempt:
                    raise RuntimeError(f"{self.path}: sample {self.written} does not fit an empty page") from None
        self._allocations += [(self.written, ptr, len(blob)) for ptr, blob in zip(ptrs, blobs)]
        if len(self._allocations) >= _TABLE_BATCH:
            self._write_table()
        return ptrs

    def _malloc(self, data: bytes, started: bool) -> int:
        """Copy into the current page (a fresh one when it does not fit); its file offset.
        `started`: part of this sample is already placed (on a fresh page, it starts again)."""
        size = len(data)
        if size > self.page_size:
            raise ValueError(f"{self.path}: a sample field of {size} bytes does not fit a page of {self.page_size}")
        if self.page_number < 0 or size > self.page_size - self.used:
            self._flush()
            self.page_number, self.used = self.page_number + 1, 0
            self.page.fill(0)
            if started:
                raise _PageFull
        ptr = self.data_at + self.page_number * self.page_size + self.used
        self._buffer[self.used:self.used + size] = data
        self.used += size
        return ptr

    def _write_table(self) -> None:
        self.table.write(np.array(self._allocations, ALLOCATION).tobytes())
        self._allocations.clear()

    def _flush(self) -> None:
        if self.page_number < 0:
            return
        offset, done = self.data_at + self.page_number * self.page_size, 0
        if self.fd is not None:
            try:
                done = os.pwrite(self.fd, self._buffer, offset)
            except OSError:  # a file system that takes O_DIRECT at open but not this write
                os.close(self.fd)
                self.fd = None
        if done < self.page_size:
            self.file.seek(offset + done)
            self.file.write(self.page.data[done:])

    def __exit__(self, exc_type, *_) -> None:
        try:
            if exc_type is None:
                self._finish()
        finally:
            if self.fd is not None:
                os.close(self.fd)
            self.file.close()
            self.table.close()
            Path(self.table.name).unlink(missing_ok=True)

    def _finish(self) -> None:
        if self.written != self.num_samples:
            raise ValueError(f"{self.path}: {self.written} samples written, {self.num_samples} announced")
        self._flush()
        if self._allocations:
            self._write_table()
        table_at = self.data_at + (self.page_number + 1) * self.page_size
        header = np.zeros((), HEADER)
        header["version"], header["num_fields"], header["page_size"] = VERSION, len(self.fields), self.page_size
        header["num_samples"], header["alloc_table_ptr"] = self.num_samples, table_at
        self.table.seek(0)
        self.file.seek(table_at)
        shutil.copyfileobj(self.table, self.file)
        self.file.seek(0)
        self.file.write(header.tobytes())
        self.file.write(b"".join(f.descriptor().tobytes() for f in self.fields))
        self.file.write(self.metadata.tobytes())

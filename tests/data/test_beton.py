"""Our .beton writer against FFCV's DatasetWriter: the same bytes for the same samples, a sample
that does not fit the rest of a page restarted on the next one as FFCV does, and the same file
whether one process or several encode the images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from scm_ray.data import beton
from scm_ray.data.ffcv_io import SplitPlan, stored_size, write_split
from scm_ray.data.images import read_rgb
from scm_ray.data.preprocess import resize_image
from scm_ray.data.records import Record, RecordTable, write_records

MAX_BOXES = 3


def ffcv_fields(write_mode: str) -> dict:
    from ffcv.fields import IntField, NDArrayField, RGBImageField

    return {"image": RGBImageField(write_mode=write_mode, jpeg_quality=90), "label": IntField(),
            "boxes": NDArrayField(np.dtype("float32"), (MAX_BOXES, 4)), "box_count": IntField(),
            "orig_size": NDArrayField(np.dtype("int32"), (2,)), "index": IntField()}


def ffcv_write(path, samples: list[tuple], write_mode: str, page_size: int) -> bytes:
    """FFCV's own writer, one worker (its only deterministic layout), over (RGB image, label,
    boxes, box_count, orig_size, index) samples."""
    from ffcv.writer import DatasetWriter

    writer = DatasetWriter(str(path), ffcv_fields(write_mode), page_size=page_size, num_workers=1)
    writer.from_indexed_dataset(samples, chunksize=len(samples))
    return path.read_bytes()


def ours(path, samples: list[tuple], write_mode: str, page_size: int, direct: bool = True) -> bytes:
    fields = [beton.Field("image", beton.RGB_FIELD), beton.Field("label", beton.INT_FIELD),
              beton.Field("boxes", beton.NDARRAY_FIELD, np.dtype("float32"), (MAX_BOXES, 4)),
              beton.Field("box_count", beton.INT_FIELD),
              beton.Field("orig_size", beton.NDARRAY_FIELD, np.dtype("int32"), (2,)),
              beton.Field("index", beton.INT_FIELD)]
    with beton.BetonWriter(path, fields, len(samples), page_size, direct=direct) as writer:
        for image, *rest in samples:
            stored = beton.Image(np.ascontiguousarray(image).tobytes(), image.shape[1], image.shape[0], write_mode)
            writer.add((stored, *rest))
    return path.read_bytes()


def _sample(i: int, image: np.ndarray) -> tuple:
    boxes = np.zeros((MAX_BOXES, 4), np.float32)
    boxes[: i % 3 + 1] = np.arange(4, dtype=np.float32) + i
    return image, i % 5, boxes, i % 3 + 1, np.array([image.shape[1] + i, image.shape[0]], np.int32), i


def test_layout_dtypes_are_ffcvs():
    from ffcv.types import ALLOC_TABLE_TYPE, CURRENT_VERSION, FieldDescType, HeaderType, get_metadata_type

    assert (beton.HEADER, beton.ALLOCATION, beton.FIELD_DESC, beton.VERSION) == (
        HeaderType, ALLOC_TABLE_TYPE, FieldDescType, CURRENT_VERSION)
    fields = [beton.Field("image", beton.RGB_FIELD), beton.Field("label", beton.INT_FIELD),
              beton.Field("boxes", beton.NDARRAY_FIELD, np.dtype("float32"), (MAX_BOXES, 4))]
    theirs = list(ffcv_fields("jpg").values())[:3]
    assert beton.metadata_dtype(fields) == get_metadata_type(theirs)
    for field, their in zip(fields, theirs):
        assert field.descriptor()["arguments"].tobytes() == their.to_binary()[0].tobytes()


def test_the_same_bytes_as_ffcvs_writer_across_page_boundaries(tmp_path):
    """Raw images big enough to fill several 2 MiB pages, sized so that one sample's image fits
    the rest of a page but its boxes do not: FFCV restarts that sample on the next page (leaving
    the copied image behind), and so do we; with pages written past the page cache (O_DIRECT,
    where this file system takes it) or through it."""
    page = beton.MIN_PAGE_SIZE
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (10, 30, 3), np.uint8)  # 900 bytes
    # the first image leaves 912 bytes of its page after its boxes (48) and orig_size (8):
    # room for the next image (900), not for its boxes as well
    left = page - 56 - 912
    w = next(w for w in range(4096, 0, -1) if left % (3 * w) == 0 and left // (3 * w) <= 4096)
    big = rng.integers(0, 256, (left // (3 * w), w, 3), np.uint8)
    images = [big, small] + [rng.integers(0, 256, (300, 400 + 7 * i, 3), np.uint8) for i in range(40)]
    samples = [_sample(i, image) for i, image in enumerate(images)]
    expected = ffcv_write(tmp_path / "ffcv.beton", samples, "raw", page)
    got = ours(tmp_path / "ours.beton", samples, "raw", page)
    assert got == expected
    assert ours(tmp_path / "cached.beton", samples, "raw", page, direct=False) == expected
    header = np.frombuffer(got[: beton.HEADER.itemsize], beton.HEADER)[0]
    table = np.frombuffer(got[int(header["alloc_table_ptr"]):], beton.ALLOCATION)
    second = table[table["sample_id"] == 1]
    assert (second["ptr"] - second["ptr"][0] < 1000).all()  # its image moved with its boxes ...
    data_at = int(table["ptr"].min())
    assert second["ptr"][0] == data_at + page  # ... to the start of the second page


@pytest.fixture(scope="module")
def image_table(tmp_path_factory) -> RecordTable:
    """250 JPEGs of varied sizes (enough for two encoding processes), some with several boxes."""
    import cv2

    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(1)
    records = []
    for i in range(250):
        w, h = int(rng.integers(40, 140)), int(rng.integers(40, 140))
        image = cv2.GaussianBlur(rng.integers(0, 256, (h, w, 3), np.uint8), (5, 5), 0)
        cv2.imwrite(str(root / f"{i}.jpg"), image)
        boxes = [[1, 2, w // 2, h // 2]] * (i % 3 + 1)
        records.append(Record(f"{i}.jpg", i % 4, "train" if i < 200 else "val", w, h, boxes))
    return write_records(root / "records.parquet", records, source="unit", root=root,
                         class_names=list("abcd"))


def test_split_files_match_ffcvs_writer_and_do_not_depend_on_the_process_count(image_table, tmp_path):
    """write_split on one process and on two (spawned encoders, pages packed in order) writes
    the bytes FFCV's writer writes for the same decoded, resized images."""
    rows = image_table.rows("train")
    for kind, mode in (("train", "jpg"), ("eval", "jpg"), ("train", "raw")):
        plan = SplitPlan(str(image_table.root), kind, 64, None, 48, MAX_BOXES, 90, mode)
        samples = [(_resized(plan, r), *plan.encode(r)[1:]) for r in rows]
        expected = ffcv_write(tmp_path / f"ffcv_{kind}_{mode}.beton", samples, mode, beton.MIN_PAGE_SIZE)
        for workers in (1, 2):
            path = tmp_path / f"{kind}_{mode}_{workers}.beton"
            write_split(image_table, "train", path, kind, max_side=64, eval_size=48, max_boxes=MAX_BOXES,
                        write_mode=mode, num_workers=workers, progress=False)
            assert path.read_bytes() == expected, (kind, mode, workers)


def _resized(plan: SplitPlan, r: Record) -> np.ndarray:
    """The stored image as FFCV's writer takes it: RGB, resized, not yet encoded."""
    size = stored_size(plan.kind, r.width, r.height, plan.max_side, plan.eval_size)
    return resize_image(read_rgb(Path(plan.root) / r.path, strict=True), size)


def test_an_encoding_process_that_dies_is_an_error_not_a_hang(image_table):
    from scm_ray.data.ffcv_io import CHUNK, Encoders, WriterError

    plan = SplitPlan(str(image_table.root), "train", 64, None, 48, MAX_BOXES, 90, "jpg")
    tasks = [(plan, chunk) for chunk in image_table.chunks("train", CHUNK)]
    with Encoders(2) as encoders:
        assert sum(len(r) for r in encoders.map(tasks)) == image_table.count("train")
        encoders.processes[1].kill()
        with pytest.raises(WriterError, match=r"an image-encoding process ended unexpectedly \(exit codes \[None, -9"):
            list(encoders.map(tasks))
    assert encoders.processes == []

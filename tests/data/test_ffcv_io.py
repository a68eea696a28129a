"""Records -> .beton: round trip of labels, boxes, sizes and record indices; evaluation splits
stored resized with exactly scaled boxes; writer failures are errors, never hangs."""

from __future__ import annotations

import numpy as np
import pytest

from scm_ray.data.ffcv_io import (
    WriterError,
    check_split,
    pixel_grid_boxes,
    read_info,
    scale_boxes,
    stored_size,
    write_split,
)
from scm_ray.data.records import Record, RecordTable, write_records

# Dropping an FFCV Loader makes numba's finalizers print harmless KeyErrors.
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


def beton_fields(path) -> dict[str, np.ndarray]:
    """Every non-image field of a .beton, in stored order, read with a plain FFCV Loader, and the
    stored image sizes from its metadata."""
    from ffcv.loader import Loader, OrderOption
    from ffcv.reader import Reader

    loader = Loader(str(path), batch_size=64, num_workers=1, order=OrderOption.SEQUENTIAL, drop_last=False,
                    pipelines={"image": None})
    names = ["label", "boxes", "box_count", "orig_size", "index"]
    parts: dict[str, list] = {n: [] for n in names}
    for batch in loader:
        for name, value in zip(names, batch):
            parts[name].append(value.numpy().copy())
    out = {n: np.concatenate(v) for n, v in parts.items()}
    reader = Reader(str(path))
    meta = reader.metadata[f"f{reader.field_names.index('image')}"]  # fields are stored as f0, f1, ...
    out["stored_size"] = np.stack([meta["width"], meta["height"]], axis=1).astype(int)  # (n, 2)
    return out


def test_train_split_round_trip(multibox_dir):
    table = RecordTable.read(multibox_dir)
    rows = table.rows("train")
    got = beton_fields(multibox_dir / "train.beton")
    assert got["label"].ravel().tolist() == [r.label for r in rows]
    assert got["index"].ravel().tolist() == list(range(len(rows)))
    assert got["orig_size"].tolist() == [[r.width, r.height] for r in rows]
    assert got["stored_size"].tolist() == [[56, 40]] * len(rows)  # below max_side: stored as is
    assert got["box_count"].ravel().tolist() == [len(r.boxes) for r in rows]
    assert got["boxes"].shape == (len(rows), 3, 4)
    for r, boxes, n in zip(rows, got["boxes"], got["box_count"].ravel()):
        np.testing.assert_array_equal(boxes[:n], r.boxes)
        assert not boxes[n:].any()  # zero padding after the count


def test_eval_split_is_stored_resized_with_whole_pixel_boxes(multibox_dir):
    info = read_info(multibox_dir)
    assert info["splits"]["val"]["image_size"] == 32 and info["splits"]["val"]["kind"] == "eval"
    assert info["max_boxes"] == 3 and info["num_classes"] == 3
    rows = RecordTable.read(multibox_dir).rows("val")
    got = beton_fields(multibox_dir / "val.beton")
    assert got["stored_size"].tolist() == [[32, 32]] * len(rows)
    for r, boxes, n in zip(rows, got["boxes"], got["box_count"].ravel()):
        scaled = r.boxes.astype(np.float64) * [32 / 56, 32 / 40, 32 / 56, 32 / 40]
        expected = np.minimum(np.floor(scaled), 31)  # int() of the scaled box, clipped to the grid
        np.testing.assert_array_equal(boxes[:n], expected)


def test_training_images_keep_aspect_under_max_side(multibox_dir, tmp_path):
    table = RecordTable.read(multibox_dir)
    entry = write_split(table, "train", tmp_path / "small.beton", "train", max_side=28, num_workers=1, progress=False)
    assert entry["stored_max_size"] == [28, 20] and entry["max_side"] == 28
    got = beton_fields(tmp_path / "small.beton")
    assert got["stored_size"].tolist() == [[28, 20]] * table.count("train")
    rows = table.rows("train")
    np.testing.assert_allclose(got["boxes"][0, : len(rows[0].boxes)], rows[0].boxes / 2, atol=1e-5)


def test_size_and_box_helpers():
    assert stored_size("train", 1000, 500, 512, 224) == (512, 256)
    assert stored_size("train", 300, 200, 512, 224) == (300, 200)
    assert stored_size("eval", 1000, 500, 512, 224) == (224, 224)
    assert stored_size("train", 1000, 500, 2000, 224, short_side=250) == (500, 250)
    assert stored_size("train", 1000, 500, 400, 224, short_side=250) == (400, 200)  # both caps hold
    assert stored_size("train", 100, 50, 400, 224, short_side=250) == (100, 50)  # never enlarged
    np.testing.assert_allclose(scale_boxes(np.array([[10, 20, 30, 40]]), (100, 200), (50, 50)), [[5, 5, 15, 10]])
    # int() like wsolevaluation, x1/y1 clipped to size - 1 like the released SCM code
    grid = pixel_grid_boxes(np.array([[0.9, 3.99999, 223.5, 224.0], [10.0, 0.0, 10.2, 5.7]]), 224, 224)
    np.testing.assert_array_equal(grid, [[0, 3, 223, 223], [10, 0, 10, 5]])


@pytest.mark.timeout(120)
def test_unreadable_image_at_write_time_is_an_error_not_a_hang(tmp_path):
    """FFCV's DatasetWriter waits forever for a sample whose worker raised; ours must fail."""
    import cv2

    images = tmp_path / "images"
    images.mkdir()
    for i in range(3):
        cv2.imwrite(str(images / f"{i}.jpg"), np.full((20, 30, 3), 60 * i, np.uint8))
    recs = [Record(f"{i}.jpg", i % 2, "val", 30, 20, [[1, 1, 10, 10]]) for i in range(3)]
    table = write_records(tmp_path / "records.parquet", recs, source="unit", root=images, class_names=["a", "b"])
    (images / "1.jpg").write_bytes(b"garbage")
    with pytest.raises(WriterError, match="1.jpg"):
        write_split(table, "val", tmp_path / "val.beton", "eval", eval_size=16, num_workers=1, progress=False)
    assert not (tmp_path / "val.beton").exists() and not (tmp_path / "val.beton.tmp").exists()


def test_more_boxes_than_slots_is_an_error(multibox_dir, tmp_path):
    table = RecordTable.read(multibox_dir)
    with pytest.raises(WriterError, match="max_boxes=1"):
        write_split(table, "val", tmp_path / "v.beton", "eval", max_boxes=1, progress=False)


def test_check_split_catches_incompatible_use(synthetic_dir):
    info = read_info(synthetic_dir / "val.beton")
    assert check_split(info, "val", kind="eval", eval_size=48, num_classes=4)["count"] == 12
    with pytest.raises(ValueError, match="stored at 48 px"):
        check_split(info, "val", eval_size=224)
    with pytest.raises(ValueError, match="stored for train"):
        check_split(info, "train", kind="eval")
    with pytest.raises(ValueError, match="not prepared"):
        check_split(info, "extra")
    with pytest.raises(ValueError, match="classes"):
        check_split(info, "val", num_classes=200)

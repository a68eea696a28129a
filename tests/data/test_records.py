"""The canonical record table: schema, metadata block, reader API, refusal of bad tables."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

from scm_ray.data.records import SCHEMA, Record, RecordError, RecordTable, write_records


def _records() -> list[Record]:
    return [
        Record("a/1.jpg", 0, "train", 40, 30, [[1, 2, 10, 20]]),
        Record("a/2.jpg", 1, "test", 50, 60, [[0, 0, 5, 5], [10, 10, 40, 50]]),
        Record("b/3.jpg", 1, "train", 20, 20),
        Record("b/4.jpg", 0, "test", 64, 48, [[3.5, 4.25, 60, 47]]),
    ]


def test_round_trip_schema_metadata_and_rows(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    table = write_records(tmp_path / "records.parquet", _records(), source="unit", root=images,
                          class_names=["cat", "dog"], extra={"note": 7})
    raw = pq.read_table(tmp_path / "records.parquet")
    assert raw.schema.remove_metadata() == SCHEMA
    back = RecordTable.read(tmp_path)  # the folder works as well as the file
    assert back.classes == ["cat", "dog"] and back.num_classes == 2
    assert back.splits == ["train", "test"]
    assert back.source == "unit" and back.meta["note"] == 7
    assert back.meta["counts"] == {"train": 2, "test": 2}
    assert back.meta["num_boxes"] == {"train": 1, "test": 3}
    assert back.root == images.resolve()
    assert back.meta["root"] == "images"  # stored relative: the folder can move
    test = back.rows("test")
    assert [r.path for r in test] == ["a/2.jpg", "b/4.jpg"]
    assert [r.index for r in test] == [0, 1]
    np.testing.assert_array_equal(test[0].boxes, np.array([[0, 0, 5, 5], [10, 10, 40, 50]], np.float32))
    assert test[1].boxes.dtype == np.float32 and test[1].boxes[0, 1] == 4.25
    assert back.rows("train")[1].boxes.shape == (0, 4)
    assert (test[0].width, test[0].height) == (50, 60)
    assert back.image_path(test[0]) == images.resolve() / "a/2.jpg"
    assert back.max_boxes() == 2 and len(back) == 4 and back.count("train") == 2
    assert table.rows("train")[0].path == "a/1.jpg"


def test_moving_the_folder_keeps_the_image_root(tmp_path):
    src = tmp_path / "one"
    (src / "images").mkdir(parents=True)
    write_records(src / "records.parquet", _records(), source="unit", root=src / "images", class_names=["a", "b"])
    dst = tmp_path / "two"
    src.rename(dst)
    assert RecordTable.read(dst).root == (dst / "images").resolve()


def test_unknown_split_names_the_splits(tmp_path):
    table = write_records(tmp_path / "r.parquet", _records(), source="u", root=tmp_path, class_names=["a", "b"])
    with pytest.raises(KeyError, match="train"):
        table.rows("val")


@pytest.mark.parametrize(
    "bad, match",
    [
        (Record("x.jpg", 2, "train", 10, 10), "label 2"),
        (Record("x.jpg", 0, "train", 10, 10, [[0, 0, 11, 5]]), "outside"),
        (Record("x.jpg", 0, "train", 10, 10, [[5, 0, 5, 5]]), "outside"),
    ],
)
def test_write_refuses_bad_records(tmp_path, bad, match):
    with pytest.raises(RecordError, match=match):
        write_records(tmp_path / "r.parquet", [bad], source="u", root=tmp_path, class_names=["a", "b"])


def test_write_refuses_duplicate_paths_in_a_split(tmp_path):
    recs = [Record("x.jpg", 0, "train", 10, 10), Record("x.jpg", 1, "train", 10, 10)]
    with pytest.raises(RecordError, match="duplicate"):
        write_records(tmp_path / "r.parquet", recs, source="u", root=tmp_path, class_names=["a", "b"])


def test_read_refuses_a_foreign_parquet(tmp_path):
    pq.write_table(SCHEMA.empty_table(), tmp_path / "foreign.parquet")
    with pytest.raises(RecordError, match="metadata"):
        RecordTable.read(tmp_path / "foreign.parquet")
    with pytest.raises(FileNotFoundError):
        RecordTable.read(tmp_path / "missing.parquet")

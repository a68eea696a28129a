"""Known-answer tests: fake CUB-200-2011, ILSVRC 2012 and wsolevaluation folders in their official
file formats (synthetic pixels) convert to the expected records, and bad input is reported with
its file and line."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from scm_ray.data.report import SourceError
from scm_ray.data.sources import convert_cub, convert_imagenet, convert_wsol_metadata, parse_voc_xml


def jpeg(path: Path, width: int, height: int, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)
    cv2.imwrite(str(path), pixels)


def write(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def problems(conv, reason: str) -> list:
    return [p for p in conv.report.problems if p.reason == reason]


# ----------------------------------------------------------------------------------------------
# CUB-200-2011
# ----------------------------------------------------------------------------------------------


def make_cub(root: Path) -> Path:
    """3 classes, 5 images (sizes differ), official file formats."""
    cub = root / "CUB_200_2011"
    sizes = {1: (40, 30), 2: (32, 48), 3: (50, 50), 4: (24, 36), 5: (64, 40)}
    folders = {1: "001.Red", 2: "001.Red", 3: "002.Green", 4: "003.Blue", 5: "003.Blue"}
    for i, (w, h) in sizes.items():
        jpeg(cub / "images" / folders[i] / f"img_{i}.jpg", w, h, seed=i)
    write(cub / "images.txt", [f"{i} {folders[i]}/img_{i}.jpg" for i in sizes])
    write(cub / "classes.txt", ["1 001.Red", "2 002.Green", "3 003.Blue"])
    write(cub / "image_class_labels.txt", ["1 1", "2 1", "3 2", "4 3", "5 3"])
    write(cub / "train_test_split.txt", ["1 1", "2 0", "3 1", "4 0", "5 1"])
    write(cub / "bounding_boxes.txt",
          ["1 2.0 3.0 10.0 20.0", "2 0.0 0.0 32.0 48.0", "3 5.5 6.5 20.0 30.0", "4 1.0 1.0 5.0 5.0",
           "5 10.0 4.0 50.0 30.0"])
    return cub


def test_cub_known_answer(tmp_path):
    make_cub(tmp_path)
    conv = convert_cub(tmp_path, progress=False, num_workers=2)  # the parent folder works too
    assert conv.class_names == ["001.Red", "002.Green", "003.Blue"]
    assert conv.report.num_skipped == 0 and not conv.report.problems
    by_path = {r.path: r for r in conv.records}
    r = by_path["images/001.Red/img_1.jpg"]
    assert (r.label, r.split, r.width, r.height) == (0, "train", 40, 30)
    np.testing.assert_array_equal(r.boxes, [[2, 3, 12, 23]])  # x, y, w, h -> x0, y0, x1, y1
    r = by_path["images/001.Red/img_2.jpg"]
    assert (r.label, r.split) == (0, "test")
    np.testing.assert_array_equal(r.boxes, [[0, 0, 32, 48]])  # the whole image is a valid box
    r = by_path["images/002.Green/img_3.jpg"]
    np.testing.assert_allclose(r.boxes, [[5.5, 6.5, 25.5, 36.5]])
    assert [r.label for r in conv.records] == [0, 0, 1, 2, 2]
    assert dict(conv.report.written) == {"train": 3, "test": 2}


def test_cub_bad_input_reported_with_file_and_line(tmp_path):
    cub = make_cub(tmp_path)
    (cub / "images/001.Red/img_2.jpg").unlink()  # missing image
    data = (cub / "images/003.Blue/img_5.jpg").read_bytes()
    (cub / "images/003.Blue/img_5.jpg").write_bytes(data[: len(data) // 2])  # truncated JPEG
    write(cub / "images.txt", ["1 001.Red/img_1.jpg", "2 001.Red/img_2.jpg", "3 002.Green/img_3.jpg",
                               "4 003.Blue/img_4.jpg", "5 003.Blue/img_5.jpg", "3 002.Green/again.jpg"])
    write(cub / "image_class_labels.txt", ["1 1", "2 1", "3 2", "4 9", "5 3"])  # 4: label out of range
    write(cub / "bounding_boxes.txt",
          ["1 2.0 3.0 10.0 0.0", "2 0 0 1 1", "3 5.5 6.5 20.0 30.0", "4 1 1 5 5", "5 1 1 2 2"])  # 1: h = 0
    conv = convert_cub(cub, progress=False)
    assert conv.records == [r for r in conv.records if r.path == "images/002.Green/img_3.jpg"]
    assert len(conv.records) == 1
    assert dict(conv.report.skipped) == {
        "duplicate_id": 1, "missing_image": 1, "unreadable_image": 1, "label_out_of_range": 1, "bad_box": 1,
    }
    (dup,) = problems(conv, "duplicate_id")
    assert dup.file.endswith("images.txt") and dup.line == 6
    (label,) = problems(conv, "label_out_of_range")
    assert label.file.endswith("image_class_labels.txt") and label.line == 4 and "9" in label.message
    (box,) = problems(conv, "bad_box")
    assert box.file.endswith("bounding_boxes.txt") and box.line == 1 and "empty box" in box.message
    (missing,) = problems(conv, "missing_image")
    assert missing.file.endswith("images.txt") and missing.line == 2
    (bad,) = problems(conv, "unreadable_image")
    assert bad.line == 5 and "truncated" in bad.message
    text = "\n".join(conv.report.lines())
    assert "records skipped: 5" in text and "records written: 1" in text


def test_cub_box_outside_image_and_malformed_line(tmp_path):
    cub = make_cub(tmp_path)
    write(cub / "bounding_boxes.txt",
          ["1 2.0 3.0 10.0 20.0", "2 0 0 33 48", "3 5.5 6.5 twenty 30.0", "4 40 1 5 5", "5 10 4 50 30"])
    conv = convert_cub(cub, progress=False)
    # past the edge by a pixel: kept, clipped and reported, as the reference evaluations keep it
    (clipped,) = problems(conv, "box_clipped")
    assert clipped.line == 2 and "clipped to the 32x48 image: [0.0, 0.0, 32.0, 48.0]" in clipped.message
    assert [r.boxes.tolist() for r in conv.records if r.path.endswith("img_2.jpg")] == [[[0, 0, 32, 48]]]
    (box,) = problems(conv, "bad_box")  # wholly outside: nothing to keep
    assert box.line == 4 and "outside the" in box.message
    (malformed,) = problems(conv, "malformed_line")
    assert malformed.line == 3
    (missing,) = problems(conv, "missing_annotation")  # id 3 lost its only box line
    assert "bounding_boxes.txt" in missing.message
    assert len(conv.records) == 3 and conv.report.skipped.get("box_clipped", 0) == 0


def test_cub_missing_annotation_file_names_it(tmp_path):
    cub = make_cub(tmp_path)
    (cub / "train_test_split.txt").unlink()
    with pytest.raises(SourceError, match="train_test_split.txt"):
        convert_cub(cub, progress=False)


def test_header_verify_misses_truncation_decode_catches_it(tmp_path):
    cub = make_cub(tmp_path)
    path = cub / "images/001.Red/img_1.jpg"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # header intact, scan data cut
    assert convert_cub(cub, verify="header", progress=False).report.num_skipped == 0
    assert convert_cub(cub, verify="decode", progress=False).report.skipped["unreadable_image"] == 1


# ----------------------------------------------------------------------------------------------
# ILSVRC 2012
# ----------------------------------------------------------------------------------------------

VOC = """<annotation>
  <folder>val</folder>
  <filename>{stem}</filename>
  <size>
    <width>{w}</width>
    <height>{h}</height>
    <depth>3</depth>
  </size>
{objects}</annotation>
"""
OBJ = """  <object>
    <name>{wnid}</name>
    <bndbox>
      <xmin>{x0}</xmin>
      <ymin>{y0}</ymin>
      <xmax>{x1}</xmax>
      <ymax>{y1}</ymax>
    </bndbox>
  </object>
"""


def voc(path: Path, stem: str, w: int, h: int, boxes: list[tuple]) -> None:
    objects = "".join(OBJ.format(wnid=b[0], x0=b[1], y0=b[2], x1=b[3], y1=b[4]) for b in boxes)
    write(path, [VOC.format(stem=stem, w=w, h=h, objects=objects)])


def make_imagenet(root: Path, xml: bool = True) -> Path:
    write(root / "LOC_synset_mapping.txt", ["n002 goldfish, Carassius auratus", "n001 tench", "n003 shark"])
    jpeg(root / "train/n001/n001_1.JPEG", 30, 20, 1)
    jpeg(root / "train/n001/n001_2.JPEG", 20, 30, 2)
    jpeg(root / "train/n002/n002_1.JPEG", 25, 25, 3)
    jpeg(root / "train/n003/n003_1.JPEG", 40, 24, 4)
    jpeg(root / "val/ILSVRC2012_val_00000001.JPEG", 48, 32, 5)
    jpeg(root / "val/ILSVRC2012_val_00000002.JPEG", 32, 32, 6)
    ann = {
        "ILSVRC2012_val_00000001": (48, 32, [("n003", 1, 2, 20, 30), ("n003", 25, 3, 47, 31)]),
        "ILSVRC2012_val_00000002": (32, 32, [("n001", 0, 0, 16, 16)]),
    }
    if xml:
        for stem, (w, h, boxes) in ann.items():
            voc(root / "Annotations/CLS-LOC/val" / f"{stem}.xml", stem, w, h, boxes)
    else:
        lines = ["ImageId,PredictionString"]
        for stem, (_, _, boxes) in ann.items():
            lines.append(stem + "," + " ".join(" ".join(str(v) for v in b) for b in boxes))
        write(root / "LOC_val_solution.csv", lines)
    return root


@pytest.mark.parametrize("xml", [True, False], ids=["voc-xml", "loc-csv"])
def test_imagenet_known_answer(tmp_path, xml):
    make_imagenet(tmp_path, xml=xml)
    conv = convert_imagenet(tmp_path, progress=False)
    assert conv.class_names == ["goldfish, Carassius auratus", "tench", "shark"]
    assert conv.extra["wnids"] == ["n002", "n001", "n003"]
    assert conv.report.num_skipped == 0, conv.report.lines()
    by_path = {r.path: r for r in conv.records}
    assert by_path["train/n001/n001_2.JPEG"].label == 1
    assert by_path["train/n002/n002_1.JPEG"].label == 0
    assert by_path["train/n003/n003_1.JPEG"].split == "train"
    assert by_path["train/n003/n003_1.JPEG"].boxes.shape == (0, 4)
    v1 = by_path["val/ILSVRC2012_val_00000001.JPEG"]
    assert (v1.label, v1.split, v1.width, v1.height) == (2, "test", 48, 32)
    np.testing.assert_array_equal(v1.boxes, [[1, 2, 20, 30], [25, 3, 47, 31]])  # several boxes
    assert by_path["val/ILSVRC2012_val_00000002.JPEG"].label == 1
    assert sum(len(r.boxes) for r in conv.records) == 3


def test_imagenet_bad_val_annotations(tmp_path):
    root = make_imagenet(tmp_path)
    ann = root / "Annotations/CLS-LOC/val"
    voc(ann / "ILSVRC2012_val_00000001.xml", "x", 48, 32, [("n003", 1, 2, 20, 30), ("n001", 25, 3, 47, 31)])
    jpeg(root / "val/ILSVRC2012_val_00000003.JPEG", 20, 20, 7)  # no XML at all
    jpeg(root / "val/ILSVRC2012_val_00000004.JPEG", 20, 20, 8)
    voc(ann / "ILSVRC2012_val_00000004.xml", "x", 20, 20, [("n999", 0, 0, 5, 5)])
    jpeg(root / "val/ILSVRC2012_val_00000005.JPEG", 20, 20, 9)
    voc(ann / "ILSVRC2012_val_00000005.xml", "x", 30, 20, [("n001", 0, 0, 5, 5)])  # wrong size
    write(ann / "ILSVRC2012_val_00000002.xml", ["<annotation><object>", "<name>n001</name>", "</annotation>"])
    jpeg(root / "train/n777/x.JPEG", 10, 10)  # a class folder the index does not know
    conv = convert_imagenet(root, progress=False)
    skipped = dict(conv.report.skipped)
    assert skipped == {"label_conflict": 1, "missing_annotation": 1, "unknown_class": 2, "size_mismatch": 1,
                       "malformed_line": 1}
    (conflict,) = problems(conv, "label_conflict")
    assert conflict.file.endswith("ILSVRC2012_val_00000001.xml") and conflict.line == 9  # first <object>
    (missing,) = problems(conv, "missing_annotation")
    assert missing.file.endswith("ILSVRC2012_val_00000003.xml")
    (malformed,) = problems(conv, "malformed_line")
    assert malformed.file.endswith("ILSVRC2012_val_00000002.xml") and malformed.line == 3
    assert {p.file.rsplit("/", 1)[-1] for p in problems(conv, "unknown_class")} == {"n777", "ILSVRC2012_val_00000004.xml"}
    assert [r.split for r in conv.records] == ["train"] * 4


def test_imagenet_training_image_problems_are_reported_at_the_image_file(tmp_path):
    """An ILSVRC image's own problems (unreadable) point at the file itself, whether found while
    the source is checked or later, by the writer (Conversion.without); its boxes' at its XML."""
    root = make_imagenet(tmp_path)
    bad = root / "train/n001/n001_3.JPEG"
    bad.write_bytes(b"not a jpeg at all")
    conv = convert_imagenet(root, progress=False)
    (problem,) = problems(conv, "unreadable_image")
    assert (problem.file, problem.line) == (f"{root}/train/n001/n001_3.JPEG", None)
    assert conv.where == {}  # nothing held per image: every image's own problems are its file's

    later = conv.without({"train/n002/n002_1.JPEG": "cannot decode"})
    assert "train/n002/n002_1.JPEG" not in {r.path for r in later.records}
    (problem,) = [p for p in problems(later, "unreadable_image") if "n002_1" in p.file]
    assert (problem.file, problem.line) == (f"{root}/train/n002/n002_1.JPEG", None)


def test_imagenet_without_box_annotations_is_an_error(tmp_path):
    root = make_imagenet(tmp_path)
    for f in (root / "Annotations/CLS-LOC/val").iterdir():
        f.unlink()
    (root / "Annotations/CLS-LOC/val").rmdir()
    with pytest.raises(SourceError, match="LOC_val_solution.csv"):
        convert_imagenet(root, progress=False)


def test_imagenet_class_index_json_and_malformed_csv(tmp_path):
    root = make_imagenet(tmp_path, xml=False)
    (root / "LOC_synset_mapping.txt").unlink()
    (root / "index.json").write_text('{"0": ["n001", "tench"], "1": ["n002", "goldfish"], "2": ["n003", "shark"]}')
    lines = (root / "LOC_val_solution.csv").read_text().splitlines()
    lines[2] = lines[2] + " n001 1 2"  # a box with 2 of its 4 numbers
    write(root / "LOC_val_solution.csv", lines)
    conv = convert_imagenet(root, class_index=root / "index.json", progress=False)
    assert conv.class_names == ["tench", "goldfish", "shark"]
    (malformed,) = problems(conv, "malformed_line")
    assert malformed.line == 3 and malformed.file.endswith("LOC_val_solution.csv")
    (missing,) = problems(conv, "missing_annotation")
    assert "ILSVRC2012_val_00000002" in missing.message


def test_voc_parser_reads_sizes_and_lines(tmp_path):
    voc(tmp_path / "a.xml", "a", 48, 32, [("n1", 1, 2, 3, 4), ("n2", 5, 6, 7, 8)])
    size, objects = parse_voc_xml(tmp_path / "a.xml")
    assert size == (48, 32)
    assert objects == [("n1", [1, 2, 3, 4], 9), ("n2", [5, 6, 7, 8], 18)]


# ----------------------------------------------------------------------------------------------
# wsolevaluation metadata
# ----------------------------------------------------------------------------------------------


def make_wsol(root: Path) -> tuple[Path, Path]:
    images, meta = root / "images", root / "metadata"
    for name, (w, h) in {"c0/a.jpg": (40, 30), "c1/b.jpg": (30, 40), "c1/c.jpg": (20, 20), "c0/d.jpg": (36, 24)}.items():
        jpeg(images / name, w, h)
    write(meta / "train/image_ids.txt", ["c0/a.jpg", "c1/b.jpg"])
    write(meta / "train/class_labels.txt", ["c0/a.jpg,0", "c1/b.jpg,1"])
    write(meta / "train/image_sizes.txt", ["c0/a.jpg,40,30", "c1/b.jpg,30,40"])
    write(meta / "val/image_ids.txt", ["c1/c.jpg", "c0/d.jpg"])
    write(meta / "val/class_labels.txt", ["c1/c.jpg,1", "c0/d.jpg,0"])
    write(meta / "val/image_sizes.txt", ["c1/c.jpg,20,20", "c0/d.jpg,36,24"])
    write(meta / "val/localization.txt", ["c1/c.jpg,1,2,10,12", "c0/d.jpg,0,0,18,12", "c1/c.jpg,11,11,19,19"])
    return images, meta


def test_wsol_metadata_known_answer(tmp_path):
    images, meta = make_wsol(tmp_path)
    conv = convert_wsol_metadata(images, meta, progress=False)
    assert conv.class_names == ["class_000", "class_001"]
    assert conv.report.num_skipped == 0
    by = {(r.split, r.path): r for r in conv.records}
    assert [r.split for r in conv.records] == ["train", "train", "val", "val"]
    c = by[("val", "c1/c.jpg")]
    assert (c.label, c.width, c.height) == (1, 20, 20)
    np.testing.assert_array_equal(c.boxes, [[1, 2, 10, 12], [11, 11, 19, 19]])  # one line per box
    assert by[("train", "c0/a.jpg")].boxes.shape == (0, 4)
    one = convert_wsol_metadata(images, meta / "val", progress=False)  # a single split folder
    assert {r.split for r in one.records} == {"val"}


def test_wsol_metadata_bad_input(tmp_path):
    images, meta = make_wsol(tmp_path)
    write(meta / "val/image_ids.txt", ["c1/c.jpg", "c0/d.jpg", "c1/c.jpg", "c0/gone.jpg"])
    write(meta / "val/class_labels.txt", ["c1/c.jpg,1", "c0/d.jpg,5", "c0/gone.jpg,0"])
    write(meta / "val/image_sizes.txt", ["c1/c.jpg,21,20", "c0/d.jpg,36,24"])
    write(meta / "val/localization.txt", ["c1/c.jpg,1,2,10,12", "c0/d.jpg,0,0,18,12", "c0/gone.jpg,0,0,1,1",
                                          "c9/x.jpg,0,0,1,1"])
    conv = convert_wsol_metadata(images, meta, num_classes=2, progress=False)
    assert dict(conv.report.skipped) == {"duplicate_id": 1, "label_out_of_range": 1, "size_mismatch": 1,
                                         "missing_image": 1}
    (dup,) = problems(conv, "duplicate_id")
    assert dup.file.endswith("val/image_ids.txt") and dup.line == 3
    (label,) = problems(conv, "label_out_of_range")
    assert label.file.endswith("val/class_labels.txt") and label.line == 2
    (size,) = problems(conv, "size_mismatch")
    assert size.file.endswith("val/image_sizes.txt") and size.line == 1
    (unknown,) = problems(conv, "unknown_id")
    assert unknown.line == 4
    assert {r.split for r in conv.records} == {"train"}


def test_wsol_eval_split_needs_localization(tmp_path):
    images, meta = make_wsol(tmp_path)
    (meta / "val/localization.txt").unlink()
    with pytest.raises(SourceError, match="localization.txt"):
        convert_wsol_metadata(images, meta, progress=False)
    with pytest.raises(SourceError, match="image_ids.txt"):
        convert_wsol_metadata(images, tmp_path / "nowhere", progress=False)


def test_jpeg_whose_header_does_not_match_its_data_is_skipped(tmp_path, capsys):
    """A 16 x 16 JPEG whose header claims 12000 x 8000: libjpeg decodes it with a warning
    (premature end of data) into a grey image; prepare treats the warning as corruption."""
    import struct

    from scm_ray.cli import main

    cub = make_cub(tmp_path)
    path = cub / "images/001.Red/img_1.jpg"
    jpeg(path, 16, 16)
    data = bytearray(path.read_bytes())
    sof = data.find(b"\xff\xc0")
    data[sof + 5: sof + 9] = struct.pack(">HH", 8000, 12000)  # height, width
    path.write_bytes(bytes(data))
    conv = convert_cub(cub, progress=False)
    (bad,) = problems(conv, "unreadable_image")
    assert "images/001.Red/img_1.jpg" in bad.message and "12000x8000" in bad.message
    assert "premature end" in bad.message and conv.report.skipped == {"unreadable_image": 1}
    assert all(not r.path.endswith("img_1.jpg") for r in conv.records)
    out = tmp_path / "out"
    assert main(["prepare", "cub", "--root", str(cub), "--out", str(out), "--eval-size", "32",
                 "--no-progress", "--strict", "--num-workers", "1"]) == 1
    captured = capsys.readouterr()
    assert "img_1.jpg" in captured.out + captured.err and "Traceback" not in captured.err
    assert (out / "records.parquet").is_file() and len(conv.records) == 4

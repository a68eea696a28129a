"""Dataset sources -> canonical records: CUB-200-2011, ILSVRC 2012 and wsolevaluation metadata.

Each converter parses its annotation files, reports every bad line with its file and line
number, opens every image, and returns a `Conversion` (records + class names + report) that
`prepare.write_prepared` turns into records.parquet and .beton files. A required annotation file
that is missing raises SourceError naming it; anything record-level is reported and the record
skipped, never dropped silently.

Split names follow the WSOL protocol of docs/protocols.md: "train", a held-out "val" with boxes
(CUBV2 / ImageNetV2, arriving as wsolevaluation metadata), and "test" (CUB's official test set,
ILSVRC's official validation set).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import xml.parsers.expat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from scm_ray.data.images import ImageProblem, Verify, probe_images
from scm_ray.data.records import Record
from scm_ray.data.report import Report, SourceError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}

Where = tuple[str, int | None]  # (file, 1-based line) an input came from


@dataclass
class Conversion:
    """What a source converter returns."""

    source: str
    root: Path
    records: list[Record]
    class_names: list[str]
    report: Report
    extra: dict = field(default_factory=dict)
    # record path -> the annotation (file, line) it came from, for problems found after the
    # conversion (a JPEG the writer cannot decode, see Verify "write"); not stored anywhere. A
    # path without an entry came from no annotation: the problem is the image file's own.
    where: dict[str, Where] = field(default_factory=dict)

    def without(self, failures: dict[str, str], reason: str = "unreadable_image") -> Conversion:
        """This conversion minus the records at `failures` (path -> why), each reported as a
        skipped record under `reason`, at its annotation's file and line."""
        kept = [r for r in self.records if r.path not in failures]
        for r in self.records:
            if r.path in failures:
                file, line = self.where.get(r.path, (f"{self.root}/{r.path}", None))
                self.report.add(reason, file, line, f"{r.path}: {failures[r.path]}")
                self.report.written[r.split] -= 1
        return dataclasses.replace(self, records=kept)


@dataclass(slots=True)
class Candidate:
    """A record before its image is checked, with where each part of it came from."""

    path: str
    label: int
    split: str
    # the annotation naming the image; None: none does (an ILSVRC training image), problems are
    # then reported at the image file itself (not a string per image held for 1.28 M of them)
    where: Where | None
    # default: one shared empty tuple, not two lists per ILSVRC training image (sources that add
    # boxes one at a time pass their own lists)
    boxes: Sequence[list[float]] = ()
    box_where: Sequence[Where] = ()
    size: tuple[int, int] | None = None  # (width, height) declared by an annotation file
    size_where: Where | None = None


# ----------------------------------------------------------------------------------------------
# Shared helpers
# ----------------------------------------------------------------------------------------------


def require_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise SourceError(f"{what}: annotation file not found: {path}")
    return path


def text_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(1-based line number, stripped text) of the non-blank lines of a text file."""
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            text = line.strip()
            if text:
                yield number, text


def box_problem(box: list[float], width: int, height: int) -> str | None:
    """Why a [x0, y0, x1, y1] box is unusable on a width x height image, or None. A box that
    only runs past the edge is usable (clip_box): the reference evaluations keep such images."""
    x0, y0, x1, y1 = box
    if not all(np.isfinite(box)):
        return f"non-finite box {box}"
    if x1 <= x0 or y1 <= y0:
        return f"empty box {box} (needs x1 > x0 and y1 > y0)"
    if x1 <= 0 or y1 <= 0 or x0 >= width or y0 >= height:
        return f"box {box} outside the {width}x{height} image"
    return None


def clip_box(box: list[float], width: int, height: int) -> list[float]:
    """The part of a (usable) box inside the width x height image."""
    x0, y0, x1, y1 = box
    return [max(x0, 0.0), max(y0, 0.0), min(x1, float(width)), min(y1, float(height))]


def check_images(
    candidates: list[Candidate],
    root: Path,
    report: Report,
    verify: Verify,
    num_workers: int,
    progress: bool,
) -> tuple[list[Record], dict[str, Where]]:
    """Open every candidate's image; keep those whose image, size and boxes are all valid.
    Returns the records and, per record path, the annotation (file, line) it came from."""
    prefix = f"{root}/"
    sizes = probe_images([prefix + c.path for c in candidates], verify, num_workers, progress=progress)
    records, where = [], {}
    for cand, size in zip(candidates, sizes):
        origin = cand.where or (prefix + cand.path, None)
        if isinstance(size, ImageProblem):
            report.add(size.reason, *origin, f"{cand.path}: {size}")
            continue
        width, height = size
        if cand.size is not None and cand.size != (width, height):
            report.add("size_mismatch", *(cand.size_where or origin),
                       f"{cand.path}: annotation says {cand.size[0]}x{cand.size[1]}, image is {width}x{height}")
            continue
        bad = [(box_problem(b, width, height), w) for b, w in zip(cand.boxes, cand.box_where)]
        bad = [(msg, w) for msg, w in bad if msg]
        if bad:
            msg, w = bad[0]
            report.add("bad_box", *w, f"{cand.path}: {msg}")
            for msg, w in bad[1:]:
                report.add("bad_box", *w, f"{cand.path}: {msg} (same record)", skip=False)
            continue
        boxes = [clip_box(b, width, height) for b in cand.boxes]
        for before, after, w in zip(cand.boxes, boxes, cand.box_where):
            if list(before) != after:
                report.add("box_clipped", *w, f"{cand.path}: box {list(before)} clipped to the "
                           f"{width}x{height} image: {after}", skip=False)
        records.append(Record(cand.path, cand.label, cand.split, width, height, np.array(boxes, np.float32)))
        if cand.where is not None:
            where[cand.path] = cand.where
        report.written[cand.split] += 1
    return records, where


# ----------------------------------------------------------------------------------------------
# CUB-200-2011
# ----------------------------------------------------------------------------------------------

CUB_FILES = ("images.txt", "image_class_labels.txt", "train_test_split.txt", "bounding_boxes.txt", "classes.txt")


def _cub_root(root: Path) -> Path:
    for candidate in (root, root / "CUB_200_2011"):
        if (candidate / "images.txt").is_file():
            return candidate
    return root


def _id_table(path: Path, ncols: int, parse: Callable[[list[str]], object], report: Report,
              known: dict[str, object] | None = None) -> dict[str, tuple[object, int]]:
    """Parse "<id> v1 v2 ..." lines into id -> (value, line). Bad lines, duplicate ids and ids
    absent from `known` are reported as findings (the record they would complete is reported
    later, as missing its annotation)."""
    table: dict[str, tuple[object, int]] = {}
    for number, text in text_lines(path):
        parts = text.split()
        if len(parts) != ncols:
            report.add("malformed_line", path, number, f"expected {ncols} fields, got {len(parts)}: {text!r}", skip=False)
            continue
        key = parts[0]
        try:
            value = parse(parts[1:])
        except ValueError as exc:
            report.add("malformed_line", path, number, f"{exc}: {text!r}", skip=False)
            continue
        if key in table:
            report.add("duplicate_id", path, number, f"id {key} already on line {table[key][1]}; this line ignored", skip=False)
            continue
        if known is not None and key not in known:
            report.add("unknown_id", path, number, f"id {key} is not in images.txt", skip=False)
            continue
        table[key] = (value, number)
    return table


def convert_cub(
    root: str | Path,
    *,
    verify: Verify = "decode",
    num_workers: int = 4,
    progress: bool = True,
) -> Conversion:
    """CUB-200-2011 in its official layout (the folder holding images.txt, or its parent).

    Labels are classes.txt ids minus one; boxes "x y width height" become [x, y, x + width,
    y + height]; train_test_split.txt's 1/0 become splits "train"/"test".
    """
    root = _cub_root(Path(root))
    paths = {name: require_file(root / name, "CUB-200-2011") for name in CUB_FILES}
    report = Report()

    classes = _id_table(paths["classes.txt"], 2, lambda p: p[0], report)
    # Line form is "<id> <name>"; names have no spaces in the official file.
    class_ids = sorted(classes, key=lambda k: int(k) if k.isdigit() else -1)
    if [int(k) if k.isdigit() else -1 for k in class_ids] != list(range(1, len(class_ids) + 1)):
        raise SourceError(f"{paths['classes.txt']}: class ids must be 1..N without gaps, got {class_ids[:5]}...")
    class_names = [str(classes[k][0]) for k in class_ids]

    images: dict[str, tuple[str, int]] = {}
    for number, text in text_lines(paths["images.txt"]):
        parts = text.split(maxsplit=1)
        if len(parts) != 2:
            report.add("malformed_line", paths["images.txt"], number, f"expected '<id> <path>': {text!r}")
            continue
        if parts[0] in images:
            report.add("duplicate_id", paths["images.txt"], number,
                       f"id {parts[0]} already on line {images[parts[0]][1]}; this image skipped")
            continue
        images[parts[0]] = (parts[1], number)

    def to_int(p: list[str]) -> int:
        return int(p[0])

    def to_box(p: list[str]) -> list[float]:
        x, y, w, h = (float(v) for v in p)
        return [x, y, x + w, y + h]

    labels = _id_table(paths["image_class_labels.txt"], 2, to_int, report, images)
    splits = _id_table(paths["train_test_split.txt"], 2, to_int, report, images)
    boxes = _id_table(paths["bounding_boxes.txt"], 5, to_box, report, images)

    candidates = []
    for image_id, (rel, number) in images.items():
        where = (str(paths["images.txt"]), number)
        missing = [name for name, table in (("image_class_labels.txt", labels), ("train_test_split.txt", splits),
                                            ("bounding_boxes.txt", boxes)) if image_id not in table]
        if missing:
            report.add("missing_annotation", *where, f"id {image_id} has no valid line in {', '.join(missing)}")
            continue
        label, label_line = labels[image_id]
        if not 1 <= label <= len(class_names):
            report.add("label_out_of_range", paths["image_class_labels.txt"], label_line,
                       f"id {image_id}: label {label} not in 1..{len(class_names)}")
            continue
        is_train, split_line = splits[image_id]
        if is_train not in (0, 1):
            report.add("malformed_line", paths["train_test_split.txt"], split_line,
                       f"id {image_id}: is_training_image must be 0 or 1, got {is_train}")
            continue
        box, box_line = boxes[image_id]
        candidates.append(Candidate(
            path=f"images/{rel}", label=label - 1, split="train" if is_train else "test", where=where,
            boxes=[box], box_where=[(str(paths["bounding_boxes.txt"]), box_line)],
        ))
    records, where = check_images(candidates, root, report, verify, num_workers, progress)
    return Conversion("cub", root, records, class_names, report, where=where)


# ----------------------------------------------------------------------------------------------
# ILSVRC 2012
# ----------------------------------------------------------------------------------------------


def _first_dir(root: Path, names: tuple[str, ...]) -> Path | None:
    for name in names:
        if (root / name).is_dir():
            return root / name
    return None


def read_class_index(path: Path) -> tuple[list[str], list[str]]:
    """(wnids, names) in label order from LOC_synset_mapping.txt ("<wnid> <names>" per line, label
    = line order) or a Keras-style imagenet_class_index.json ({"0": [wnid, name], ...})."""
    require_file(path, "ILSVRC class index")
    wnids: list[str] = []
    names: list[str] = []
    if path.suffix == ".json":
        data = json.loads(path.read_text())
        try:
            items = sorted(((int(k), v) for k, v in data.items()), key=lambda kv: kv[0])
        except (AttributeError, ValueError, TypeError) as exc:
            raise SourceError(f"{path}: expected {{\"<index>\": [wnid, name]}}: {exc}") from None
        if [k for k, _ in items] != list(range(len(items))):
            raise SourceError(f"{path}: class indices must be 0..N-1 without gaps")
        for _, value in items:
            wnids.append(str(value[0]))
            names.append(str(value[1]) if len(value) > 1 else str(value[0]))
    else:
        for number, text in text_lines(path):
            parts = text.split(maxsplit=1)
            wnids.append(parts[0])
            names.append(parts[1] if len(parts) > 1 else parts[0])
    seen: dict[str, int] = {}
    for i, wnid in enumerate(wnids):
        if wnid in seen:
            raise SourceError(f"{path}: entry {i + 1}: duplicate class {wnid} (first at entry {seen[wnid] + 1})")
        seen[wnid] = i
    if not wnids:
        raise SourceError(f"{path}: no classes")
    return wnids, names


def parse_voc_xml(path: Path) -> tuple[tuple[int, int] | None, list[tuple[str, list[float], int]]]:
    """A PASCAL-VOC annotation: ((width, height) or None, [(wnid, [x0, y0, x1, y1], line)]).
    Raises ValueError("line N: ...") on malformed XML or a non-numeric coordinate."""
    parser = xml.parsers.expat.ParserCreate()
    stack: list[str] = []
    text: list[str] = []
    size: dict[str, str] = {}
    objects: list[dict] = []

    def start(name: str, attrs: dict) -> None:
        stack.append(name)
        text.clear()
        if name == "object":
            objects.append({"line": parser.CurrentLineNumber})

    def end(name: str) -> None:
        value = "".join(text).strip()
        parent = stack[-2] if len(stack) > 1 else ""
        if parent == "size" and name in ("width", "height"):
            size[name] = value
        elif parent == "object" and name == "name":
            objects[-1]["name"] = value
        elif parent == "bndbox" and name in ("xmin", "ymin", "xmax", "ymax") and objects:
            objects[-1][name] = value
        stack.pop()
        text.clear()

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = text.append
    try:
        parser.ParseFile(open(path, "rb"))
    except xml.parsers.expat.ExpatError as exc:
        raise ValueError(f"line {exc.lineno}: malformed XML: {xml.parsers.expat.errors.messages[exc.code]}") from None
    out = []
    for obj in objects:
        try:
            box = [float(obj[k]) for k in ("xmin", "ymin", "xmax", "ymax")]
        except (KeyError, ValueError):
            raise ValueError(f"line {obj['line']}: object without a numeric bndbox") from None
        out.append((obj.get("name", ""), box, obj["line"]))
    try:
        wh = (int(size["width"]), int(size["height"])) if size else None
    except ValueError:
        wh = None
    return wh, out


def read_loc_solution(path: Path, report: Report) -> dict[str, tuple[list[tuple[str, list[float]]], int]]:
    """LOC_val_solution.csv ("ImageId,PredictionString" with "wnid x0 y0 x1 y1" repeated):
    image stem -> ([(wnid, box)], line)."""
    out: dict[str, tuple[list[tuple[str, list[float]]], int]] = {}
    with open(path, newline="", encoding="utf-8") as f:
        for number, row in enumerate(csv.reader(f), start=1):
            if number == 1 and row and row[0].strip() == "ImageId":
                continue
            if not row or not "".join(row).strip():
                continue
            if len(row) != 2:
                report.add("malformed_line", path, number, f"expected 'ImageId,PredictionString': {row!r}", skip=False)
                continue
            stem, parts = row[0].strip(), row[1].split()
            if not parts or len(parts) % 5:
                report.add("malformed_line", path, number, "PredictionString must be groups of 'wnid x0 y0 x1 y1'", skip=False)
                continue
            try:
                boxes = [(parts[i], [float(v) for v in parts[i + 1 : i + 5]]) for i in range(0, len(parts), 5)]
            except ValueError as exc:
                report.add("malformed_line", path, number, str(exc), skip=False)
                continue
            if stem in out:
                report.add("duplicate_id", path, number, f"{stem} already on line {out[stem][1]}; this line ignored", skip=False)
                continue
            out[stem] = (boxes, number)
    return out


def _image_names(folder: Path) -> list[str]:
    """The names of the folder's image files, sorted. scandir: the file type comes with the
    listing, so the 1.28 M files of ILSVRC train cost no stat each (only a symlink is followed)."""
    with os.scandir(folder) as entries:
        return sorted(e.name for e in entries
                      if os.path.splitext(e.name)[1].lower() in IMAGE_SUFFIXES and e.is_file())


def _image_files(folder: Path) -> list[Path]:
    return [folder / name for name in _image_names(folder)]


def _imagenet_train(train_dir: Path, root: Path, wnid_index: dict[str, int], split: str,
                    report: Report) -> list[Candidate]:
    candidates = []
    for folder in sorted(p for p in train_dir.iterdir() if p.is_dir()):
        names = _image_names(folder)
        if folder.name not in wnid_index:
            report.add("unknown_class", folder, None, f"class folder {folder.name} is not in the class index; "
                       f"its {len(names)} images skipped", skip=False)
            report.skipped["unknown_class"] += len(names)
            continue
        # strings, not a Path per image: joining paths was a fifth of reading the source
        label, prefix = wnid_index[folder.name], folder.relative_to(root).as_posix()
        for name in names:
            candidates.append(Candidate(f"{prefix}/{name}", label, split, None))
    return candidates


def _val_boxes_source(root: Path, val_dir: Path, val_boxes: Path | None) -> Path:
    if val_boxes is not None:
        if not val_boxes.exists():
            raise SourceError(f"ILSVRC val: box annotations not found: {val_boxes}")
        return val_boxes
    for candidate in (root / "LOC_val_solution.csv", root / "ILSVRC/Annotations/CLS-LOC/val",
                      root / "Annotations/CLS-LOC/val", root / "val_boxes"):
        if candidate.exists():
            return candidate
    if any(val_dir.glob("*.xml")):
        return val_dir
    raise SourceError(
        f"ILSVRC val: no box annotations found: expected {root / 'LOC_val_solution.csv'} or a folder of "
        f"per-image PASCAL-VOC XML files ({root / 'Annotations/CLS-LOC/val'}); pass --val-boxes"
    )


def _imagenet_val(val_dir: Path, root: Path, boxes_src: Path, wnid_index: dict[str, int], split: str,
                  report: Report) -> list[Candidate]:
    files = [(f, None) for f in _image_files(val_dir)]
    for folder in sorted(p for p in val_dir.iterdir() if p.is_dir()):  # val sorted into wnid folders
        files += [(f, folder.name) for f in _image_files(folder)]
    solution = read_loc_solution(boxes_src, report) if boxes_src.is_file() else None
    candidates = []
    for f, folder_wnid in files:
        rel = str(f.relative_to(root))
        if solution is not None:
            if f.stem not in solution:
                report.add("missing_annotation", boxes_src, None, f"no line for {f.stem}")
                continue
            entries, number = solution[f.stem]
            objects = [(w, b, number) for w, b in entries]
            ann, size = str(boxes_src), None
        else:
            xml_path = boxes_src / f"{f.stem}.xml"
            if not xml_path.is_file():
                report.add("missing_annotation", xml_path, None, f"no annotation file for {rel}")
                continue
            try:
                size, objects = parse_voc_xml(xml_path)
            except ValueError as exc:
                line = int(str(exc).split()[1].rstrip(":")) if str(exc).startswith("line ") else None
                report.add("malformed_line", xml_path, line, str(exc))
                continue
            ann = str(xml_path)
            if not objects:
                report.add("missing_annotation", xml_path, None, f"no object boxes for {rel}")
                continue
        wnids = {w for w, _, _ in objects} | ({folder_wnid} if folder_wnid else set())
        if len(wnids) != 1:
            report.add("label_conflict", ann, objects[0][2], f"{rel}: classes disagree: {sorted(wnids)}")
            continue
        wnid = wnids.pop()
        if wnid not in wnid_index:
            report.add("unknown_class", ann, objects[0][2], f"{rel}: class {wnid} is not in the class index")
            continue
        candidates.append(Candidate(
            rel, wnid_index[wnid], split, None,  # the image's own problems are the file's
            boxes=[b for _, b, _ in objects], box_where=[(ann, line) for _, _, line in objects],
            size=size, size_where=(ann, None),
        ))
    return candidates


def convert_imagenet(
    root: str | Path,
    *,
    class_index: str | Path | None = None,
    val_boxes: str | Path | None = None,
    train_split: str = "train",
    val_split: str = "test",
    verify: Verify = "decode",
    num_workers: int = 8,
    progress: bool = True,
) -> Conversion:
    """ILSVRC 2012: `root` holds train/<wnid>/*.JPEG and val/*.JPEG (or the Kaggle layout
    ILSVRC/Data/CLS-LOC/{train,val}).

    Labels come from the class index (`class_index`, else root/LOC_synset_mapping.txt, else the
    sorted train folder names -- the same order). Val boxes come from `val_boxes` (a
    LOC_val_solution.csv or a folder of per-image VOC XML), else the usual places; several boxes
    per image; the val label is the boxes' class. The official val set is the WSOL "test" split.
    """
    root = Path(root)
    train_dir = _first_dir(root, ("train", "ILSVRC/Data/CLS-LOC/train", "Data/CLS-LOC/train"))
    val_dir = _first_dir(root, ("val", "ILSVRC/Data/CLS-LOC/val", "Data/CLS-LOC/val"))
    if train_dir is None and val_dir is None:
        raise SourceError(f"ILSVRC: neither {root / 'train'} nor {root / 'val'} exists")
    report = Report()
    if class_index is not None:
        wnids, names = read_class_index(Path(class_index))
        index_source = str(class_index)
    elif (root / "LOC_synset_mapping.txt").is_file():
        wnids, names = read_class_index(root / "LOC_synset_mapping.txt")
        index_source = str(root / "LOC_synset_mapping.txt")
    elif train_dir is not None:
        wnids = sorted(p.name for p in train_dir.iterdir() if p.is_dir())
        names = list(wnids)
        index_source = f"sorted folder names of {train_dir}"
    else:
        raise SourceError(f"ILSVRC: class index not found: {root / 'LOC_synset_mapping.txt'} (or pass --class-index)")
    wnid_index = {w: i for i, w in enumerate(wnids)}
    candidates = []
    if train_dir is not None:
        candidates += _imagenet_train(train_dir, root, wnid_index, train_split, report)
    if val_dir is not None:
        boxes_src = _val_boxes_source(root, val_dir, Path(val_boxes) if val_boxes else None)
        candidates += _imagenet_val(val_dir, root, boxes_src, wnid_index, val_split, report)
    records, where = check_images(candidates, root, report, verify, num_workers, progress)
    return Conversion("imagenet", root, records, names, report,
                      extra={"wnids": wnids, "class_index_source": index_source}, where=where)


# ----------------------------------------------------------------------------------------------
# wsolevaluation metadata
# ----------------------------------------------------------------------------------------------


def _csv_fields(path: Path, nfields: int, report: Report) -> Iterator[tuple[int, list[str]]]:
    """Lines "path,v1,...": the path may itself hold commas, so split from the right."""
    for number, text in text_lines(path):
        parts = [p.strip() for p in text.rsplit(",", nfields - 1)]
        if len(parts) != nfields:
            report.add("malformed_line", path, number, f"expected {nfields} comma-separated fields: {text!r}", skip=False)
            continue
        yield number, parts


def _wsol_split(meta_dir: Path, split: str, report: Report) -> tuple[list[Candidate], list[tuple[int, Path, int]]]:
    """Candidates of one split folder, labels unchecked; also (label, file, line) for the
    range check that needs every split's labels first."""
    ids_file = require_file(meta_dir / "image_ids.txt", f"wsol metadata {split}")
    labels_file = require_file(meta_dir / "class_labels.txt", f"wsol metadata {split}")
    sizes_file = meta_dir / "image_sizes.txt"
    loc_file = meta_dir / "localization.txt"
    if split != "train":
        require_file(loc_file, f"wsol metadata {split} (an evaluation split needs boxes)")
    image_ids: dict[str, int] = {}
    for number, text in text_lines(ids_file):
        if text in image_ids:
            report.add("duplicate_id", ids_file, number, f"{text} already on line {image_ids[text]}; this line skipped")
            continue
        image_ids[text] = number

    def by_path(path: Path, nfields: int) -> dict[str, list[tuple[list[str], int]]]:
        table: dict[str, list[tuple[list[str], int]]] = {}
        for number, parts in _csv_fields(path, nfields, report):
            if parts[0] not in image_ids:
                report.add("unknown_id", path, number, f"{parts[0]} is not in image_ids.txt", skip=False)
                continue
            table.setdefault(parts[0], []).append((parts[1:], number))
        return table

    labels = by_path(labels_file, 2)
    sizes = by_path(sizes_file, 3) if sizes_file.is_file() else {}
    locs = by_path(loc_file, 5) if loc_file.is_file() else {}
    candidates, label_lines = [], []
    for rel, number in image_ids.items():
        where = (str(ids_file), number)
        entries = labels.get(rel)
        if not entries:
            report.add("missing_annotation", labels_file, None, f"no label for {rel} (image_ids.txt:{number})")
            continue
        (label_text,), label_line = entries[0]
        for _, dup_line in entries[1:]:
            report.add("duplicate_id", labels_file, dup_line, f"{rel} already labelled on line {label_line}; ignored", skip=False)
        try:
            label = int(label_text)
        except ValueError:
            report.add("malformed_line", labels_file, label_line, f"label {label_text!r} is not an integer")
            continue
        cand = Candidate(rel, label, split, where, boxes=[], box_where=[])
        if rel in sizes:
            (w, h), size_line = sizes[rel][0]
            try:
                cand.size, cand.size_where = (int(w), int(h)), (str(sizes_file), size_line)
            except ValueError:
                report.add("malformed_line", sizes_file, size_line, f"size {w},{h} is not integer")
                continue
        try:
            for values, line in locs.get(rel, []):
                cand.boxes.append([float(v) for v in values])
                cand.box_where.append((str(loc_file), line))
        except ValueError as exc:
            report.add("malformed_line", loc_file, line, f"{rel}: {exc}")
            continue
        if split != "train" and not cand.boxes:
            report.add("missing_annotation", loc_file, None, f"no box for {rel} (image_ids.txt:{number})")
            continue
        candidates.append(cand)
        label_lines.append((label, labels_file, label_line))
    return candidates, label_lines


def wsol_split_dirs(metadata: Path) -> dict[str, Path]:
    """Split name -> metadata folder: `metadata` itself when it holds image_ids.txt (split named
    after the folder), else each sub-folder that does (train, val, test first)."""
    if (metadata / "image_ids.txt").is_file():
        return {metadata.name: metadata}
    found = {p.name: p for p in metadata.iterdir() if p.is_dir() and (p / "image_ids.txt").is_file()} \
        if metadata.is_dir() else {}
    if not found:
        raise SourceError(f"wsol metadata: annotation file not found: {metadata / 'image_ids.txt'} "
                          f"(nor in any sub-folder of {metadata})")
    order = [s for s in ("train", "val", "test") if s in found] + sorted(set(found) - {"train", "val", "test"})
    return {s: found[s] for s in order}


def convert_wsol_metadata(
    root: str | Path,
    metadata: str | Path,
    *,
    num_classes: int | None = None,
    class_names: list[str] | None = None,
    verify: Verify = "decode",
    num_workers: int = 4,
    progress: bool = True,
) -> Conversion:
    """wsolevaluation metadata (image_ids.txt, class_labels.txt "path,label", image_sizes.txt
    "path,w,h", localization.txt "path,x0,y0,x1,y1" one line per box) for images under `root`.

    `metadata` is one split folder or a folder of split folders (train/val/test). The number of
    classes is `len(class_names)`, else `num_classes`, else the largest label + 1.
    """
    root, metadata = Path(root), Path(metadata)
    report = Report()
    candidates: list[Candidate] = []
    label_lines: list[tuple[int, Path, int]] = []
    for split, folder in wsol_split_dirs(metadata).items():
        c, lines = _wsol_split(folder, split, report)
        candidates += c
        label_lines += lines
    if class_names is not None:
        n = len(class_names)
    elif num_classes is not None:
        n = num_classes
    else:
        n = max([lab for lab, _, _ in label_lines if lab >= 0], default=-1) + 1
    kept = []
    for cand, (label, file, line) in zip(candidates, label_lines):
        if not 0 <= label < n:
            report.add("label_out_of_range", file, line, f"{cand.path}: label {label} not in [0, {n})")
            continue
        kept.append(cand)
    names = list(class_names) if class_names is not None else [f"class_{i:03d}" for i in range(n)]
    records, where = check_images(kept, root, report, verify, num_workers, progress)
    return Conversion("wsol-metadata", root, records, names, report, extra={"metadata": str(metadata)},
                      where=where)

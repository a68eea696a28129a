"""The ImageNet-shaped generator writes trees the real ILSVRC source reads: counts, class order
from LOC_synset_mapping.txt, several boxes on some val images, varied sizes, and the same
images for the same seed."""

from __future__ import annotations

import json
from collections import Counter


from scm_ray.data.imagenet_like import MARKER, ImageNetLikeSpec, generate, wnids
from scm_ray.data.sources import convert_imagenet, parse_voc_xml


def test_tree_parses_with_the_ilsvrc_source(tmp_path):
    root = tmp_path / "tree"
    spec = ImageNetLikeSpec(60, val_fraction=0.5, seed=1)
    done = generate(root, spec, num_workers=2)
    assert done["images"] == {"train": 30, "val": 30}
    conv = convert_imagenet(root, num_workers=1, progress=False)
    assert conv.report.num_skipped == 0 and not conv.report.problems
    assert Counter(r.split for r in conv.records) == {"train": 30, "test": 30}
    # Class order: the mapping file's line order, 1,000 classes whichever folders exist.
    assert conv.extra["wnids"] == wnids() and len(conv.class_names) == 1000 and wnids() == sorted(wnids())
    for r in conv.records:
        if r.split == "train":
            assert r.path.startswith(f"train/{wnids()[r.label]}/")
        else:  # the val label is its boxes' class, read from the XML
            xml = root / "Annotations/CLS-LOC/val" / (r.path.split("/")[-1].rsplit(".", 1)[0] + ".xml")
            size, objects = parse_voc_xml(xml)
            assert size == (r.width, r.height) and {w for w, _, _ in objects} == {wnids()[r.label]}
            assert len(objects) == len(r.boxes)
    test = [r for r in conv.records if r.split == "test"]
    assert sum(len(r.boxes) for r in test) == done["val_boxes"]
    assert any(len(r.boxes) > 1 for r in test) and done["val_multi_box"] > 0
    # ImageNet-like spread: not one size; portrait and landscape; boxes inside their images.
    sizes = {(r.width, r.height) for r in conv.records}
    assert len(sizes) > 10 and any(w > h for w, h in sizes) and any(w < h for w, h in sizes)
    assert all(((r.boxes[:, 2] <= r.width) & (r.boxes[:, 3] <= r.height)).all() for r in test)
    # Per-class box files for part of the training images, in the official place.
    assert 0 < len(list((root / "Annotations/CLS-LOC/train").glob("*/*.xml"))) < 30


def test_generation_is_deterministic_and_reused(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    generate(a, ImageNetLikeSpec(6, seed=4), num_workers=1)
    generate(b, ImageNetLikeSpec(6, seed=4), num_workers=2)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    marker = json.loads((a / MARKER).read_text())
    first = next(a.glob("train/*/*.JPEG"))
    first.write_bytes(b"")  # a finished tree with the same spec is not regenerated
    assert generate(a, ImageNetLikeSpec(6, seed=4)) == marker and first.read_bytes() == b""

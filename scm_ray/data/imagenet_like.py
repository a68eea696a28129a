"""ImageNet-shaped input trees for benchmarks and tests: the official ILSVRC 2012 layout that
`scm-ray prepare imagenet` reads, at any size, rendered by the synthetic renderer.

Layout (the one the official tarballs unpack to):

    ROOT/LOC_synset_mapping.txt                      1,000 "<wnid> <name>" lines, label = line order
    ROOT/train/<wnid>/<wnid>_<n>.JPEG                 training images, one folder per class
    ROOT/Annotations/CLS-LOC/train/<wnid>/<stem>.xml  boxes for part of the training images
    ROOT/val/ILSVRC2012_val_<8 digits>.JPEG           the official validation images (flat)
    ROOT/Annotations/CLS-LOC/val/<stem>.xml           one PASCAL-VOC file per val image, 1+ boxes

Why the shape matters: prepare cost depends on pixels (decode/resize/encode), on the number of
files and folders (parsing, one XML per val image) and on the class count; a benchmark on
3,800 square 64 px images says nothing about any of these. So sizes and aspect ratios are drawn
like ImageNet's (most images 500 px on the long side at 4:3 or 3:2, a spread from ~150 to
~800 px, ~2 % large ones up to 1,800 px), the val split has several boxes on some images (about
1.6 per image, as ILSVRC's 80,477 boxes on 50,000 images), and ~40 % of training images have a
box file (as in ILSVRC). The scene is the synthetic renderer's (data/synthetic.py), so the
JPEGs compress like textured photos rather than flat colour.

Deterministic: image i of a split is drawn from its own generator seeded by (seed, split, i),
so a tree does not depend on the worker count, and a larger tree with the same seed starts with
a smaller one's images. Generation is idempotent: a finished tree (marker file written last)
with the same arguments is reused.
"""

from __future__ import annotations

import json
import math
import multiprocessing
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from scm_ray.data import synthetic

NUM_CLASSES = 1000
MARKER = "imagenet_like.json"
# Bump when the drawing or the layout changes, so old trees are regenerated.
VERSION = 1
# The renderer's own class count: its look (hue, shape, texture) per rendered class; the
# ImageNet class an image is filed under is drawn separately.
RENDER_CLASSES = 40


@dataclass(frozen=True)
class ImageNetLikeSpec:
    """`num_images` in all, `val_fraction` of them in val (rounded, at least 1 each when
    num_images >= 2). ILSVRC's own fraction is 3.8 %; benchmarks use more so the evaluation
    stage has enough images to time."""

    num_images: int
    val_fraction: float = 0.2
    seed: int = 0
    jpeg_quality: int = 90
    train_box_fraction: float = 0.4

    def __post_init__(self) -> None:
        if self.num_images < 1:
            raise ValueError(f"num_images must be >= 1, got {self.num_images}")
        if not 0.0 <= self.val_fraction <= 1.0:
            raise ValueError(f"val_fraction must be in [0, 1], got {self.val_fraction}")

    @property
    def num_val(self) -> int:
        n = round(self.num_images * self.val_fraction)
        if self.num_images >= 2 and 0 < self.val_fraction < 1:
            n = min(max(n, 1), self.num_images - 1)
        return n

    @property
    def num_train(self) -> int:
        return self.num_images - self.num_val


def wnids() -> list[str]:
    """1,000 WordNet-style ids, ascending (the official mapping file is sorted, label = line)."""
    return [f"n{1440764 + 7919 * k:08d}" for k in range(NUM_CLASSES)]


def draw_size(rng: np.random.Generator) -> tuple[int, int]:
    """(width, height) spread like ILSVRC's: the long side 500 px for most images, a range of
    smaller ones, a few large ones; aspect 4:3 / 3:2 / 1:1 / portrait / anything in [1/2, 2]."""
    u = rng.random()
    if u < 0.65:
        long_side = 500
    elif u < 0.98:
        long_side = int(np.clip(rng.lognormal(math.log(380), 0.35), 150, 900))
    else:
        long_side = int(rng.integers(1000, 1801))
    a = rng.random()
    aspect = (4 / 3 if a < 0.45 else 3 / 2 if a < 0.6 else 1.0 if a < 0.7 else
              3 / 4 if a < 0.85 else math.exp(rng.uniform(-math.log(2), math.log(2))))
    if aspect >= 1:
        return long_side, max(32, round(long_side / aspect))
    return max(32, round(long_side * aspect)), long_side


def _objects(rng: np.random.Generator, split: str) -> int:
    """The most objects the renderer may place (it places 1..this many, as room allows): one on
    training images; on val images ~1.5 boxes per image, several on ~30 % (ILSVRC val: 1.6)."""
    if split != "val":
        return 1
    return int(rng.choice([1, 2, 3, 5], p=[0.4, 0.3, 0.2, 0.1]))


def _voc_xml(folder: str, stem: str, width: int, height: int, wnid: str, boxes: np.ndarray) -> str:
    objects = "".join(
        f"\t<object>\n\t\t<name>{wnid}</name>\n\t\t<pose>Unspecified</pose>\n\t\t<truncated>0</truncated>\n"
        f"\t\t<difficult>0</difficult>\n\t\t<bndbox>\n\t\t\t<xmin>{int(b[0])}</xmin>\n\t\t\t<ymin>{int(b[1])}</ymin>\n"
        f"\t\t\t<xmax>{int(b[2])}</xmax>\n\t\t\t<ymax>{int(b[3])}</ymax>\n\t\t</bndbox>\n\t</object>\n"
        for b in boxes
    )
    return (f"<annotation>\n\t<folder>{folder}</folder>\n\t<filename>{stem}</filename>\n"
            f"\t<source>\n\t\t<database>ILSVRC_2012</database>\n\t</source>\n"
            f"\t<size>\n\t\t<width>{width}</width>\n\t\t<height>{height}</height>\n\t\t<depth>3</depth>\n\t</size>\n"
            f"\t<segmented>0</segmented>\n{objects}</annotation>\n")


def _render_one(spec: ImageNetLikeSpec, root: Path, split: str, i: int) -> tuple[int, int]:
    """Write image i of a split (and its XML where it has one); returns (label, box count)."""
    rng = np.random.default_rng([spec.seed, synthetic.SPLITS.index(split), i, 17])
    width, height = draw_size(rng)
    label = int(rng.integers(NUM_CLASSES))
    render_spec = synthetic.SyntheticSpec(
        num_train=0, num_val=0, num_test=0, image_size=(width, height), num_classes=RENDER_CLASSES,
        seed=spec.seed, max_objects=_objects(rng, split), min_coverage=0.05, max_coverage=0.35,
        jpeg_quality=spec.jpeg_quality,
    )
    rgb, _, boxes = synthetic.render(render_spec, split, i)  # (H, W, 3), label unused, (K, 4)
    wnid = wnids()[label]
    if split == "train":
        stem = f"{wnid}_{i}"
        synthetic.write_image(root / "train" / wnid / f"{stem}.JPEG", rgb, spec.jpeg_quality)
        if rng.random() < spec.train_box_fraction:
            xml = root / "Annotations/CLS-LOC/train" / wnid / f"{stem}.xml"
            xml.parent.mkdir(parents=True, exist_ok=True)
            xml.write_text(_voc_xml(wnid, stem, width, height, wnid, boxes))
    else:
        stem = f"ILSVRC2012_val_{i + 1:08d}"
        synthetic.write_image(root / "val" / f"{stem}.JPEG", rgb, spec.jpeg_quality)
        xml = root / "Annotations/CLS-LOC/val" / f"{stem}.xml"
        xml.write_text(_voc_xml("val", stem, width, height, wnid, boxes))
    return label, len(boxes)


def _render_range(args: tuple) -> list[tuple[int, int]]:
    spec, root, split, start, stop = args
    return [_render_one(spec, Path(root), split, i) for i in range(start, stop)]


def _worker_init() -> None:
    import cv2

    cv2.setNumThreads(1)


def generate(root: str | Path, spec: ImageNetLikeSpec, num_workers: int = 1) -> dict:
    """Write the tree under `root` (reused when a finished one with the same spec is there);
    returns the marker's content: the spec and per-split image and box counts."""
    root = Path(root)
    wanted = {"version": VERSION, **asdict(spec)}
    marker = root / MARKER
    if marker.is_file():
        done = json.loads(marker.read_text())
        if done.get("spec") == wanted:
            return done
    marker.unlink(missing_ok=True)
    (root / "val").mkdir(parents=True, exist_ok=True)
    (root / "Annotations/CLS-LOC/val").mkdir(parents=True, exist_ok=True)
    (root / "LOC_synset_mapping.txt").write_text("".join(f"{w} class {k}\n" for k, w in enumerate(wnids())))
    jobs = [(spec, str(root), split, s, min(s + 64, n))
            for split, n in (("train", spec.num_train), ("val", spec.num_val)) for s in range(0, n, 64)]
    if num_workers > 1 and len(jobs) > 1:
        # spawn, not fork: a parent with running threads (torch, pyarrow, a test runner) can
        # leave a forked child waiting forever on a lock copied in its held state.
        with multiprocessing.get_context("spawn").Pool(num_workers, initializer=_worker_init) as pool:
            chunks = pool.map(_render_range, jobs, chunksize=1)
    else:
        chunks = [_render_range(job) for job in jobs]
    counts = {"train": [0, 0], "val": [0, 0]}
    for job, chunk in zip(jobs, chunks):
        counts[job[2]][0] += len(chunk)
        counts[job[2]][1] += sum(k for _, k in chunk)
    done = {"spec": wanted, "images": {s: c[0] for s, c in counts.items()},
            "val_boxes": counts["val"][1],
            "val_multi_box": sum(1 for job, chunk in zip(jobs, chunks) if job[2] == "val" for _, k in chunk if k > 1)}
    marker.write_text(json.dumps(done, indent=1))
    return done

"""Seeded synthetic WSOL dataset: salient textured objects on cluttered, colour-poor backgrounds.

Why it looks like this: a demo model (a tiny ViT from random init, a few CPU minutes) must learn
both the class and where the object is from image labels alone. An earlier, naive version (class
evidence in a small part of the object) only reached ~41 % GT-Known in an early probe: the
class activation map then lights the discriminative part, not the object. Here every object pixel
carries its class's evidence -- a class hue at high saturation, a class texture and a class
shape -- while the background is drawn only from low-saturation colours (clutter includes the
same shapes and textures, in grey), so the whole object, and nothing outside it, is
discriminative. The box is never drawn and nothing marks its position: a centre box or the whole
image scores poorly because objects cover 5-40 % of the image at uniformly random positions.

Every image is rendered from its own generator seeded by (seed, split, index), so output does not
depend on chunking or worker count, and any image can be re-rendered alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

# Split names and the order their seeds are derived in.
SPLITS: tuple[str, ...] = ("train", "val", "test")

# Object shapes are compact (they fill 70-100 % of their box): with thin or hollow shapes the box
# holds mostly background and a map that covers the object's pixels still scores a poor IoU.
SHAPES: tuple[str, ...] = ("disc", "square", "hexagon", "cross", "octagon", "pentagon")
# Clutter uses these too, so shape alone never marks the object.
CLUTTER_SHAPES: tuple[str, ...] = SHAPES + ("triangle", "star")
TEXTURES: tuple[str, ...] = ("stripes", "checker", "dots", "rings")

# HSV ranges (OpenCV uint8: hue 0..179, saturation/value 0..255). Objects and background never
# share a saturation: that is what makes the object salient and the clutter class-free.
BG_SAT_MAX = 60
OBJ_SAT_MIN = 185


@dataclass(frozen=True)
class SyntheticSpec:
    """What to generate. `image_size` is the side of a square image, or (width, height)."""

    num_train: int = 3000
    num_val: int = 400
    num_test: int = 400
    image_size: int | tuple[int, int] = 64
    num_classes: int = 4
    seed: int = 0
    max_objects: int = 1
    min_coverage: float = 0.05
    max_coverage: float = 0.40
    jpeg_quality: int = 95

    def __post_init__(self) -> None:
        width, height = self.size
        if width < 16 or height < 16:
            raise ValueError(f"image_size must be >= 16 px per side, got {self.image_size}")
        if not 1 <= self.num_classes <= 180:
            raise ValueError(f"num_classes must be in [1, 180], got {self.num_classes}")
        if min(self.num_train, self.num_val, self.num_test) < 0:
            raise ValueError("split sizes must be >= 0")
        if self.max_objects < 1:
            raise ValueError(f"max_objects must be >= 1, got {self.max_objects}")
        if not 0.0 < self.min_coverage <= self.max_coverage <= 0.9:
            raise ValueError(
                f"need 0 < min_coverage <= max_coverage <= 0.9, got "
                f"{self.min_coverage}, {self.max_coverage}"
            )
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality must be in [1, 100], got {self.jpeg_quality}")

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) in pixels."""
        if isinstance(self.image_size, int):
            return self.image_size, self.image_size
        width, height = self.image_size
        return int(width), int(height)

    def count(self, split: str) -> int:
        return {"train": self.num_train, "val": self.num_val, "test": self.num_test}[split]


@dataclass(frozen=True)
class ClassStyle:
    """The fixed look of one class: hue centre (OpenCV units), shape and texture."""

    name: str
    hue: float
    shape: str
    texture: str


def class_styles(num_classes: int) -> list[ClassStyle]:
    """Hues evenly spaced around the colour wheel; shape and texture cycle with coprime-ish
    periods so the first 12 classes all differ in shape, texture and hue."""
    styles = []
    for c in range(num_classes):
        shape = SHAPES[c % len(SHAPES)]
        texture = TEXTURES[c % len(TEXTURES)]
        styles.append(ClassStyle(f"{c:02d}_{shape}_{texture}", 180.0 * c / num_classes, shape, texture))
    return styles


def class_names(num_classes: int) -> list[str]:
    return [s.name for s in class_styles(num_classes)]


# ----------------------------------------------------------------------------------------------
# Drawing
# ----------------------------------------------------------------------------------------------


def _unit_polygon(shape: str) -> np.ndarray:
    """Outline of a shape centred on 0, roughly unit radius. (P, 2) float."""
    if shape == "disc":
        t = np.linspace(0, 2 * math.pi, 40, endpoint=False)
        return np.stack([np.cos(t), np.sin(t)], axis=1)
    if shape == "square":
        return np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], float)
    if shape == "triangle":
        return np.array([[0, -1], [1, 1], [-1, 1]], float)
    if shape in ("pentagon", "hexagon", "octagon"):
        n = {"pentagon": 5, "hexagon": 6, "octagon": 8}[shape]
        t = np.arange(n) * 2 * math.pi / n - math.pi / 2
        return np.stack([np.cos(t), np.sin(t)], axis=1)
    if shape == "star":
        t = np.arange(10) * math.pi / 5 - math.pi / 2
        r = np.where(np.arange(10) % 2 == 0, 1.0, 0.45)
        return np.stack([r * np.cos(t), r * np.sin(t)], axis=1)
    if shape == "cross":
        a = 0.5
        return np.array(
            [[-a, -1], [a, -1], [a, -a], [1, -a], [1, a], [a, a], [a, 1], [-a, 1], [-a, a],
             [-1, a], [-1, -a], [-a, -a]], float,
        )
    raise ValueError(f"unknown shape {shape!r}")


def _shape_mask(shape: str, width: int, height: int, angle: float) -> np.ndarray:
    """Filled shape rotated by `angle` and stretched to touch all four sides of a
    width x height canvas, so the tight box of the mask is the canvas. (height, width) bool."""
    pts = _unit_polygon(shape)  # (P, 2)
    c, s = math.cos(angle), math.sin(angle)
    pts = pts @ np.array([[c, s], [-s, c]])  # (P, 2) rotated
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    pts = (pts - lo) / (hi - lo)  # (P, 2) in [0, 1]
    pts = pts * np.array([width - 1, height - 1])
    mask = np.zeros((height, width), np.uint8)
    cv2.fillPoly(mask, [np.round(pts * 16).astype(np.int32)], 1, lineType=cv2.LINE_8, shift=4)
    return mask.astype(bool)


def _texture(kind: str, width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """Binary texture on a width x height patch, random scale/phase/orientation. (h, w) bool."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)  # (h, w) each
    period = rng.uniform(4.0, 7.0)
    angle = rng.uniform(0, math.pi)
    u = x * math.cos(angle) + y * math.sin(angle)
    v = -x * math.sin(angle) + y * math.cos(angle)
    phase = rng.uniform(0, period)
    if kind == "stripes":
        return np.mod(u + phase, period) < period / 2
    if kind == "checker":
        return (np.floor((u + phase) / period) + np.floor((v + phase) / period)) % 2 == 0
    if kind == "dots":
        du = np.mod(u + phase, period) - period / 2
        dv = np.mod(v + phase, period) - period / 2
        return du * du + dv * dv < (0.3 * period) ** 2
    if kind == "rings":
        cx, cy = rng.uniform(0.3, 0.7) * width, rng.uniform(0.3, 0.7) * height
        r = np.sqrt((x - cx) ** 2 + (y - cy) ** 2)
        return np.mod(r + phase, period) < period / 2
    raise ValueError(f"unknown texture {kind!r}")


def _smooth_field(rng: np.random.Generator, width: int, height: int, cells: int, lo: float,
                  hi: float) -> np.ndarray:
    """Low-frequency random field in [lo, hi]. (height, width) float32."""
    coarse = rng.uniform(lo, hi, size=(cells, cells)).astype(np.float32)
    return cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)


def _background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Cluttered low-saturation background in HSV. (height, width, 3) float32."""
    hsv = np.empty((height, width, 3), np.float32)
    hsv[..., 0] = _smooth_field(rng, width, height, 3, 0, 179)
    hsv[..., 1] = _smooth_field(rng, width, height, 4, 0, BG_SAT_MAX)
    hsv[..., 2] = _smooth_field(rng, width, height, 5, 50, 210)
    side = min(width, height)
    for _ in range(int(rng.integers(6, 14))):
        # Clutter: the objects' shapes and textures too, but only in background colours.
        w = int(rng.uniform(0.12, 0.4) * side)
        h = int(rng.uniform(0.12, 0.4) * side)
        x0 = int(rng.integers(-w // 3, width - 2 * w // 3))
        y0 = int(rng.integers(-h // 3, height - 2 * h // 3))
        mask = _shape_mask(CLUTTER_SHAPES[int(rng.integers(len(CLUTTER_SHAPES)))], w, h, rng.uniform(0, math.pi))
        if rng.random() < 0.6:
            mask &= _texture(TEXTURES[int(rng.integers(len(TEXTURES)))], w, h, rng)
        _paste(hsv, mask, x0, y0, (rng.uniform(0, 179), rng.uniform(0, BG_SAT_MAX),
                                   rng.uniform(30, 230)))
    return hsv


def _paste(canvas: np.ndarray, mask: np.ndarray, x0: int, y0: int, value) -> None:
    """Write `value` (a per-channel tuple, or an (h, w, 3) array) where `mask` is set, clipped to
    the canvas."""
    H, W = canvas.shape[:2]
    h, w = mask.shape
    cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x0 + w, W), min(y0 + h, H)
    if cx1 <= cx0 or cy1 <= cy0:
        return
    m = mask[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0]  # (h', w')
    region = canvas[cy0:cy1, cx0:cx1]  # (h', w', 3) view
    if isinstance(value, np.ndarray):
        region[m] = value[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0][m]
    else:
        region[m] = np.asarray(value, np.float32)


def _object_hsv(style: ClassStyle, num_classes: int, width: int, height: int,
                rng: np.random.Generator) -> np.ndarray:
    """The object's fill: class hue (small jitter) everywhere, class texture in two tones of
    high saturation. (height, width, 3) float32."""
    jitter = 0.25 * 180.0 / max(num_classes, 2)
    hue = (style.hue + rng.uniform(-jitter, jitter)) % 180.0
    pattern = _texture(style.texture, width, height, rng)  # (h, w) bool
    hsv = np.empty((height, width, 3), np.float32)
    hsv[..., 0] = hue
    hsv[..., 1] = np.where(pattern, rng.uniform(225, 255), rng.uniform(OBJ_SAT_MIN, 215))
    hsv[..., 2] = np.where(pattern, rng.uniform(215, 255), rng.uniform(120, 165))
    return hsv


def _place_boxes(rng: np.random.Generator, spec: SyntheticSpec, count: int) -> list[tuple[int, int, int, int]]:
    """Up to `count` non-overlapping (x0, y0, w, h) boxes, each covering min..max coverage of
    the image; at least one is always returned."""
    W, H = spec.size
    boxes: list[tuple[int, int, int, int]] = []
    for attempt in range(20 * count):
        if len(boxes) == count:
            break
        area = rng.uniform(spec.min_coverage, spec.max_coverage) * W * H
        aspect = math.exp(rng.uniform(-0.45, 0.45))  # w / h
        w = min(W, max(4, int(round(math.sqrt(area * aspect)))))
        h = min(H, max(4, int(round(area / w))))
        x0 = int(rng.integers(0, W - w + 1))
        y0 = int(rng.integers(0, H - h + 1))
        clear = all(
            x0 + w <= bx or bx + bw <= x0 or y0 + h <= by or by + bh <= y0
            for bx, by, bw, bh in boxes
        )
        if clear:
            boxes.append((x0, y0, w, h))
    return boxes


def render(spec: SyntheticSpec, split: str, index: int) -> tuple[np.ndarray, int, np.ndarray]:
    """Image `index` of `split`: (RGB uint8 (H, W, 3), label, boxes (K, 4) float32).

    Boxes are [x0, y0, x1, y1] with inclusive pixel corners (the +1 convention of the
    evaluation): the tight box of the object's pixels.
    """
    rng = np.random.default_rng([spec.seed, SPLITS.index(split), index])
    W, H = spec.size
    label = int(rng.integers(spec.num_classes))
    style = class_styles(spec.num_classes)[label]
    hsv = _background(rng, W, H)  # (H, W, 3)
    count = int(rng.integers(1, spec.max_objects + 1))
    boxes = []
    for x0, y0, w, h in _place_boxes(rng, spec, count):
        mask = _shape_mask(style.shape, w, h, rng.uniform(-0.15, 0.15))  # (h, w)
        _paste(hsv, mask, x0, y0, _object_hsv(style, spec.num_classes, w, h, rng))
        ys, xs = np.nonzero(mask)
        boxes.append([x0 + xs.min(), y0 + ys.min(), x0 + xs.max(), y0 + ys.max()])
    hsv[..., 2] += rng.normal(0, 6, size=(H, W)).astype(np.float32)  # sensor-like noise
    hsv = np.clip(hsv, 0, [179, 255, 255]).astype(np.uint8)
    rgb = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)  # (H, W, 3)
    return rgb, label, np.asarray(boxes, np.float32).reshape(-1, 4)


def image_relpath(spec: SyntheticSpec, split: str, index: int, label: int) -> str:
    """ImageFolder-style path (images/<split>/<class>/<split>_<index>.jpg), relative to the
    dataset folder, so torchvision baselines can read the same files."""
    return f"images/{split}/{class_styles(spec.num_classes)[label].name}/{split}_{index:06d}.jpg"


def write_image(path: Path, rgb: np.ndarray, quality: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise OSError(f"cannot encode {path}")
    path.write_bytes(data.tobytes())


def render_chunk(spec: SyntheticSpec, out_dir: str, split: str, start: int, stop: int) -> list[tuple]:
    """Render and write images start..stop-1 of a split; returns record tuples
    (path, label, split, width, height, boxes). Top-level so a process pool can run it."""
    W, H = spec.size
    rows = []
    for i in range(start, stop):
        rgb, label, boxes = render(spec, split, i)
        rel = image_relpath(spec, split, i, label)
        write_image(Path(out_dir) / rel, rgb, spec.jpeg_quality)
        rows.append((rel, label, split, W, H, boxes))
    return rows


def coverage(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    """Fraction of the image each box covers, +1 pixel convention. (K,) float."""
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    return (b[:, 2] - b[:, 0] + 1) * (b[:, 3] - b[:, 1] + 1) / (width * height)

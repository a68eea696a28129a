"""How an image becomes a model input: the one place for the normalisation statistics and the
evaluation resize (no Ray, no FFCV).

Training and evaluation loaders normalise with these statistics, `prepare` stores evaluation
images resized with `resize_image`, and checkpoints record a `Preprocess` so that `Localizer`
feeds a new image to a model exactly as the evaluation fed the stored ones.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np

# ImageNet statistics (0..1 units): what timm's DeiT/ViT weights expect.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Area averaging to shrink (no aliasing), bilinear to enlarge. (h, w, 3) uint8; size is
    (width, height) as cv2 takes it."""
    h, w = image.shape[:2]
    if (w, h) == size:
        return image
    shrink = size[0] * size[1] < w * h
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


@dataclass(frozen=True)
class Preprocess:
    """An RGB uint8 image -> the model's input: resized to size x size (both sides, as
    evaluation splits are stored), scaled to 0..1, normalised by mean/std."""

    size: int
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    resize: str = "square"
    interpolation: str = "area-shrink-bilinear-enlarge"

    def to_dict(self) -> dict:
        out = asdict(self)
        out.update(mean=list(self.mean), std=list(self.std))
        return out

    @classmethod
    def from_dict(cls, data: dict) -> "Preprocess":
        known = {k: data[k] for k in ("size", "resize", "interpolation") if k in data}
        return cls(mean=tuple(data.get("mean", IMAGENET_MEAN)), std=tuple(data.get("std", IMAGENET_STD)),
                   **known)

    def batch(self, images: list[np.ndarray]) -> np.ndarray:
        """uint8 (H_i, W_i, 3) images -> float32 (B, 3, size, size), normalised."""
        stack = np.stack([resize_image(im, (self.size, self.size)) for im in images])  # (B, s, s, 3)
        x = (stack.astype(np.float32) / 255.0 - np.float32(self.mean)) / np.float32(self.std)
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))  # (B, 3, s, s)

"""Config sections shared by the jobs: the model, the SCM, the training data and the evaluation
protocol (a training run validates with the same `eval` section the evaluation pool uses)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from scm_ray.config.loader import check, setting

# train.precision and the evaluation pool's ray.precision; resolve_precision says what runs.
Precision = Literal["auto", "fp32", "bf16"]


def resolve_precision(setting: str, device_type: str) -> Literal["fp32", "bf16"]:
    """What a precision setting means on a device: "auto" is bf16 autocast on CUDA and fp32
    elsewhere. The one rule for training, evaluation and the evaluation cache's key, which must
    name the precision the numbers were computed in (not the one a GPU would have used)."""
    if setting == "auto":
        return "bf16" if device_type == "cuda" else "fp32"
    return "bf16" if setting == "bf16" else "fp32"


@dataclass(frozen=True)
class ModelConfig:
    """Backbone and head. Any timm ViT/DeiT with a CLS token; the patch grid follows from
    img_size / patch_size (nothing assumes 14 x 14)."""

    name: str = setting("deit_small_patch16_224", help="timm ViT/DeiT with a CLS token")
    num_classes: int = setting(200, help="classes of the dataset (the head's outputs)")
    img_size: int = setting(224, help="input side in pixels; a multiple of patch_size")
    patch_size: int = setting(16, help="patch side in pixels; the grid is img_size / patch_size")
    embed_dim: int | None = setting(None, help="width override for small models (null = the timm model's)")
    depth: int | None = setting(None, help="block count override (null = the timm model's)")
    num_heads: int | None = setting(None, help="attention heads override (null = the timm model's)")
    drop_path_rate: float = setting(0.1, help="stochastic depth rate, in [0, 1)")
    pretrained: str = setting("", help='"" = random init; a local .pth/.safetensors/.bin; "hub" = timm downloads')

    def __post_init__(self) -> None:
        check(bool(self.name), "name", "must name a timm ViT/DeiT, e.g. deit_small_patch16_224")
        check(self.num_classes >= 1, "num_classes", f"must be >= 1, got {self.num_classes}")
        check(self.patch_size >= 1, "patch_size", f"must be >= 1, got {self.patch_size}")
        check(
            self.img_size >= self.patch_size and self.img_size % self.patch_size == 0,
            "img_size",
            f"must be a positive multiple of patch_size={self.patch_size}, got {self.img_size}",
        )
        for key in ("embed_dim", "depth", "num_heads"):
            value = getattr(self, key)
            check(value is None or value >= 1, key, f"must be null or >= 1, got {value}")
        if self.embed_dim is not None and self.num_heads is not None:
            check(
                self.embed_dim % self.num_heads == 0,
                "num_heads",
                f"must divide embed_dim={self.embed_dim}, got {self.num_heads}",
            )
        check(
            0.0 <= self.drop_path_rate < 1.0,
            "drop_path_rate",
            f"must be in [0, 1), got {self.drop_path_rate}",
        )

    @property
    def grid_size(self) -> tuple[int, int]:
        side = self.img_size // self.patch_size
        return side, side


@dataclass(frozen=True)
class SCMConfig:
    """Spatial Calibration Module (training-only Activation Diffusion Blocks). num_blocks=0 is
    the same model and recipe without the SCM."""

    num_blocks: int = setting(4, help="activation diffusion blocks; 0 = no SCM (the baseline)")
    alpha: float = setting(0.002, help="Newton-Schulz step size, > 0")
    iterations: list[int] = setting(help="Newton-Schulz iterations per block, or one count for all",
                                    factory=lambda: [16, 4, 4, 4])
    lambda_init: float = setting(1.0, help="initial lambda of every block (learned), > 0")
    beta_init: float = setting(0.5, help="initial beta of every block (learned), > 0")
    # From random weights the SCM needs a classification warm-up (docs/scm.md).
    start_epoch: int = setting(0, help="epochs trained without the SCM before it is switched on")
    implementation: Literal["fast", "dense"] = setting(
        "fast", help="fast: structured Newton-Schulz; dense: the straightforward reference algorithm")

    def __post_init__(self) -> None:
        check(self.num_blocks >= 0, "num_blocks", f"must be >= 0, got {self.num_blocks}")
        check(self.alpha > 0, "alpha", f"must be > 0, got {self.alpha}")
        its = self.iterations
        check(len(its) >= 1, "iterations", "must hold at least one count")
        check(all(i >= 0 for i in its), "iterations", f"counts must be >= 0, got {its}")
        check(
            len(its) in (1, self.num_blocks) or self.num_blocks == 0,
            "iterations",
            f"needs one count per block ({self.num_blocks}) or a single count, got {its}",
        )
        for key in ("lambda_init", "beta_init"):
            value = getattr(self, key)
            check(math.isfinite(value) and value > 0, key, f"must be a finite number > 0, got {value}")
        check(self.start_epoch >= 0, "start_epoch", f"must be >= 0, got {self.start_epoch}")

    def block_iterations(self) -> list[int]:
        """Per-block iteration counts, the single-count form expanded."""
        if len(self.iterations) == 1:
            return list(self.iterations) * self.num_blocks
        return list(self.iterations[: self.num_blocks])


@dataclass(frozen=True)
class DataConfig:
    """A prepared dataset folder (records.parquet + one <split>.beton per split,
    docs/data-formats.md) and the loader settings. `root` may be a local path, a shared
    filesystem path or a URI that pyarrow.fs understands; URIs are staged once per node."""

    root: str = setting("data/synthetic", help="prepared dataset folder, or a URI (s3://, gs://, file://)")
    train_split: str = setting("train", help="split trained on")
    val_split: str = setting("val", help="held-out split with boxes: per-epoch validation, tau choice (wsol)")
    test_split: str = setting("test", help="split the evaluation reports on")
    resize_size: int = setting(256, help="training images are resized to this, then cropped")
    crop_size: int = setting(224, help="random crop side; must equal model.img_size")
    resize_mode: Literal["square", "short_side"] = setting(
        "square", help="square: both sides to resize_size (released code); short_side keeps the aspect")
    batch_size: int = setting(64, help="training images per worker per step")
    eval_batch_size: int = setting(64, help="validation images per worker per batch")
    num_workers: int = setting(2, help="FFCV decoding threads per worker")
    seed: int = setting(0, help="data order seed")
    cache_dir: str = setting("", help='where a URI root is staged per node ("" = $SCM_RAY_DATA_CACHE or ~/.cache/scm-ray)')

    def __post_init__(self) -> None:
        check(bool(self.root), "root", "must name a prepared dataset folder or URI")
        for key in ("train_split", "val_split", "test_split"):
            check(bool(getattr(self, key)), key, "must name a split")
        check(self.crop_size >= 1, "crop_size", f"must be >= 1, got {self.crop_size}")
        check(
            self.resize_size >= self.crop_size,
            "resize_size",
            f"must be >= crop_size={self.crop_size}, got {self.resize_size}",
        )
        for key in ("batch_size", "eval_batch_size"):
            check(getattr(self, key) >= 1, key, f"must be >= 1, got {getattr(self, key)}")
        check(self.num_workers >= 1, "num_workers", f"must be >= 1, got {self.num_workers}")


@dataclass(frozen=True)
class EvalConfig:
    """Localization evaluation settings (docs/protocols.md)."""

    protocol: Literal["wsol", "paper"] = setting(
        "wsol", help="wsol: GT-class maps, tau chosen on the held-out split; paper: the released code's")
    threshold_step: float = setting(0.01, help="spacing of the CAM thresholds tau swept, in (0, 0.5]")
    iou_thresholds: list[float] = setting(help="IoU thresholds of MaxBoxAccV2 (GT-Known uses 0.5)",
                                          factory=lambda: [0.3, 0.5, 0.7])

    def __post_init__(self) -> None:
        check(
            0 < self.threshold_step <= 0.5,
            "threshold_step",
            f"must be in (0, 0.5], e.g. 0.01 or 0.001; got {self.threshold_step}",
        )
        check(
            len(self.iou_thresholds) >= 1 and all(0 < t <= 1 for t in self.iou_thresholds),
            "iou_thresholds",
            f"must be numbers in (0, 1], got {self.iou_thresholds}",
        )

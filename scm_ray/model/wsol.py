"""WSOL model: a timm ViT/DeiT with a CLS token, a 3x3 conv head on its patch tokens, and an
optional Spatial Calibration Module used in training only.

Inference never touches the SCM: logits = GAP(S0) and the localization map of class c is
minmax(F0) * S0_c (docs/scm.md). With scm=None (or zero blocks) it is the same model without the SCM
("no SCM"; not TS-CAM, whose map is the raw attention sum times S0 at a fixed threshold).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from timm.models.vision_transformer import VisionTransformer

from scm_ray.model.attention import block_with_cls_row, check_supported_block
from scm_ray.model.scm import SpatialCalibration, minmax


# The SCM's weights in a WSOLModel state dict sit under its attribute `scm`; checkpoints keep them
# apart from the inference weights (evaluation and localize never build the SCM).
SCM_PREFIX = "scm."


def split_scm_state(state: dict) -> tuple[dict, dict]:
    """A WSOLModel state dict -> (inference weights, SCM weights without the prefix)."""
    model = {k: v for k, v in state.items() if not k.startswith(SCM_PREFIX)}
    scm = {k.removeprefix(SCM_PREFIX): v for k, v in state.items() if k.startswith(SCM_PREFIX)}
    return model, scm


def join_scm_state(model: dict, scm: dict) -> dict:
    """The inverse of split_scm_state: one state dict a WSOLModel with its SCM loads."""
    return {**model, **{f"{SCM_PREFIX}{k}": v for k, v in scm.items()}}


class WSOLModel(nn.Module):
    """Backbone + conv head (+ SCM). `scm_enabled` lets training switch the SCM on after a
    classification warm-up without rebuilding the model."""

    def __init__(self, backbone: nn.Module, num_classes: int, scm: SpatialCalibration | None = None):
        super().__init__()
        name = getattr(backbone, "default_cfg", {}).get("architecture") or type(backbone).__name__
        if not isinstance(backbone, VisionTransformer):
            raise TypeError(
                f"{name}: WSOLModel needs a timm VisionTransformer (ViT/DeiT) with a CLS token, "
                f"got {type(backbone).__name__}"
            )
        if getattr(backbone, "cls_token", None) is None:
            raise TypeError(f"{name}: WSOLModel needs a CLS token; this model has none")
        if getattr(backbone, "dynamic_img_size", False):
            raise TypeError(f"{name}: dynamic_img_size is not supported (the grid must be fixed)")
        for i, block in enumerate(backbone.blocks):
            check_supported_block(block, f"{name} block {i}")
        backbone.reset_classifier(0)  # the conv head replaces the linear classifier
        self.backbone = backbone
        self.num_classes = num_classes
        self.grid_size: tuple[int, int] = tuple(backbone.patch_embed.grid_size)
        self.head = nn.Conv2d(backbone.embed_dim, num_classes, kernel_size=3, stride=1, padding=1)
        self.scm = scm if scm is not None and len(scm.blocks) > 0 else None
        self.scm_enabled = True

    @property
    def uses_scm(self) -> bool:
        return self.scm is not None and self.scm_enabled

    def maps(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """images (B, 3, img, img) -> S0 (B, C, H, W) and F0 (B, H*W) in [0, 1].

        F0 is the head-mean CLS-to-patch attention averaged over all blocks, min-max normalised
        per image; it is not detached, so the SCM loss reaches the attention weights.
        """
        s0, f0 = self._maps(images, attention=True)
        assert f0 is not None
        return s0, f0

    def _maps(self, images: torch.Tensor, attention: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """S0, and F0 only when `attention`: without it every block runs timm's own forward, so a
        step that does not use F0 (training without the SCM, logits-only evaluation) pays nothing for it."""
        vit = self.backbone
        x = vit.patch_embed(images)  # (B, N, D)
        x = vit._pos_embed(x)  # (B, T, D), T = prefix + N
        x = vit.patch_drop(x)
        x = vit.norm_pre(x)
        rows = []
        for block in vit.blocks:
            if attention:
                x, row = block_with_cls_row(block, x, vit.num_prefix_tokens)  # row (B, N)
                rows.append(row)
            else:
                x = block(x)  # (B, T, D)
        x = vit.norm(x)
        tokens = x[:, vit.num_prefix_tokens:]  # (B, N, D)
        B, N, D = tokens.shape
        H, W = self.grid_size
        s0 = self.head(tokens.transpose(1, 2).reshape(B, D, H, W))  # (B, C, H, W)
        f0 = minmax(torch.stack(rows, dim=0).mean(dim=0)) if attention else None  # (B, N)
        return s0, f0

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits (B, C): GAP of S^L through the SCM in training, GAP of S0 otherwise."""
        use_scm = self.training and self.uses_scm
        s0, f0 = self._maps(images, attention=use_scm)
        if use_scm:
            s, _ = self.scm(s0, f0)  # (B, C, H, W)
            return s.mean(dim=(2, 3))
        return s0.float().mean(dim=(2, 3))  # (B, C)

    @torch.no_grad()
    def localize(
        self,
        images: torch.Tensor,
        classes: torch.Tensor | None = None,
        topk: int = 1,
        size: tuple[int, int] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """SCM-free inference: (logits (B, C), cams (B, K, h, w) in [0, 1]).

        cams[:, k] = minmax(upsample(minmax(F0) * S0_c)) for c = classes[:, k] (given) or the
        k-th predicted class; `size` defaults to the input size.
        """
        s0, f0 = self.maps(images)
        logits = s0.float().mean(dim=(2, 3))  # (B, C)
        if classes is None:
            classes = logits.topk(topk, dim=1).indices  # (B, K)
        elif classes.dim() == 1:
            classes = classes[:, None]  # (B, 1)
        return logits, class_maps(s0, f0, classes, size or tuple(images.shape[-2:]))


def class_maps(
    s0: torch.Tensor, f0: torch.Tensor, classes: torch.Tensor, size: tuple[int, int]
) -> torch.Tensor:
    """Localization maps (B, K, h, w) in [0, 1] for classes (B, K): minmax(F0) * S0_c, bilinearly
    upsampled to `size`, min-max normalised per map (docs/scm.md, inference)."""
    s0, f0 = s0.float(), f0.float()
    B, C, H, W = s0.shape
    picked = s0.gather(1, classes[:, :, None, None].expand(-1, -1, H, W))  # (B, K, H, W)
    cams = f0.view(B, 1, H, W) * picked  # (B, K, H, W)
    cams = F.interpolate(cams, size=size, mode="bilinear", align_corners=False)  # (B, K, h, w)
    return minmax(cams.flatten(2)).view(B, -1, *size)  # (B, K, h, w)

"""Builders: config -> model, and the reference optimizer parameter groups."""

from __future__ import annotations

from pathlib import Path

import timm
import torch
from torch import nn

from scm_ray.config import ModelConfig, SCMConfig
from scm_ray.model.scm import SpatialCalibration
from scm_ray.model.wsol import WSOLModel


def build_backbone(
    name: str,
    img_size: int,
    patch_size: int,
    drop_path_rate: float,
    embed_dim: int | None = None,
    depth: int | None = None,
    num_heads: int | None = None,
    pretrained: str = "",
) -> nn.Module:
    """A timm ViT/DeiT at the given resolution; weights from a local file or, when
    `pretrained == "hub"`, from timm's hub (never used by tests)."""
    kwargs: dict = dict(img_size=img_size, patch_size=patch_size, drop_path_rate=drop_path_rate)
    for key, value in (("embed_dim", embed_dim), ("depth", depth), ("num_heads", num_heads)):
        if value is not None:
            kwargs[key] = value
    try:
        model = timm.create_model(name, pretrained=pretrained == "hub", num_classes=0, **kwargs)
    except RuntimeError as exc:  # timm's "Unknown model (...)"
        raise ValueError(f"model.name: timm cannot build {name!r}: {exc}") from None
    if pretrained and pretrained != "hub":
        load_backbone_weights(model, Path(pretrained))
    return model


def load_backbone_weights(model: nn.Module, path: Path) -> None:
    """Load a local timm-format checkpoint, resizing pos_embed to this grid; the classifier
    head is dropped (the conv head replaces it)."""
    if not path.is_file():
        raise FileNotFoundError(f"model.pretrained: weights file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
        for key in ("model", "state_dict"):
            if isinstance(state, dict) and key in state and isinstance(state[key], dict):
                state = state[key]
    state = {k: v for k, v in state.items() if not k.startswith(("head.", "head_dist."))}
    if "pos_embed" in state and state["pos_embed"].shape != model.pos_embed.shape:
        from timm.layers import resample_abs_pos_embed

        state["pos_embed"] = resample_abs_pos_embed(
            state["pos_embed"],
            new_size=model.patch_embed.grid_size,
            num_prefix_tokens=model.num_prefix_tokens,
        )
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"model.pretrained: {path} does not match the backbone: "
            f"missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}"
        )


def build_scm(cfg: SCMConfig) -> SpatialCalibration | None:
    if cfg.num_blocks == 0:
        return None
    return SpatialCalibration(
        num_blocks=cfg.num_blocks,
        alpha=cfg.alpha,
        iterations=cfg.block_iterations(),
        lambda_init=cfg.lambda_init,
        beta_init=cfg.beta_init,
        implementation=cfg.implementation,
    )


def build_model(model_cfg: ModelConfig, scm_cfg: SCMConfig | None = None) -> WSOLModel:
    """The WSOL model described by the config sections (SCM omitted when scm_cfg is None)."""
    backbone = build_backbone(
        model_cfg.name,
        img_size=model_cfg.img_size,
        patch_size=model_cfg.patch_size,
        drop_path_rate=model_cfg.drop_path_rate,
        embed_dim=model_cfg.embed_dim,
        depth=model_cfg.depth,
        num_heads=model_cfg.num_heads,
        pretrained=model_cfg.pretrained,
    )
    scm = build_scm(scm_cfg) if scm_cfg is not None else None
    return WSOLModel(backbone, model_cfg.num_classes, scm=scm)


NO_DECAY_NAMES = ("pos_embed", "cls_token", "reg_token", "dist_token", "lam", "beta")


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups as the reference: no decay on 1-D params (norms, biases, lambda, beta),
    pos_embed and cls_token; decay on the rest."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        leaf = name.rsplit(".", 1)[-1]
        if param.ndim <= 1 or leaf in NO_DECAY_NAMES or name.endswith(".bias"):
            no_decay.append(param)
        else:
            decay.append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def inference_state_dict(model: WSOLModel) -> dict[str, torch.Tensor]:
    """Weights needed at inference (backbone + head): the SCM is training-only."""
    return {k: v for k, v in model.state_dict().items() if not k.startswith("scm.")}

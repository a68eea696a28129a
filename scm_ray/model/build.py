"""Builders: config -> model, and the reference optimizer parameter groups."""

from __future__ import annotations

import timm
import torch
from torch import nn
from timm.models.vision_transformer import VisionTransformer

from scm_ray.config import ConfigError, ModelConfig, SCMConfig
from scm_ray.model.pretrained import create_with_weights, weights_file
from scm_ray.model.scm import SpatialCalibration
from scm_ray.model.wsol import WSOLModel, split_scm_state


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
    """A timm ViT/DeiT at the given resolution, its weights (if any) loaded by timm itself from
    the local file `pretrained` stands for (scm_ray/model/pretrained.py: "", "hub" or a path)."""
    kwargs: dict = dict(img_size=img_size, patch_size=patch_size, drop_path_rate=drop_path_rate)
    for key, value in (("embed_dim", embed_dim), ("depth", depth), ("num_heads", num_heads)):
        if value is not None:
            kwargs[key] = value
    require_vit(name)
    file = weights_file(pretrained, name)
    try:
        if file:
            return create_with_weights(name, file, pretrained, num_classes=0, **kwargs)
        return timm.create_model(name, num_classes=0, **kwargs)
    except RuntimeError as exc:  # timm's "Unknown model (...)"
        raise ValueError(f"model.name: timm cannot build {name!r}: {exc}") from None


def require_vit(name: str) -> None:
    """Refuse, by name, a timm model that is not a ViT/DeiT (WSOLModel reads the CLS token's
    attention): its class is learned from a weightless build on the meta device, because the
    ViT keyword arguments (img_size, patch_size) make other architectures fail with a TypeError
    that names neither the field nor the reason."""
    if not timm.is_model(name):
        raise ConfigError("model.name", f"timm has no model {name!r}; e.g. deit_small_patch16_224")
    with torch.device("meta"):
        probe = timm.create_model(name, num_classes=0)
    if not isinstance(probe, VisionTransformer):
        raise ConfigError("model.name", f"{name!r} is a {type(probe).__name__}, not a timm ViT/DeiT "
                                        "(VisionTransformer with a CLS token), which the SCM needs; "
                                        "e.g. deit_small_patch16_224 or vit_small_patch16_224")


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
    return split_scm_state(model.state_dict())[0]

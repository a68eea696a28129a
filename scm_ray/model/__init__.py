"""DeiT/ViT + Spatial Calibration Module (plain torch + timm; no Ray)."""

from scm_ray.model.build import (
    build_backbone,
    build_model,
    build_scm,
    inference_state_dict,
    param_groups,
)
from scm_ray.model.scm import (
    ActivationDiffusionBlock,
    SpatialCalibration,
    grid_laplacian,
    minmax,
    newton_schulz_dense,
)
from scm_ray.model.wsol import WSOLModel, class_maps

__all__ = [
    "ActivationDiffusionBlock",
    "SpatialCalibration",
    "WSOLModel",
    "build_backbone",
    "class_maps",
    "build_model",
    "build_scm",
    "grid_laplacian",
    "inference_state_dict",
    "minmax",
    "newton_schulz_dense",
    "param_groups",
]

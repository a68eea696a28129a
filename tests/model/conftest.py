"""Tiny model settings that keep the model tests fast on 2 CPU cores."""

import pytest

from scm_ray.config import ModelConfig


@pytest.fixture
def tiny_model_cfg() -> ModelConfig:
    return ModelConfig(
        name="vit_tiny_patch16_224", num_classes=5, img_size=64, patch_size=8,
        embed_dim=48, depth=3, num_heads=3, drop_path_rate=0.0,
    )

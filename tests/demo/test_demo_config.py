"""The demo's recipe ships inside the package (an installed scm-ray has no jobs/ folder); it must
stay the recipe jobs/configs/train_synthetic.yaml documents."""

from __future__ import annotations

from pathlib import Path

from scm_ray.config import TrainJobConfig, load_config
from scm_ray.demo.cli import DEMO_CONFIG

REPO = Path(__file__).resolve().parents[2]


def test_packaged_demo_config_is_the_shipped_synthetic_recipe():
    assert DEMO_CONFIG.is_file() and DEMO_CONFIG.is_relative_to(REPO / "scm_ray")
    packaged = load_config(TrainJobConfig, DEMO_CONFIG)
    shipped = load_config(TrainJobConfig, REPO / "jobs" / "configs" / "train_synthetic.yaml")
    assert packaged == shipped

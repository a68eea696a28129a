"""A tiny prepared synthetic dataset shared by the training tests (real JPEGs, real .beton)."""

import pytest


@pytest.fixture(scope="session")
def synthetic_dataset(tmp_path_factory):
    from scm_ray.data.prepare import prepare_synthetic

    out = tmp_path_factory.mktemp("synthetic")
    prepare_synthetic(out, num_train=128, num_val=64, num_test=64, image_size=64,
                      num_classes=4, seed=0, progress=False)
    return out


# A small model on the tiny dataset: two epochs of 4 steps per worker pair, seconds per epoch.
SMALL = [
    "model.embed_dim=48", "model.depth=2", "model.num_heads=3",
    "scm.num_blocks=2", "scm.iterations=[4, 2]", "scm.start_epoch=0",
    "data.batch_size=16", "data.eval_batch_size=32",
    "train.epochs=2", "optim.schedule=constant", "optim.warmup_epochs=0", "optim.lr=2e-3",
]


@pytest.fixture
def small_cfg(synthetic_dataset, tmp_path):
    """small_cfg(name, *overrides): the synthetic recipe made small, storage in tmp_path."""
    from pathlib import Path

    from scm_ray.config import TrainJobConfig, load_config

    def make(name: str, *extra: str) -> TrainJobConfig:
        overrides = [f"data.root={synthetic_dataset}", f"ray.storage_path={tmp_path}",
                     f"ray.name={name}", *SMALL, *extra]
        return load_config(TrainJobConfig, Path("jobs/configs/train_synthetic.yaml"), overrides)

    return make

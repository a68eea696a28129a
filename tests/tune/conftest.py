"""A tiny prepared synthetic dataset and the tiny-trial overrides the search tests share."""

from __future__ import annotations

from pathlib import Path

import pytest

SHIPPED = Path(__file__).resolve().parents[2] / "jobs" / "configs" / "tune_synthetic.yaml"


@pytest.fixture(scope="session")
def tune_dataset(tmp_path_factory) -> Path:
    from scm_ray.data.prepare import prepare_synthetic

    out = tmp_path_factory.mktemp("tune-synthetic")
    prepare_synthetic(out, num_train=128, num_val=64, num_test=16, image_size=64,
                      num_classes=4, seed=0, progress=False)
    return out


def tiny_search(dataset: Path, storage: Path, name: str, lrs: list[float], *extra: str) -> list[str]:
    """Overrides of the shipped tune config: a 2-block ViT of width 48, 8 steps an epoch,
    one CPU worker per trial, a grid over the learning rates `lrs` (trials in that order)."""
    return [
        f"data.root={dataset}", f"ray.storage_path={storage}", f"search.name={name}",
        "model.embed_dim=48", "model.depth=2", "model.num_heads=3",
        "scm.num_blocks=2", "scm.iterations=[4, 2]",
        "data.batch_size=16", "data.eval_batch_size=32",
        "train.epochs=2", "train.max_steps_per_epoch=0", "optim.schedule=constant",
        "ray.num_workers=1", "ray.max_failures=0",
        "search.space={optim.lr: {choice: [%s]}}" % ", ".join(str(lr) for lr in lrs),
        "search.searcher=grid", "search.num_samples=1",
        *extra,
    ]

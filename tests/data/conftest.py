"""Shared, session-scoped prepared datasets for the data tests.

Why session scope: importing FFCV and compiling an FFCV pipeline costs seconds each (numba), so
each tiny dataset is prepared once per test session and every loader that can be shared is.
Datasets are tiny (tens of 48 px images) to keep the suite fast on 2 cores.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from scm_ray.data.prepare import prepare_synthetic


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory) -> Path:
    """Square 48 px synthetic set: 40 train / 12 val / 10 test, one object per image, eval
    splits stored at 48 px."""
    out = tmp_path_factory.mktemp("synthetic")
    prepare_synthetic(out, num_train=40, num_val=12, num_test=10, image_size=48, num_classes=4,
                      seed=3, num_workers=1, progress=False)
    return out


@pytest.fixture(scope="session")
def multibox_dir(tmp_path_factory) -> Path:
    """Non-square 56x40 synthetic set with up to 3 objects per image, eval splits stored at
    32 x 32 (so evaluation boxes are scaled by different factors per axis)."""
    out = tmp_path_factory.mktemp("multibox")
    prepare_synthetic(out, num_train=24, num_val=10, num_test=6, image_size=(56, 40), num_classes=3,
                      max_objects=3, seed=5, eval_size=32, num_workers=1, progress=False)
    return out


@pytest.fixture(scope="session")
def train_loader_48(synthetic_dir):
    """One CPU training loader over synthetic_dir (resize 56 -> crop 48, batch 8), shared so
    its numba compilation is paid once."""
    from scm_ray.data.loaders import train_loader

    return train_loader(synthetic_dir / "train.beton", batch_size=8, num_workers=2, resize_size=56,
                        crop_size=48, seed=11)

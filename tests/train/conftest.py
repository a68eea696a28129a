"""A tiny prepared synthetic dataset shared by the training tests (real JPEGs, real .beton)."""

import pytest


@pytest.fixture(scope="session")
def synthetic_dataset(tmp_path_factory):
    from scm_ray.data.prepare import prepare_synthetic

    out = tmp_path_factory.mktemp("synthetic")
    prepare_synthetic(out, num_train=128, num_val=64, num_test=64, image_size=64,
                      num_classes=4, seed=0, progress=False)
    return out

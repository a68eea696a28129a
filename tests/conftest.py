"""Fixtures shared across test packages."""

import pytest


@pytest.fixture(scope="module")
def local_ray():
    """A fresh local Ray with 2 CPUs (the CI machine's size) for one test module."""
    ray = pytest.importorskip("ray")
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False)
    yield
    ray.shutdown()

"""Fixtures shared across test packages."""

import pytest


@pytest.fixture(scope="module")
def local_ray():
    """A fresh embedded local Ray with 2 CPUs (the CI machine's size) for one test module."""
    ray = pytest.importorskip("ray")
    if ray.is_initialized():
        ray.shutdown()
    from scm_ray.ray_session import connect

    connect(num_cpus=2)  # the embedded Ray the commands start (loopback, its state API)
    yield
    ray.shutdown()

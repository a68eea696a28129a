"""The environment for a command a test runs in a subprocess with its own embedded Ray: without
the addresses of a Ray this test process may have started (RAY_ADDRESS would attach the command
to it; RAY_API_SERVER_ADDRESS, set by scm_ray.ray_session.connect, names its state API)."""

from __future__ import annotations

import os

PARENT_RAY = ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS")


def own_ray_env(*also_drop: str) -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in (*PARENT_RAY, *also_drop)}

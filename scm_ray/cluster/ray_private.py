"""The Ray internals `scm-ray cluster check` relies on, in one place.

Ray has no public API for "validate a cluster launcher YAML as `ray up` would" or "the file
matcher a runtime env's `excludes` uses", so the checks call Ray's own private functions: the
only faithful answer is Ray's. Ray is pinned to a range in pyproject.toml for that reason, and
tests/cluster/test_ray_private.py imports every name below and checks its parameters, so an
upgrade that moves one fails there, by name, instead of inside a user's `cluster check`.
"""

from __future__ import annotations

import importlib
from typing import Any

# module -> {function: the parameters scm-ray passes, in order}
PRIVATE_APIS: dict[str, dict[str, tuple[str, ...]]] = {
    "ray.autoscaler._private.util": {"prepare_config": ("config",), "validate_config": ("config",)},
    "ray._private.runtime_env.packaging": {"_get_excludes": ("path", "excludes")},
}


def private(module: str, name: str) -> Any:
    """A Ray internal listed in PRIVATE_APIS."""
    if name not in PRIVATE_APIS.get(module, {}):
        raise KeyError(f"{module}.{name} is not a listed Ray internal (scm_ray/cluster/ray_private.py)")
    return getattr(importlib.import_module(module), name)


def prepare_config(config: dict) -> dict:
    return private("ray.autoscaler._private.util", "prepare_config")(config)


def validate_config(config: dict) -> None:
    private("ray.autoscaler._private.util", "validate_config")(config)


def get_excludes(path, excludes: list[str]):
    return private("ray._private.runtime_env.packaging", "_get_excludes")(path, excludes)

"""The Ray internals scm-ray uses are where the pinned Ray range has them. When this fails after
a Ray upgrade, update scm_ray/cluster/ray_private.py (and the range in pyproject.toml) together."""

from __future__ import annotations

import importlib
import inspect
from importlib.metadata import version
from pathlib import Path

import pytest

from scm_ray.cluster.ray_private import PRIVATE_APIS, private

CASES = [(module, name, params) for module, names in PRIVATE_APIS.items() for name, params in names.items()]


@pytest.mark.parametrize("module,name,params", CASES, ids=[f"{m}.{n}" for m, n, _ in CASES])
def test_each_ray_internal_is_still_there_with_its_parameters(module, name, params):
    try:
        function = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as err:
        pytest.fail(f"Ray {version('ray')} moved {module}.{name} ({err}); scm_ray/cluster/ray_private.py "
                    "needs updating for this Ray, or pin Ray to the range pyproject.toml names")
    got = tuple(inspect.signature(function).parameters)[: len(params)]
    assert got == params, f"Ray {version('ray')}: {module}.{name} now takes {got}, scm-ray passes {params}"


def test_the_schema_file_ray_up_validates_with_is_shipped():
    import ray.autoscaler

    assert (Path(ray.autoscaler.__file__).with_name("ray-schema.json")).is_file()


def test_only_listed_internals_are_reachable():
    with pytest.raises(KeyError, match="not a listed Ray internal"):
        private("ray._private.worker", "global_worker")


def test_the_loopback_switch_ray_session_sets_is_still_there():
    """scm_ray/ray_session.py turns Ray's "clusters enabled" constant off (loopback-only Ray)."""
    from ray._private import ray_constants

    assert isinstance(ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR, str)
    assert hasattr(ray_constants, "ENABLE_RAY_CLUSTER")


def test_no_other_module_imports_ray_internals():
    """Only the modules whose internals are checked above import from ray's private packages."""
    import ast

    root = Path(__file__).resolve().parents[2] / "scm_ray"
    users = set()
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            if any(n.startswith("ray.") and "._private" in f".{n}" for n in names):
                users.add(str(path.relative_to(root)))
    assert users <= {"cluster/ray_private.py", "ray_session.py"}, sorted(users)

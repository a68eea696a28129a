"""The core layers import no Ray (docs/architecture.md): model, data formats, metrics, config,
checkpoints, the training engine and its in-process launcher, the evaluation worker.

Every module of those layers is imported in a fresh interpreter whose `import ray` fails; the
import hook also records which scm_ray module asked for Ray, so a core module that guards the
import (try/except ImportError) is caught as well. Walking the folders (not a hand-kept list)
means a new module of a core package is checked without anyone remembering to add it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Packages whose every module is core, and single core modules elsewhere.
CORE_PACKAGES = ["scm_ray.config", "scm_ray.model", "scm_ray.data", "scm_ray.metrics"]
CORE_MODULES = ["scm_ray.paths", "scm_ray.storage", "scm_ray.startup", "scm_ray.checkpoint", "scm_ray.inference",
                "scm_ray.train.engine", "scm_ray.train.local", "scm_ray.train.tracking", "scm_ray.train.history",
                "scm_ray.train.schedule", "scm_ray.train.trainer", "scm_ray.train.cli",
                "scm_ray.evaluate.worker", "scm_ray.evaluate.outcome"]

# Imports each module given on the command line with Ray unimportable; prints
# {module: [scm_ray modules that asked for ray]} for the offenders, as JSON.
CHECKER = """
import importlib, json, sys
asked = {}
class Block:
    def find_spec(self, name, path=None, target=None):
        if name == "ray" or name.startswith("ray."):
            frame, who = sys._getframe(1), None
            while frame is not None:
                mod = frame.f_globals.get("__name__", "")
                if mod.startswith("scm_ray"):
                    who = mod
                    break
                frame = frame.f_back
            asked.setdefault(current, set()).add(who or "?")
            raise ImportError("ray is blocked for this test")
sys.meta_path.insert(0, Block())
for current in sys.argv[1:]:
    try:
        importlib.import_module(current)
    except ImportError as err:
        asked.setdefault(current, set()).add(f"ImportError: {err}")
print(json.dumps({k: sorted(v) for k, v in asked.items()}))
"""


def modules_of(package: str) -> list[str]:
    folder = ROOT / package.replace(".", "/")
    assert folder.is_dir(), f"core package {package} not found"
    names = []
    for path in sorted(folder.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def ray_importers(modules: list[str]) -> dict[str, list[str]]:
    result = subprocess.run([sys.executable, "-c", CHECKER, *modules], capture_output=True,
                            text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_core_modules_import_without_ray():
    modules = [m for p in CORE_PACKAGES for m in modules_of(p)] + CORE_MODULES
    assert len(modules) > len(CORE_MODULES) + 10  # the walk found the packages' modules
    assert ray_importers(modules) == {}


def test_the_check_catches_a_module_that_imports_ray():
    """The checker is not vacuous: Ray's own adapters are reported, by name."""
    found = ray_importers(["scm_ray.train.ray_adapter", "scm_ray.ray_session"])
    assert set(found) == {"scm_ray.train.ray_adapter", "scm_ray.ray_session"}
    assert "scm_ray.ray_session" in found["scm_ray.ray_session"]

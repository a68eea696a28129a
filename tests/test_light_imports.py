"""What needs neither torch nor FFCV does not import them: `scm-ray prepare` (its .beton writer
is data/beton.py, not FFCV's) and the `scm-ray evaluate` driver (the model lives in the actors).
Each costs seconds and hundreds of MB in every process that imports it (README, "Scale")."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "ffcv", "timm", "numba")
CHECK = """
import importlib, json, sys
for name in sys.argv[2:]:
    importlib.import_module(name)
print(json.dumps(sorted(m for m in json.loads(sys.argv[1]) if m in sys.modules)))
"""


@pytest.mark.parametrize("modules, allowed", [
    (["scm_ray.cli", "scm_ray.data.cli", "scm_ray.data.prepare", "scm_ray.data.ffcv_io", "scm_ray.data.sources"], ()),
    (["scm_ray.evaluate.cli", "scm_ray.evaluate.api", "scm_ray.evaluate.pool", "scm_ray.evaluate.discovery"],
     ("numba",)),  # results.py takes metric names from metrics/, whose box kernels import numba
], ids=["prepare", "evaluate-driver"])
def test_commands_import_only_what_they_use(modules, allowed):
    out = subprocess.run([sys.executable, "-c", CHECK, json.dumps(HEAVY), *modules], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    assert set(json.loads(out)) <= set(allowed), out

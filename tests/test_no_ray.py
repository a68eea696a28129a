"""The core layers (model, data formats, metrics) import no Ray: prove it with Ray unimportable."""

import subprocess
import sys

import pytest

CORE = ["scm_ray.config", "scm_ray.model", "scm_ray.data", "scm_ray.metrics"]


@pytest.mark.parametrize("module", CORE)
def test_core_imports_without_ray(module):
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'ray' or name.startswith('ray.'):\n"
        "            raise ImportError('ray is blocked for this test')\n"
        "sys.meta_path.insert(0, Block())\n"
        f"import {module}\n"
        "assert not any(m == 'ray' or m.startswith('ray.') for m in sys.modules), 'ray imported'\n"
        "try:\n"
        "    import ray\n"
        "except ImportError:\n"
        "    pass\n"
        "else:\n"
        "    raise SystemExit('ray import was not blocked')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr

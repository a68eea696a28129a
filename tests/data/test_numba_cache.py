"""Importing FFCV compiles numba's typed-dict helpers; scm_ray.data.numba_cache puts them in
numba's disk cache, so a later process loads them instead of compiling again."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

PROBE = """
from scm_ray.data.numba_cache import cache_typed_dict
cache_typed_dict()
import ffcv.fields.rgb_image  # builds its typed dict of image modes
from numba.typed import typeddict
print(typeddict._make_dict._cache._cache_path)
print(typeddict._make_dict.stats.cache_hits.total(), typeddict._make_dict.stats.cache_misses.total())
"""


def test_the_typed_dict_helpers_ffcv_compiles_are_loaded_from_numbas_disk_cache(tmp_path):
    env = {"NUMBA_CACHE_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}

    def run() -> tuple[Path, int, int]:
        out = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO, env=env, capture_output=True, text=True,
                             timeout=300)
        assert out.returncode == 0, out.stderr[-3000:]
        path, counts = out.stdout.splitlines()[-2:]
        hits, misses = map(int, counts.split())
        return Path(path), hits, misses

    path, hits, misses = run()
    assert misses >= 1 and list(path.glob("*.nbi")), (path, hits, misses)  # compiled, then saved
    _, hits, misses = run()
    assert hits >= 1 and misses == 0  # the next process loads it

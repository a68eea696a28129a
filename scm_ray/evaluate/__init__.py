"""SCM-free evaluation of checkpoint trees by a Ray actor pool (`scm-ray evaluate`).

    discovery.py  checkpoints under a path, their names and fingerprints   (no Ray)
    worker.py     one checkpoint -> metrics, plots; loaders kept per process (no Ray)
    results.py    results.parquet, reuse rules, varying config columns, table (no Ray)
    pool.py       the actors and the loop that feeds them                    (Ray)
    api.py        evaluate_checkpoints(), what the CLI, jobs/ and the demo call

The names below are loaded on first use, so importing a Ray-free part does not import Ray.
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "evaluate_checkpoints": "scm_ray.evaluate.api",
    "EvalOutcome": "scm_ray.evaluate.api",
    "format_table": "scm_ray.evaluate.results",
    "find_checkpoints": "scm_ray.evaluate.discovery",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'scm_ray.evaluate' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_EXPORTS[name]), name)

"""Training-step benchmark, plain backbone vs SCM (`ray job submit -- python jobs/benchmark_step.py`).

Thin wrapper over scm_ray.bench.step; needs only torch, timm and scm_ray.model.
"""

import sys

from scm_ray.bench.step import main

if __name__ == "__main__":
    sys.exit(main())

"""Evaluation job for `ray job submit` (SCM-free, a Ray actor pool over a checkpoint tree):

    ray job submit --working-dir . -- python jobs/evaluate.py --checkpoints RUN_DIR --data DATA_DIR --out OUT_DIR
"""

import sys

from scm_ray.cli import main

if __name__ == "__main__":
    sys.exit(main(["evaluate", *sys.argv[1:]]))

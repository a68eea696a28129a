"""Hyperparameter search job for `ray job submit`:

    ray job submit --working-dir . -- python jobs/tune.py --config jobs/configs/tune_synthetic.yaml
"""

import sys

from scm_ray.cli import main

if __name__ == "__main__":
    sys.exit(main(["tune", *sys.argv[1:]]))

"""Training job for `ray job submit`:

    ray job submit --working-dir . -- python jobs/train.py --config jobs/configs/train_cub.yaml
"""

import sys

from scm_ray.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))

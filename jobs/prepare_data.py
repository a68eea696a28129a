"""Prepare a dataset as a Ray job: the same arguments as `scm-ray prepare`.

    ray job submit --working-dir . -- python jobs/prepare_data.py synthetic --out data/synthetic
    ray job submit --working-dir . -- python jobs/prepare_data.py cub --root /data/CUB_200_2011 --out /shared/cub

The output folder must be on storage the training nodes can read (or staged to them).
"""

import sys

from scm_ray.cli import main

if __name__ == "__main__":
    sys.exit(main(["prepare", *sys.argv[1:]]))

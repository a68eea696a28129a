"""Loader benchmark as a Ray job (or plain script): FFCV vs torchvision images/s on one node.

    ray job submit --working-dir . -- python jobs/benchmark_loader.py --num-images 2048 --num-workers 8
"""

import sys

from scm_ray.bench.loader import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

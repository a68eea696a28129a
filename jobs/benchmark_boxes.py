"""Box-extraction benchmark as a Ray job (or plain script): reference vs fast maps/s, one core.

    ray job submit --working-dir . -- python jobs/benchmark_boxes.py --thresholds 100 1000
"""

import sys

from scm_ray.bench.boxes import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

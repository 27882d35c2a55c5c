"""Training speed vs the paper notebook's loop; the same as `toymodels bench` (see toymodels/bench.py).

    python bench/bench_train.py            # full table, ~5 minutes on 2 busy cores
    python bench/bench_train.py --quick    # a few steps per config (smoke test)
"""

import sys

from toymodels.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))

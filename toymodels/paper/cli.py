"""`toymodels figures`: regenerate the paper's figures (PNG + SVG + CSV tables + index.html)."""

from __future__ import annotations

import argparse
from pathlib import Path

THREADS = 1
"""Default torch threads of `toymodels figures`: one thread reproduces the committed files byte for byte, and on a
busy 2-core machine a second thread slowed these small models down rather than up."""
EXAMPLES = """examples:
  toymodels figures                          # the full gallery into figures/
  toymodels figures --quick --out /tmp/figs  # fewer steps/restarts, same code (a smoke test)
  toymodels figures --only intro dimensionality
"""


def register(sub) -> None:
    from toymodels.paper import FIGURES

    p = sub.add_parser("figures", help="reproduce the paper's figures into figures/",
                       description="Compute each figure's table and plot; write PNG, SVG, CSV, index.html.",
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="fewer steps and restarts (same code paths)")
    p.add_argument("--only", nargs="+", metavar="NAME", help=f"figures to make, from: {', '.join(FIGURES)}")
    p.add_argument("--out", type=Path, default=Path("figures"), help="output folder (default: figures)")
    p.add_argument("--seed", type=int, default=0, help="training seed (default 0)")
    p.add_argument("--threads", type=int, default=THREADS,
                   help=f"torch threads (default {THREADS}: the committed figures/ were made with it, and results "
                        "can differ in the last bits with another count)")
    p.add_argument("--jobs", type=int, default=2,
                   help="figures computed at once, one worker process each (default 2; the files do not depend "
                        "on it)")
    p.set_defaults(func=_figures)


def _figures(args) -> None:
    from toymodels.config import SEED_RANGE, _is_seed
    from toymodels.errors import check
    from toymodels.paper import build_gallery

    check(_is_seed(args.seed), "seed", SEED_RANGE, args.seed)
    check(1 <= args.threads <= 1024, "threads", "an integer in [1, 1024]", args.threads)
    check(1 <= args.jobs <= 1024, "jobs", "an integer in [1, 1024]", args.jobs)
    import torch

    torch.set_num_threads(args.threads)  # pinned: same seed and thread count, identical files
    build_gallery(args.only, args.out, quick=args.quick, seed=args.seed, jobs=args.jobs)

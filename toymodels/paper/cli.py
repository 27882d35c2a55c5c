"""`toymodels figures`: regenerate the paper's figures (PNG + SVG + CSV tables + index.html)."""

from __future__ import annotations

import argparse
from pathlib import Path

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
    p.set_defaults(func=_figures)


def _figures(args) -> None:
    from toymodels.config import SEED_RANGE, _is_seed
    from toymodels.errors import check
    from toymodels.paper import build_gallery

    check(_is_seed(args.seed), "seed", SEED_RANGE, args.seed)
    build_gallery(args.only, args.out, quick=args.quick, seed=args.seed)

"""Figure: the 3→2 phase diagram (the paper's second one): phase of an extra third feature in 2 dimensions."""

from __future__ import annotations

import pandas as pd

from toymodels.paper.phase_2to1 import agreement_text, overlay, phase_map, run_phase_sweep, with_theory

TITLE = "Phase diagram: 3 features in 2 dimensions"
SECTION = "paper"
SOURCE = "Elhage et al. 2022, Superposition as a phase change"
CAPTION = (
    "Phase of the extra (third) feature (blue: not represented, green: its own dimension, red: superposition); "
    "black lines: boundaries of the best of the theory's candidates (toymodels.theory: the extra feature "
    "shares a dimension with one feature as in the 2→1 optimum, or takes one while the other two share; three "
    "at 120° loses at every point tested), ×: cells away from the lines that disagree; the title gives the agreement.\n"
    "3→2 ReLU-output model, features 0 and 1 importance 1, extra feature importance 0.1→10 (x), all "
    "densities 1→0.01 (y), 12×12 grid, best of 10 restarts picked on the exact expected loss, 1000 AdamW "
    "steps (lr 0.01, batch 256) per model."
)


def compute(quick: bool = False, seed: int = 0, overrides: tuple[str, ...] = ()) -> pd.DataFrame:
    """Run the phase_3to2 sweep (12×12 × 10 restarts; quick: 8×8 × 4) and return one row per cell."""
    from toymodels.theory import phase_3to2

    size = ["grid.n=8", "train.restarts=4"] if quick else ["grid.n=12"]
    df = run_phase_sweep("phase_3to2", [*size, f"train.seed={seed}", *overrides])
    return with_theory(df, phase_3to2)[0]


def plot(df: pd.DataFrame):
    from toymodels.theory import phase_3to2

    fig, ax = phase_map(df)
    overlay(ax, phase_3to2)
    ax.set_title(f"3→2: trained phase of the extra feature vs theory (lines)\n{agreement_text(df)}", fontsize=9)
    fig.tight_layout()
    return fig

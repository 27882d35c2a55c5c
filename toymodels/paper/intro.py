"""Intro figure: 5 features in 2 dimensions go from 2 dedicated features to antipodal pairs to a pentagon."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from toymodels.config import ToyConfig
from toymodels.paper.common import W_of, fit, style, vector_panel, weights_table

DENSITIES = [1.0, 0.3, 0.1, 0.05, 0.02]
STEPS, RESTARTS = (5_000, 2_000), (8, 4)

TITLE = "Superposition appears as features get sparser (5 features → 2 dims)"
SECTION = "paper"
SOURCE = "Elhage et al. 2022, Toy Models of Superposition: the introduction (5 features in 2 dimensions)"
CAPTION = (
    "Dense features: the model keeps the 2 most important in dedicated orthogonal directions; as density "
    "falls it packs 4 as antipodal pairs, then all 5 as a pentagon (D_i = 2/5); colour = importance 0.9^i.\n"
    f"relu_output, densities {', '.join(map(str, DENSITIES))}, {STEPS[0]} steps (lr 1e-2 warm-up + cosine), "
    f"best of {RESTARTS[0]} restarts "
    f"(--quick: {STEPS[1]} steps, {RESTARTS[1]} restarts); all densities × restarts train as one tensor."
)


def compute(quick: bool = False, seed: int = 0) -> pd.DataFrame:
    cfg = ToyConfig(n_features=5, n_hidden=2, importance_decay=0.9, density=[[d] for d in DENSITIES])
    return weights_table(fit(cfg, quick, seed, steps=STEPS, restarts=RESTARTS))


def plot(df: pd.DataFrame) -> plt.Figure:
    style()
    dens = sorted(df["density"].unique(), reverse=True)
    fig, axes = plt.subplots(1, len(dens), figsize=(2.2 * len(dens), 2.6))
    colors = sns.color_palette("viridis", 6)[:5]  # x0, the most important, darkest
    for ax, d in zip(axes, dens, strict=True):
        sub = df[df["density"] == d]
        n_rep = int((sub["norm"] >= 0.5).sum())
        vector_panel(ax, W_of(sub), colors, f"density {d:g}\n{n_rep} features represented",
                     labels=[f"x{i}" for i in range(5)])
    fig.suptitle("WᵀW embeddings of 5 features in 2 dimensions (colour: importance, darker = more important)",
                 fontsize=9)
    fig.tight_layout()
    return fig

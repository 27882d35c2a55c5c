"""Non-uniform sparsity: as one feature gets denser, the pentagon deforms, then snaps to a new arrangement."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from toymodels.config import ToyConfig
from toymodels.paper.common import W_of, fit, style, vector_panel, weights_table

BASE = 0.05
VARIED = sorted({float(f"{d:.2g}") for d in np.geomspace(0.001, 0.5, 10)} | {BASE}, reverse=True)
SHOWN = [0.5, 0.13, 0.05, 0.016, 0.0079, 0.001]  # x0 densities drawn as vector panels
STEPS, RESTARTS = (5_000, 2_000), (6, 4)

TITLE = "One feature's density changes: the pentagon deforms, then snaps to digons (5 features → 2 dims)"
SECTION = "paper"
SOURCE = "Elhage et al. 2022, Non-uniform superposition"
CAPTION = (
    "The other four features stay at density 0.05 while x0 (red) gets denser or sparser: the pentagon "
    "deforms (x0's D_i drifts from 2/5), and once x0 is ~10× sparser it snaps: x0 is dropped and the other "
    "four form two antipodal pairs (digons, D_i = 1/2).\n"
    f"relu_output, uniform importance, x0 density {VARIED[0]:g}…{VARIED[-1]:g} ({len(VARIED)} instances in "
    "one "
    f"tensor), {STEPS[0]} steps (lr 1e-2 warm-up + cosine), best of {RESTARTS[0]} (--quick {STEPS[1]}, "
    f"{RESTARTS[1]})."
)


def compute(quick: bool = False, seed: int = 0) -> pd.DataFrame:
    dens = [[d] + [BASE] * 4 for d in VARIED]
    cfg = ToyConfig(n_features=5, n_hidden=2, density=dens)
    df = weights_table(fit(cfg, quick, seed, steps=STEPS, restarts=RESTARTS))
    df.insert(2, "x0_density", np.repeat(VARIED, 5))
    return df


def plot(df: pd.DataFrame) -> plt.Figure:
    style()
    fig = plt.figure(figsize=(2.0 * len(SHOWN), 5.2))
    gs = fig.add_gridspec(2, len(SHOWN), height_ratios=[1, 1.05])
    colors = ["tab:red"] + sns.color_palette("Blues_d", 4)
    for j, d in enumerate(SHOWN):
        sub = df[df["x0_density"] == d]
        vector_panel(fig.add_subplot(gs[0, j]), W_of(sub), colors, f"x0 density {d:g}",
                     labels=[f"x{i}" for i in range(5)])
    ax = fig.add_subplot(gs[1, :])
    g = df.assign(which=np.where(df["feature"] == 0, "x0 (varied)", "x1…x4 (density 0.05)"))
    sns.lineplot(g, x="x0_density", y="dimensionality", hue="which", marker="o", errorbar=("pi", 100),
                 palette=["tab:red", "tab:blue"], ax=ax)
    for y, lab in ((0.5, "1/2"), (0.4, "2/5"), (1.0, "1")):
        ax.axhline(y, color="0.6", ls=":", lw=0.8)
        ax.text(1.005, y, lab, transform=ax.get_yaxis_transform(), va="center", fontsize=8)
    ax.invert_xaxis()
    ax.set(xscale="log", xlabel="density of x0 (others 0.05)", ylabel="feature dimensionality D_i",
           ylim=(0, 1.1))
    ax.legend(title=None, fontsize=8, loc="upper left")
    fig.tight_layout()
    return fig

"""Polysemanticity and capacity (Scherlis et al. 2022): how a model shares its dimensions out by importance.

A feature's capacity is its dimensionality D_i = ‖W_i‖⁴ / Σ_j (W_i·W_j)² (the paper's C_i): 1 for a dimension of
its own, 0 when ignored, in between when it shares. Sparser (higher-kurtosis) inputs make sharing cheaper.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from toymodels.config import ToyConfig
from toymodels.paper.common import fit, style, weights_table

SECTION = "followups"
SOURCE = "Scherlis et al. 2022, Polysemanticity and Capacity in Neural Networks"
N, M, DECAY = 20, 5, 0.7
DENSITIES = [1.0, 0.3, 0.1, 0.03]
STEPS, RESTARTS = (3000, 1200), (6, 4)
FULL, NONE = 0.9, 0.1
"""Capacity ≥ FULL: a whole dimension; ≤ NONE: ignored; in between: a fraction (polysemantic)."""

TITLE = "Capacity allocation vs importance, and how kurtosis shifts it (ReLU-output model, 20 features → 5 dims)"
CAPTION = (
    "Each feature's capacity D_i vs its importance: dense (low-kurtosis) inputs give the top 5 features a whole "
    "dimension and the rest none; as kurtosis rises, middling features get a fraction (here 1/2: antipodal "
    "pairs), the curve moves to less important features, and at the highest kurtosis no feature keeps a whole "
    "dimension at density ≤ 0.1 (--quick can give the 2nd feature, not the 1st, the whole dimension: a near-tie).\n"
    f"relu_output, importance {DECAY}^i, densities {', '.join(map(str, DENSITIES))} (kurtosis of x in the "
    f"legend), {STEPS[0]} steps (lr 1e-2 warm-up + cosine), best of {RESTARTS[0]} restarts; all densities × "
    f"restarts in one train() call (--quick: {STEPS[1]} steps, best of {RESTARTS[1]})."
)


def kurtosis(p: float) -> float:
    """Kurtosis E(x−μ)⁴/σ⁴ of x = Bernoulli(p)·U[0,1] (moments E xᵏ = p/(k+1)); 1.8 at p = 1."""
    mu = p / 2
    var = p / 3 - mu**2
    m4 = p / 5 - 4 * mu * p / 4 + 6 * mu**2 * p / 3 - 3 * mu**4
    return m4 / var**2


def compute(quick: bool = False, seed: int = 0) -> pd.DataFrame:
    cfg = ToyConfig(n_features=N, n_hidden=M, importance_decay=DECAY, density=[[d] for d in DENSITIES])
    df = weights_table(fit(cfg, quick, seed, steps=STEPS, restarts=RESTARTS))
    df["kurtosis"] = df["density"].map(kurtosis)
    return df


def allocation(df: pd.DataFrame) -> pd.DataFrame:
    """Per density: features with a whole dimension, a fraction, none; total capacity (≈ m)."""
    D = df["dimensionality"]
    return df.assign(full=D >= FULL, part=(D > NONE) & (D < FULL), none=D <= NONE).groupby(
        "density", sort=False)[["full", "part", "none", "dimensionality"]].sum().rename(
        columns={"dimensionality": "total"})


def plot(df: pd.DataFrame) -> plt.Figure:
    import seaborn as sns

    style()
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [1.7, 1]})
    df = df.assign(label=[f"density {d:g} (kurtosis {k:.0f})" for d, k in zip(df["density"], df["kurtosis"],
                                                                              strict=True)])
    sns.lineplot(data=df, x="importance", y="dimensionality", hue="label", marker="o", palette="flare", ax=ax)
    ax.set(xscale="log", xlabel="importance (log)", ylabel="capacity D_i", ylim=(-0.05, 1.08),
           title="capacity allocated vs importance")
    ax.invert_xaxis()
    ax.legend(fontsize=7, title=None)
    alloc = allocation(df)
    x = np.arange(len(alloc))
    bottom = np.zeros(len(alloc))
    for col, color, name in (("full", "tab:green", "whole dimension (≥ 0.9)"), ("part", "tab:orange",
                             "fraction"), ("none", "0.75", "none (≤ 0.1)")):
        bx.bar(x, alloc[col], bottom=bottom, color=color, label=name)
        bottom += alloc[col].to_numpy()
    bx.set_xticks(x, [f"{d:g}\n(κ {kurtosis(d):.0f})" for d in alloc.index], fontsize=8)
    bx.set(xlabel="density (kurtosis)", ylabel="features", title=f"{N} features sharing {M} dims")
    bx.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=3)
    fig.tight_layout()
    return fig

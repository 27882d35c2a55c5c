"""Superposition vs sparsity at a larger scale: features represented, and how many share dims."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from toymodels.config import ToyConfig
from toymodels.paper.common import fit, style, weights_table

N, M, DECAY = 80, 20, 0.95
DENSITIES = [float(f"{d:.3g}") for d in np.geomspace(1.0, 0.001, 13)]
STEPS = (4_000, 400)

TITLE = f"Features represented and in superposition vs density ({N} features → {M} dims)"
SECTION = "paper"
SOURCE = "Elhage et al. 2022, Superposition as a phase change (features represented vs sparsity)"
CAPTION = (
    f"Dense: about {M} features, each with its own dimension; as features get sparser the model represents "
    f"far more than {M}, nearly all in superposition.\n"
    f"relu_output, importance {DECAY}^i, {len(DENSITIES)} densities from 1 to 0.001 trained as one tensor, "
    f"{STEPS[0]} steps (lr 1e-2 warm-up + cosine; --quick {STEPS[1]})."
)


def compute(quick: bool = False, seed: int = 0) -> pd.DataFrame:
    cfg = ToyConfig(n_features=N, n_hidden=M, importance_decay=DECAY, density=[[d] for d in DENSITIES])
    df = weights_table(fit(cfg, quick, seed, steps=STEPS))
    return df.drop(columns=[c for c in df.columns if c.startswith("w") and c[1:].isdigit()])


def summarize(df: pd.DataFrame) -> pd.DataFrame:
    """Per density: features represented, in superposition, and dimensions per feature."""
    g = df.assign(sq=df["norm"] ** 2).groupby("density")
    return pd.DataFrame({
        "represented": g["phase"].apply(lambda p: int((p != "not_represented").sum())),
        "superposition": g["phase"].apply(lambda p: int((p == "superposition").sum())),
        "dims_per_feature": M / g["sq"].sum(),
    }).reset_index()


def plot(df: pd.DataFrame) -> plt.Figure:
    style()
    s = summarize(df)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    long = s.melt("density", ["represented", "superposition"], var_name="features", value_name="count")
    sns.lineplot(long, x="density", y="count", hue="features", marker="o", ax=ax1)
    ax1.legend(title="features", loc="lower right", fontsize=8)
    ax1.axhline(M, color="0.4", ls="--", lw=1)
    ax1.text(0.02, (M + 1.5) / (N + 2), f"m = {M} dims", transform=ax1.transAxes, fontsize=8, color="0.3")
    ax1.set(xscale="log", ylabel="number of features", xlabel="feature density 1 − S", ylim=(0, N + 2))
    ax1.invert_xaxis()
    ax1.set_title("more sparsity → more features, in superposition", fontsize=9)
    im = df.pivot(index="feature", columns="density", values="norm").sort_index(axis=1, ascending=False)
    sns.heatmap(im, ax=ax2, cmap="viridis", vmin=0, vmax=1.2, cbar_kws={"label": "‖W_i‖"},
                xticklabels=[f"{d:g}" for d in im.columns], yticklabels=10)
    ax2.set(xlabel="feature density 1 − S", ylabel=f"feature i (importance {DECAY}^i)")
    ax2.set_title("norm of each feature's embedding", fontsize=9)
    ax2.tick_params(axis="x", labelrotation=60, labelsize=7)
    fig.tight_layout()
    return fig

"""Correlated and anticorrelated features: correlated pairs go orthogonal, anticorrelated pairs antipodal; three
correlated pairs sit side by side in 2 dims and form local orthogonal bases in 3."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from toymodels.config import ToyConfig
from toymodels.paper.common import W_of, cosine, fit, style, vector_panel, weights_table

DENSITIES = [0.03, 0.1, 0.3, 0.6]
STRUCTURES = ("correlated", "anticorrelated")
STEPS, RESTARTS = (5_000, 2_000), (6, 4)
PAIRS_DENSITY, PAIRS_STEPS = 0.02, (2_000, 1_000)

TITLE = "Correlated features go orthogonal, anticorrelated features go antipodal"
SECTION = "paper"
SOURCE = "Elhage et al. 2022, Superposition with correlated features"
CAPTION = (
    "Rows 1–2, two sets of two features in 2 dims: correlated members (always on together) sit at right angles "
    "and collapse toward their sum as density rises; anticorrelated members (never on together) sit antipodal. "
    "Row 3, three correlated pairs: in 2 dims side by side (a hexagon), in 3 dims an octahedron whose pairs are "
    "orthogonal (local almost-orthogonal bases) while each feature is antipodal to another set's.\n"
    f"relu_output, uniform importance, set densities {', '.join(map(str, DENSITIES))} (three pairs: "
    f"{PAIRS_DENSITY}), {STEPS[0]} steps ({PAIRS_STEPS[0]}) (lr 1e-2 warm-up + cosine), best of {RESTARTS[0]} "
    f"(--quick {STEPS[1]} ({PAIRS_STEPS[1]}) steps, {RESTARTS[1]})."
)


def compute(quick: bool = False, seed: int = 0) -> pd.DataFrame:
    tables = []
    for structure in STRUCTURES:
        cfg = ToyConfig(n_features=4, n_hidden=2, structure=structure, set_size=2,
                        density=[[d] for d in DENSITIES])
        df = weights_table(fit(cfg, quick, seed, steps=STEPS, restarts=RESTARTS), structure=structure,
                           set_density=DENSITIES)
        W_IFH = df[[c for c in df.columns if c in ("w0", "w1")]].to_numpy().reshape(len(DENSITIES), 4, 2)
        # cosine between the two members of the feature's own set
        df["pair_cosine"] = [cosine(W_IFH[i], f, f ^ 1) for i in range(len(DENSITIES)) for f in range(4)]
        tables.append(df)
    return pd.concat([*tables, three_pairs(quick, seed)], ignore_index=True)


def three_pairs(quick: bool = False, seed: int = 0) -> pd.DataFrame:
    """The paper's three correlated pairs (n = 6) in m = 2 and in m = 3: one weights table, with pair_cosine."""
    tables = []
    for H in (2, 3):
        cfg = ToyConfig(n_features=6, n_hidden=H, structure="correlated", set_size=2, density=PAIRS_DENSITY)
        df = weights_table(fit(cfg, quick, seed, steps=PAIRS_STEPS, restarts=RESTARTS),
                           structure=f"three pairs, m={H}", set_density=PAIRS_DENSITY)
        W_FH = W_of(df)
        df["pair_cosine"] = [cosine(W_FH, f, f ^ 1) for f in range(6)]
        tables.append(df)
    return pd.concat(tables, ignore_index=True)


def pair_stats(df: pd.DataFrame, H: int) -> dict[str, float]:
    """Three correlated pairs in m = H: max |cos| within a pair, and mean over features of the most negative
    cosine with a feature of another set (−1: antipodal, the model is in superposition)."""
    sub = df[df["structure"] == f"three pairs, m={H}"].dropna(axis=1, how="all")  # w2 is NaN in m = 2 rows
    W_FH = W_of(sub)
    U_FH = W_FH / np.linalg.norm(W_FH, axis=1, keepdims=True)
    C = U_FH @ U_FH.T
    other = np.arange(6)[:, None] // 2 != np.arange(6)[None, :] // 2
    return {"within": float(np.abs(sub["pair_cosine"]).max()),
            "cross_min": float(np.where(other, C, np.inf).min(1).mean())}


def plot(df: pd.DataFrame) -> plt.Figure:
    style()
    fig = plt.figure(figsize=(2.0 * len(DENSITIES) + 3.4, 7.0))
    gs = fig.add_gridspec(3, len(DENSITIES) + 2)
    colors = ["tab:blue", "tab:cyan", "tab:orange", "gold"]
    for r, structure in enumerate(STRUCTURES):
        for j, d in enumerate(DENSITIES):
            sub = df[(df["structure"] == structure) & (df["set_density"] == d)]
            title = f"{structure}\nset density {d:g}" if j == 0 else f"\nset density {d:g}"
            vector_panel(fig.add_subplot(gs[r, j]), W_of(sub), colors, title,
                         labels=["a1", "a2", "b1", "b2"])
    ax = fig.add_subplot(gs[:2, len(DENSITIES):])
    pairs = df[(df["feature"] % 2 == 0) & df["structure"].isin(STRUCTURES)]
    sns.lineplot(pairs, x="set_density", y="pair_cosine", hue="structure", style="structure", markers=True,
                 errorbar=("pi", 100), ax=ax)
    ax.axhline(0, color="0.6", ls=":")
    ax.set(xscale="log", ylim=(-1.1, 1.1), xlabel="set density", ylabel="cosine between members of a set")
    ax.set_xticks(DENSITIES, [f"{d:g}" for d in DENSITIES])
    ax.minorticks_off()
    ax.set_title("orthogonal (0) vs antipodal (−1)", fontsize=9)
    ax.legend(fontsize=8, title=None)
    six = ["tab:red", "lightcoral", "tab:green", "yellowgreen", "tab:blue", "lightskyblue"]  # a set = a hue
    hexa = df[df["structure"] == "three pairs, m=2"].dropna(axis=1, how="all")
    s2, s3 = pair_stats(df, 2), pair_stats(df, 3)
    vector_panel(fig.add_subplot(gs[2, 0]), W_of(hexa), six,
                 f"three pairs, m = 2\nside by side: pair cos {hexa['pair_cosine'].mean():.2f}",
                 labels=["a1", "a2", "b1", "b2", "c1", "c2"])
    oct_W = W_of(df[df["structure"] == "three pairs, m=3"].dropna(axis=1, how="all"))
    ax = fig.add_subplot(gs[2, 1:3])
    sns.heatmap(oct_W @ oct_W.T, ax=ax, cmap="RdBu_r", vmin=-1, vmax=1, annot=True, fmt=".1f",
                annot_kws={"fontsize": 6}, square=True, cbar=False,
                xticklabels=["a1", "a2", "b1", "b2", "c1", "c2"], yticklabels=["a1", "a2", "b1", "b2", "c1", "c2"])
    ax.set_title(f"three pairs, m = 3: WᵀW (octahedron)\nwithin a pair |cos| ≤ {s3['within']:.2f}, "
                 f"antipodal to another set {s3['cross_min']:.2f}", fontsize=8)
    ax = fig.add_subplot(gs[2, 3:])
    ax.axis("off")
    ax.text(0, 0.5, "Local almost-orthogonal bases: the model as a whole is in superposition\n"
            f"(6 features in 3 dims), yet each correlated pair, taken alone, is orthogonal.\n"
            f"In 2 dims the pairs cannot be orthogonal and sit side by side\n(pair cos ≤ {s2['within']:.2f}; each "
            f"feature's most negative cos with another set: {s2['cross_min']:.2f} on average).", fontsize=8,
            va="center")
    fig.tight_layout()
    return fig

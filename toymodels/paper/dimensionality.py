"""Feature dimensionality at the paper's size: D_i sticks to the fractions of uniform polytopes, and each feature's
geometry (digon, triangle, tetrahedron, pentagon, square antiprism) is read off its neighbourhood in WᵀW."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from toymodels import analysis
from toymodels.config import ToyConfig
from toymodels.paper.common import budget, fit, style, weights_table

SECTION = "paper"
SOURCE = "Elhage et al. 2022, Feature Dimensionality (The Geometry of Superposition)"

N, M = 400, 30
INV_DENSITY = (tuple(float(f"{v:.3g}") for v in np.geomspace(1.5, 10.0, 16)),
               tuple(float(f"{v:.3g}") for v in np.geomspace(2.0, 8.0, 6)))  # 1/(1−S), (full, quick)
STEPS, BATCH = (4_000, 1_500), 256
LEVELS = {"1": 1.0, "3/4": 0.75, "2/3": 2 / 3, "1/2": 0.5, "2/5": 0.4, "3/8": 0.375, "0": 0.0}
GEOMETRIES = {  # name: (D_i, how many other features of the polytope project on a vertex with (Ŵ_i·W_j)² > LINK)
    "dedicated": (1.0, {0}), "tetrahedron": (3 / 4, {3}), "triangle": (2 / 3, {2}), "digon": (1 / 2, {1}),
    "pentagon": (2 / 5, {4}), "square antiprism": (3 / 8, {5, 6, 7}),  # its 7 others: 2 at 0.65, 3 at 0.11, 2 at 0.02
}
COLORS = {"dedicated": "tab:gray", "tetrahedron": "tab:purple", "triangle": "tab:green", "digon": "tab:orange",
          "pentagon": "tab:blue", "square antiprism": "tab:red", "other": "0.75"}
D_TOL, LINK = 0.025, 0.05
"""A feature is of a geometry when |D_i − its fraction| ≤ D_TOL and the number of features projecting onto its
direction with (Ŵ_i·W_j)² > LINK is the polytope's (features of other polytopes are nearly orthogonal)."""

TITLE = f"Feature dimensionality: sticky fractions and the geometry of each feature ({N} features → {M} dims)"
CAPTION = (
    "Black: dimensions per feature m/‖W‖²_F falls with sparsity and sticks at 1/2; dots: each represented "
    "feature's D_i, coloured by the polytope it belongs to (read from D_i and how many features project on it): "
    "dedicated 1, tetrahedron 3/4, triangle 2/3, digon 1/2, pentagon 2/5, square antiprism 3/8. Not reproduced: "
    "no tetrahedra, ≤ 2 triangles. In the transition (1/(1−S) 1.6–2.1) 5–16 features per density sit at "
    "D_i ≈ 2/3, but 72–91% (median) of their interference comes from ~380 weakly represented features "
    "(0.05 < ‖W‖ < 0.5; the largest single (Ŵ_i·W_j)² is 0.04–0.2, a triangle's two are 0.25): a sea of weak "
    "features fills the spare dimensions instead of 2–3 partners; weight decay 0.1 instead of 0.01 keeps it "
    "(62–99%), as do 3× the steps (1/(1−S) 1.9: 370 weak, 12 at D_i ≈ 2/3 with median share 68%, 0 triangles).\n"
    f"relu_output, uniform importance, the paper's {N} → {M}; {len(INV_DENSITY[0])} densities, 1/(1−S) from 1 to "
    f"{INV_DENSITY[0][-1]:g}, as one tensor, batch {BATCH}, {STEPS[0]} steps (lr 1e-2 warm-up + cosine; --quick "
    f"{len(INV_DENSITY[1])} densities, {STEPS[1]} steps)."
)


def geometry(W_FH: np.ndarray) -> list[str]:
    """Per feature: the polytope it sits in (GEOMETRIES), 'other', or '' if not represented."""
    W = np.asarray(W_FH, dtype=np.float64)
    norms = np.linalg.norm(W, axis=1)
    unit = W / np.maximum(norms, 1e-12)[:, None]
    proj_FF = (unit @ W.T) ** 2  # (Ŵ_i·W_j)²
    D_F = norms ** 2 / np.maximum(proj_FF.sum(1), 1e-12)
    np.fill_diagonal(proj_FF, 0.0)
    neighbours = ((proj_FF > LINK) & (norms[None] >= analysis.REPRESENTED_NORM)).sum(1)
    out = []
    for f in range(len(W)):
        if norms[f] < analysis.REPRESENTED_NORM:
            out.append("")
            continue
        out.append(next((g for g, (d, k) in GEOMETRIES.items() if abs(D_F[f] - d) <= D_TOL and neighbours[f] in k),
                        "other"))
    return out


def weak_share(W_FH: np.ndarray) -> np.ndarray:
    """Per feature: the share of its interference Σ_j≠i (Ŵ_i·W_j)² that comes from weakly represented features
    (0.05 < ‖W_j‖ < REPRESENTED_NORM). A triangle's or tetrahedron's comes from its 2 or 3 partners (share 0)."""
    W = np.asarray(W_FH, dtype=np.float64)
    norms = np.linalg.norm(W, axis=1)
    proj_FF = (W / np.maximum(norms, 1e-12)[:, None] @ W.T) ** 2
    np.fill_diagonal(proj_FF, 0.0)
    weak = (norms > 0.05) & (norms < analysis.REPRESENTED_NORM)
    return proj_FF[:, weak].sum(1) / np.maximum(proj_FF.sum(1), 1e-12)


def compute(quick: bool = False, seed: int = 0) -> pd.DataFrame:
    inv = budget(quick, *INV_DENSITY)
    cfg = ToyConfig(n_features=N, n_hidden=M, density=[[1 / v] for v in inv])
    res = fit(cfg, quick, seed, steps=STEPS, batch_size=BATCH)
    df = weights_table(res)
    df.insert(2, "inv_density", np.repeat(inv, N))
    df["geometry"] = [g for W_FH in res.W.numpy() for g in geometry(W_FH)]
    df["weak_share"] = np.concatenate([weak_share(W_FH) for W_FH in res.W.numpy()])
    df["dims_per_feature"] = df["instance"].map(pd.Series(analysis.dimensions_per_feature(res.W).numpy()))
    return df.drop(columns=[c for c in df.columns if c.startswith("w") and c[1:].isdigit()])


def plot(df: pd.DataFrame) -> plt.Figure:
    style()
    fig, ax = plt.subplots(figsize=(9, 4.6))
    for label, y in LEVELS.items():
        ax.axhline(y, color="0.6", lw=0.8, ls=":")
        ax.text(1.005, y, label, transform=ax.get_yaxis_transform(), va="center", fontsize=8, color="0.3")
    rep = df[df["norm"] >= analysis.REPRESENTED_NORM]
    rng = np.random.default_rng(0)  # horizontal jitter only, so dots at one density don't overlap
    x = rep["inv_density"] * np.exp(rng.uniform(-0.05, 0.05, len(rep)))
    for g, color in COLORS.items():
        sel = (rep["geometry"] == g).to_numpy()
        if sel.any():
            ax.scatter(x[sel], rep["dimensionality"][sel], s=6, alpha=0.5 if g == "other" else 0.7, color=color,
                       lw=0, label=f"{g} ({sel.sum()})", zorder=1 if g == "other" else 2)
    per = df.groupby("inv_density")["dims_per_feature"].first()
    ax.plot(per.index, per.values, "k-o", ms=3, lw=1.5, label="dimensions per feature m/‖W‖²_F", zorder=3)
    ax.set(xscale="log", xlabel="1/(1−S)  (inverse feature density)", ylabel="dimensions", ylim=(-0.03, 1.1))
    ax.legend(loc="upper right", fontsize=7, ncol=2, markerscale=2)
    fig.tight_layout()
    return fig

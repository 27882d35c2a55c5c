"""SAEs across the superposition phase diagram: where does superposition make features unrecoverable?"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from toymodels.groundtruth.recovery import recovery_grid
from toymodels.paper.common import style

N_FEATURES, N_HIDDEN = 12, 4
STEPS = {False: (3000, 400), True: (1500, 200)}  # (toy steps, SAE steps)

TITLE = "SAE recovery across the superposition phase diagram (12 features → 4 dims)"
SECTION = "sae"
SOURCE = ("Sharkey et al. 2022, Taking features out of superposition with sparse autoencoders (toy data as ground "
          "truth); TopK SAE of Gao et al. 2024")
CAPTION = (
    "Left: features the toy model represents (numbers) and how many sit in superposition (colour) across "
    "density × importance of the second half of the features. Middle: a TopK SAE fit to the toy model's "
    "hidden h finds the directions of nearly every represented feature, superposed or not, so MCC (over all "
    "features; unrepresented count 0) tracks the number represented and is highest at low density. Right: "
    "detecting *when* a feature is active is harder: mean latent F1 is mostly lowest (≈0.2–0.45) at "
    "intermediate density (0.1–0.5), where many features are superposed but not sparse enough to be told "
    "apart, and higher (≈0.6–0.7) when features are rare. One cell fails at detection although its "
    "directions are found (density 0.044, importance 0.1: F1 0.02, MCC 0.67).\n"
    f"relu_output toy models, {N_FEATURES} features → {N_HIDDEN} dims, one train() call with the grid as "
    f"instances (steps {STEPS[False][0]}, lr 3e-3); per point a TopK SAE with {N_FEATURES} latents and "
    f"k = ⌈true L0⌉, {STEPS[False][1]} steps, scored on 8192 fresh samples "
    f"(--quick: {STEPS[True][0]}/{STEPS[True][1]} steps)."
)


def compute(quick: bool = False, seed: int = 0) -> pd.DataFrame:
    toy_steps, sae_steps = STEPS[bool(quick)]
    return recovery_grid(N_FEATURES, N_HIDDEN, toy_steps=toy_steps, sae_steps=sae_steps, seed=seed)


def _map(ax, df, value, title, cmap, vmin, vmax, annotate=None):
    dens = np.sort(df["density"].unique())[::-1]
    imps = np.sort(df["importance"].unique())
    grid = df.pivot_table(index="importance", columns="density", values=value).loc[imps, dens]
    im = ax.imshow(grid.to_numpy(), origin="lower", cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
    ax.set_xticks(range(len(dens)), [f"{d:.2g}" for d in dens])
    ax.set_yticks(range(len(imps)), [f"{i:.2g}" for i in imps])
    ax.set_xlabel("feature density (1 − sparsity)")
    ax.set_title(title, fontsize=10)
    ax.grid(False)
    if annotate is not None:
        ann = df.pivot_table(index="importance", columns="density", values=annotate)
        ann = ann.loc[imps, dens].to_numpy()
        shade = (grid.to_numpy() - vmin) / max(vmax - vmin, 1e-12)  # both colormaps are dark at the low end
        for y in range(ann.shape[0]):
            for x in range(ann.shape[1]):
                ax.text(x, y, f"{ann[y, x]:.0f}" if annotate.startswith("n_") else f"{ann[y, x]:.2f}",
                        ha="center", va="center", fontsize=7, color="w" if shade[y, x] < 0.35 else "k")
    plt.colorbar(im, ax=ax, shrink=0.8)


def plot(df: pd.DataFrame):
    style()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.4), constrained_layout=True)
    _map(axes[0], df, "n_superposition",
         "toy model: features in superposition\n(numbers: features represented)", "viridis", 0, N_FEATURES,
         annotate="n_represented")
    _map(axes[1], df, "mcc", "SAE: MCC over all features", "magma", 0, 1, annotate="mcc")
    _map(axes[2], df, "f1", "SAE: mean latent F1", "magma", 0, 1, annotate="f1")
    axes[0].set_ylabel("importance of features 6–11 (0–5 have 1)")
    return fig

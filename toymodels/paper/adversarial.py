"""Superposition and adversarial examples: the more features per dimension, the smaller the attack that moves
the output.

For each trained model and each of a fixed set of inputs drawn from the training distribution, the attack is the
optimal first-order L2 direction (the top right singular vector of the model's Jacobian at x, diag(ReLU′)·WᵀW in the
paper's notation); its size is the smallest ε (bisection on the real, nonlinear model, either sign) for which
‖f(x + ε d) − f(x)‖ reaches TARGET. A model without superposition has Jacobian gain ≤ 1, so it needs ε ≥ TARGET.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from toymodels.config import ToyConfig
from toymodels.paper.common import fit, style

SECTION = "paper"
SOURCE = "Elhage et al. 2022, Superposition and Adversarial Examples"

N, M = 50, 10
DENSITIES = [float(f"{v:.3g}") for v in np.geomspace(1.0, 0.01, 12)]
STEPS = (4_000, 1_500)
N_INPUTS = 128
"""Inputs attacked per model (drawn once, with their own seed, from each density's feature distribution)."""
TARGET = 0.1
"""The output change (L2) an attack must cause."""

TITLE = f"Superposition and adversarial vulnerability: attack size vs features per dimension ({N} → {M})"
CAPTION = (
    "Left: as density falls, features per dimension ‖W‖²_F/m (black) rises and the vulnerability (TARGET divided "
    "by the median attack size, so 1 = a model without superposition) rises with it. Right: attack size needed "
    "vs features per dimension, one dot per density; dashed: TARGET/(features per dimension).\n"
    f"relu_output, uniform importance, {len(DENSITIES)} densities 1 → {DENSITIES[-1]:g} as one tensor, "
    f"{STEPS[0]} steps (lr 1e-2 warm-up + cosine; --quick {STEPS[1]}); attack: top singular vector of the "
    f"Jacobian at each of {N_INPUTS} inputs, size = smallest ε moving the output by {TARGET:g} (L2, bisection)."
)


def relu_out(W_FH: np.ndarray, b_F: np.ndarray, x_BF: np.ndarray) -> np.ndarray:
    """[B, F] the ReLU-output model ReLU(x W Wᵀ + b) on a batch of inputs x_BF."""
    return np.maximum(x_BF @ W_FH @ W_FH.T + b_F, 0.0)


def attack_sizes(W_FH: np.ndarray, b_F: np.ndarray, x_BF: np.ndarray, target: float = TARGET) -> np.ndarray:
    """[B] smallest ε such that the best first-order L2 direction d moves the output by ≥ target (inf: never).

    d is the top right singular vector of J = diag(pre-activation > 0)·G at x (G = W Wᵀ, [F, F]); ε is found
    by bisection on the true model along +d and −d, and the smaller is kept.
    """
    G_FF = W_FH @ W_FH.T
    pre_BF = x_BF @ G_FF + b_F
    out_BF = np.maximum(pre_BF, 0.0)
    sizes = np.full(len(x_BF), np.inf)
    for k, x in enumerate(x_BF):
        J = (pre_BF[k] > 0)[:, None] * G_FF
        d = np.linalg.svd(J)[2][0]
        for step in (d, -d):
            sizes[k] = min(sizes[k], _bisect(lambda eps, s=step, x=x, y=out_BF[k]: np.linalg.norm(
                relu_out(W_FH, b_F, (x + eps * s)[None])[0] - y) >= target, 10 * target))
    return sizes


def _bisect(moved, hi: float) -> float:
    """Smallest ε in (0, hi] with moved(ε) (to 2⁻³⁰·hi), or inf if not even moved(hi)."""
    if not moved(hi):
        return np.inf
    lo = 0.0
    for _ in range(30):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if moved(mid) else (mid, hi)
    return hi


def _inputs(density: float, seed: int) -> np.ndarray:
    """[N_INPUTS, N] inputs from the training distribution, conditioned on at least one active feature."""
    rng = np.random.default_rng([seed, 7_919])
    rows = []
    while len(rows) < N_INPUTS:
        x = np.where(rng.random(N) < density, rng.random(N), 0.0)
        if x.any():
            rows.append(x)
    return np.array(rows)


def compute(quick: bool = False, seed: int = 0) -> pd.DataFrame:
    cfg = ToyConfig(n_features=N, n_hidden=M, density=[[d] for d in DENSITIES])
    res = fit(cfg, quick, seed, steps=STEPS)
    W_IFH, b_IF = res.W.double().numpy(), res.model.b.detach().double().numpy()
    rows = []
    for i, d in enumerate(DENSITIES):
        sizes = attack_sizes(W_IFH[i], b_IF[i], _inputs(d, seed))
        rows.append({"density": d, "features_per_dim": float((W_IFH[i] ** 2).sum() / M),
                     "represented": int((np.linalg.norm(W_IFH[i], axis=1) >= 0.5).sum()),
                     "attack_median": float(np.median(sizes)), "attack_q25": float(np.quantile(sizes, 0.25)),
                     "attack_q75": float(np.quantile(sizes, 0.75)), "loss": float(res.final_loss[i])})
    df = pd.DataFrame(rows)
    df["vulnerability"] = TARGET / df["attack_median"]
    return df


def plot(df: pd.DataFrame) -> plt.Figure:
    style()
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(10, 3.8))
    inv = 1 / df["density"]
    ax0.plot(inv, df["features_per_dim"], "k-o", ms=3, label="features per dimension ‖W‖²_F/m")
    ax0.plot(inv, df["vulnerability"], "-o", color="tab:red", ms=3,
             label="vulnerability (1 = no superposition)")
    ax0.axhline(1, color="0.6", lw=0.8, ls=":")
    ax0.set(xscale="log", xlabel="1/(1−S)  (inverse feature density)", ylabel="ratio")
    ax0.legend(fontsize=8, loc="upper left")
    ax1.errorbar(df["features_per_dim"], df["attack_median"],
                 yerr=[df["attack_median"] - df["attack_q25"], df["attack_q75"] - df["attack_median"]],
                 fmt="o", color="tab:red", ms=4, capsize=2, label="median attack size (IQR)")
    fpd = np.linspace(max(df["features_per_dim"].min(), 0.3), df["features_per_dim"].max(), 100)
    ax1.plot(fpd, TARGET / fpd, "k--", lw=0.8, label=f"{TARGET:g} / features per dim")
    ax1.set(xlabel="features per dimension", ylabel=f"L2 attack size to move the output by {TARGET:g}")
    ax1.legend(fontsize=8)
    fig.tight_layout()
    return fig

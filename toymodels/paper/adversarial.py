"""Superposition and adversarial examples: vulnerability grows with features per dimension.

Vulnerability is the paper's measure: for each input, the optimal L2 attack on each feature i (direction
(WᵀW)_i/‖(WᵀW)_i‖, norm EPS_FRAC of the mean input norm), keeping the one that raises the loss most; the mean loss
increase is divided by that of a model without superposition (m dedicated features) on the same inputs and attacks.

The attack size *needed* is a second, independent measure: for each input, the attack is the
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
EPS_FRAC = 0.1
"""The paper's attack norm: 0.1 of the average input norm."""

TITLE = f"Superposition and adversarial vulnerability: vulnerability tracks features per dimension ({N} → {M})"
CAPTION = (
    "Left: as density falls, features per dimension ‖W‖²_F/m (black) rises and the paper's vulnerability (red: loss "
    "increase under the best per-feature L2 attack, relative to a model without superposition) rises with it; "
    "middle: vulnerability vs features per dimension (≈ 2×, saturating above 5); right: the L2 attack size needed "
    f"to move the output by {TARGET:g} shrinks.\n"
    f"relu_output, uniform importance, {len(DENSITIES)} densities 1 → {DENSITIES[-1]:g} as one tensor, "
    f"{STEPS[0]} steps (lr 1e-2 warm-up + cosine; --quick {STEPS[1]}); {N_INPUTS} inputs per density; the paper's "
    f"attacks have norm {EPS_FRAC:g}× the mean input norm; attack needed: top singular vector of the Jacobian, "
    "smallest ε (bisection)."
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
    d_BF = np.linalg.svd((pre_BF > 0)[:, :, None] * G_FF[None])[2][:, 0]  # all inputs' Jacobians at once
    x2, y2, s2 = np.concatenate([x_BF, x_BF]), np.concatenate([out_BF, out_BF]), np.concatenate([d_BF, -d_BF])
    sizes = _bisect(lambda eps: np.linalg.norm(relu_out(W_FH, b_F, x2 + eps[:, None] * s2) - y2, axis=1) >= target,
                    np.full(len(x2), 10 * target))
    return np.minimum(sizes[: len(x_BF)], sizes[len(x_BF):])


def paper_harm(W_FH: np.ndarray, b_F: np.ndarray, x_BF: np.ndarray, eps: float) -> np.ndarray:
    """[B] the paper's attack: the largest loss increase Σ_f (ReLU(·)_f − x_f)² over the F per-feature optimal L2
    attacks x + ε (WᵀW)_i/‖(WᵀW)_i‖ (features with a zero row cannot be attacked)."""
    G_FF = W_FH @ W_FH.T
    norm_F = np.linalg.norm(G_FF, axis=1)
    D_FF = np.where(norm_F[:, None] > 1e-9, G_FF / np.maximum(norm_F, 1e-12)[:, None], 0.0)
    pre_BF = x_BF @ G_FF + b_F
    base_B = ((np.maximum(pre_BF, 0) - x_BF) ** 2).sum(1)
    pre_BIF = pre_BF[:, None, :] + eps * (D_FF @ G_FF)[None]
    return (((np.maximum(pre_BIF, 0) - x_BF[:, None, :]) ** 2).sum(2) - base_B[:, None]).max(1)


def vulnerability(W_FH: np.ndarray, b_F: np.ndarray, x_BF: np.ndarray, eps_frac: float = EPS_FRAC) -> float:
    """The paper's vulnerability: mean `paper_harm` at ε = eps_frac × mean ‖x‖, relative to a model of the same
    size without superposition (W = [I_m; 0], b = 0), on the same inputs."""
    F, H = W_FH.shape
    eps = eps_frac * float(np.linalg.norm(x_BF, axis=1).mean())
    ref_FH = np.eye(F, H)
    return float(paper_harm(W_FH, b_F, x_BF, eps).mean() / paper_harm(ref_FH, np.zeros(F), x_BF, eps).mean())


def _bisect(moved, hi: np.ndarray) -> np.ndarray:
    """Per element, the smallest ε in (0, hi] with moved(ε) (to 2⁻³⁰·hi), or inf if not even moved(hi); `moved`
    maps an array of ε to an array of booleans (one bisection per element, all run together)."""
    ok = moved(hi)
    lo = np.zeros_like(hi)
    for _ in range(30):
        mid = (lo + hi) / 2
        m = moved(mid)
        lo, hi = np.where(m, lo, mid), np.where(m, mid, hi)
    return np.where(ok, hi, np.inf)


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
        x_BF = _inputs(d, seed)
        sizes = attack_sizes(W_IFH[i], b_IF[i], x_BF)
        rows.append({"density": d, "vulnerability": vulnerability(W_IFH[i], b_IF[i], x_BF),
                     "features_per_dim": float((W_IFH[i] ** 2).sum() / M),
                     "represented": int((np.linalg.norm(W_IFH[i], axis=1) >= 0.5).sum()),
                     "attack_median": float(np.median(sizes)), "attack_q25": float(np.quantile(sizes, 0.25)),
                     "attack_q75": float(np.quantile(sizes, 0.75)), "loss": float(res.final_loss[i])})
    return pd.DataFrame(rows)


def tracking_slope(df: pd.DataFrame) -> float:
    """Slope of log vulnerability vs log features per dimension (1: vulnerability ∝ features per dimension)."""
    return float(np.polyfit(np.log(df["features_per_dim"]), np.log(df["vulnerability"]), 1)[0])


def plot(df: pd.DataFrame) -> plt.Figure:
    style()
    fig, (ax0, ax1, ax2) = plt.subplots(1, 3, figsize=(14, 3.9))
    inv = 1 / df["density"]
    ax0.plot(inv, df["features_per_dim"], "k-o", ms=3, label="features per dimension ‖W‖²_F/m")
    ax0.plot(inv, df["vulnerability"], "-o", color="tab:red", ms=3, label="vulnerability (1 = no superposition)")
    ax0.axhline(1, color="0.6", lw=0.8, ls=":")
    ax0.set(xscale="log", xlabel="1/(1−S)  (inverse feature density)", ylabel="ratio",
            title=f"vulnerability rises {df['vulnerability'].max() / df['vulnerability'].iloc[0]:.0f}×")
    ax0.legend(fontsize=8, loc="upper left")
    ax1.plot(df["features_per_dim"], df["vulnerability"], "o", color="tab:red", ms=4)
    lim = [0.8, 1.1 * max(df["features_per_dim"].max(), df["vulnerability"].max())]
    ax1.plot(lim, lim, "k:", lw=0.8, label="vulnerability = features per dimension")
    ax1.plot(lim, [2 * v for v in lim], "k--", lw=0.6, label="2 × features per dimension")
    ax1.set(xscale="log", yscale="log", xlabel="features per dimension", ylabel="vulnerability",
            title=f"log-log slope {tracking_slope(df):.2f}")
    ax1.legend(fontsize=8)
    ax2.errorbar(df["features_per_dim"], df["attack_median"],
                 yerr=[df["attack_median"] - df["attack_q25"], df["attack_q75"] - df["attack_median"]],
                 fmt="o", color="tab:blue", ms=4, capsize=2, label="median attack size (IQR)")
    ax2.axhline(TARGET, color="0.6", lw=0.8, ls=":")
    ax2.set(xlabel="features per dimension", ylabel=f"L2 attack needed to move the output by {TARGET:g}",
            title="attack size needed")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    return fig

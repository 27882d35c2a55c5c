"""Superposition yields robust neural scaling (Liu, Liu & Gore 2025): loss vs hidden size m.

Features fire with a power-law frequency p_i ∝ i^−α. Under strong superposition (here: negative weight decay,
which pushes every feature to norm ≈ 1) all features are represented and the loss falls as ≈ 1/m, set by the
interference between them. Under weak superposition only the m most frequent features are represented, without
overlap, and the loss is that of the features left out (the paper's weak law, `weak_law`): Σ_{i>m} Var x_i, a
power law m^−(α−1) while m ≪ n. Its limit is the linear model, which never superposes (it keeps the top m,
Elhage et al. 2022); a positive weight decay in the ReLU model (Liu et al.'s knob) lies in between at this budget.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from toymodels import analysis, theory
from toymodels.config import ToyConfig
from toymodels.paper.common import budget, fit, style

SECTION = "followups"
SOURCE = "Liu, Liu & Gore 2025, Superposition Yields Robust Neural Scaling"
N, ALPHA, P0 = 256, 1.2, 0.2
"""Feature i (1-based) fires with probability P0 · i^−ALPHA."""
REGIMES = {"strong": ("relu_output", -0.3, (1500, 1000)), "intermediate": ("relu_output", 3.0, (1500, 1000)),
           "weak": ("linear", 0.0, (750, 500))}
"""Regime → (model, weight decay, (full, quick) steps)."""
M_FULL, M_QUICK = [6, 8, 12, 16, 24, 32], [6, 12, 24]

TITLE = "Superposition yields robust scaling: loss vs hidden size m, strong vs weak superposition (256 features)"
CAPTION = (
    "Strong superposition (negative weight decay: nearly all features represented by m = 24) gives loss ∝ m^−1; "
    "weak superposition (the m most frequent features, no overlap: the linear model) follows the paper's weak "
    "law (dotted: the left-out features' variance, ∝ m^−(α−1) for m ≪ n; steeper here near n); weight decay 3 "
    "in the ReLU model keeps 2–4 m features, in between. Right: features represented (‖W_i‖ ≥ 0.5) vs m.\n"
    f"{N} features firing with probability {P0}·i^−{ALPHA}; relu_output with weight decay "
    f"{REGIMES['strong'][1]} (strong) and {REGIMES['intermediate'][1]}, {REGIMES['strong'][2][0]} steps; linear "
    f"(weak), {REGIMES['weak'][2][0]} steps; m = {', '.join(map(str, M_FULL))}, lr 1e-2 warm-up + cosine, loss "
    f"on 16 fresh batches (--quick: m = {', '.join(map(str, M_QUICK))}, "
    f"{REGIMES['strong'][2][1]} and {REGIMES['weak'][2][1]} steps)."
)


def densities() -> list[float]:
    return (P0 * np.arange(1, N + 1, dtype=float) ** -ALPHA).tolist()


def weak_law(m: int) -> float:
    """The paper's weak-superposition loss: the m most frequent features exact, the others left out (their
    variance, the best a bias can do), averaged over the N features as the training loss is."""
    return float(theory.variance(np.asarray(densities())[m:]).sum() / N)


def compute(quick: bool = False, seed: int = 0) -> pd.DataFrame:
    rows = []
    for m in (M_QUICK if quick else M_FULL):
        for regime, (model, wd, steps) in REGIMES.items():
            res = fit(ToyConfig(n_features=N, n_hidden=m, density=densities(), model=model), quick, seed,
                      steps=steps, weight_decay=wd, eval_batches=16)
            norms_F = analysis.feature_norms(res.W)[0]
            rows.append({"m": m, "regime": regime, "model": model, "weight_decay": wd,
                         "loss": float(res.final_loss[0]), "weak_law": weak_law(m),
                         "represented": int((norms_F >= analysis.REPRESENTED_NORM).sum()),
                         "top_m_represented": int((norms_F[:m] >= analysis.REPRESENTED_NORM).sum()),
                         "steps": budget(quick, *steps)})
    return pd.DataFrame(rows)


def exponent(df: pd.DataFrame, regime: str, column: str = "loss") -> float:
    """−slope of log `column` vs log m (least squares) for one regime."""
    sub = df[df["regime"] == regime]
    return float(-np.polyfit(np.log(sub["m"]), np.log(sub[column]), 1)[0])


def plot(df: pd.DataFrame) -> plt.Figure:
    import seaborn as sns

    style()
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4.2))
    pal = {"strong": "tab:purple", "intermediate": "tab:olive", "weak": "tab:orange"}
    for regime in REGIMES:
        sub = df[df["regime"] == regime]
        k = exponent(df, regime)
        c = np.exp(np.mean(np.log(sub["loss"]) + k * np.log(sub["m"])))
        ax.plot(sub["m"], c * sub["m"].astype(float) ** -k, "--", color=pal[regime], lw=1)
        what = f"wd {REGIMES[regime][1]}" if regime != "weak" else "linear"
        ax.plot(sub["m"], sub["loss"], "o-", color=pal[regime], label=f"{regime} ({what}): loss ∝ m^−{k:.2f}")
    law = df[df["regime"] == "weak"]
    ax.plot(law["m"], law["weak_law"], "k:", lw=1.5,
            label=f"weak law Σ_(i>m) Var x_i: ∝ m^−{exponent(df, 'weak', 'weak_law'):.2f}")
    ax.set(xscale="log", yscale="log", xlabel="hidden size m", ylabel="test loss", title="loss vs m (dashed: fit)")
    ax.legend(fontsize=8)
    sns.lineplot(data=df, x="m", y="represented", hue="regime", palette=pal, marker="o", ax=bx)
    ms = np.array(sorted(df["m"].unique()))
    bx.plot(ms, ms, "k:", lw=1, label="m (one feature per dimension)")
    bx.axhline(N, color="0.6", lw=0.8, ls="--")
    bx.set(xscale="log", yscale="log", xlabel="hidden size m", ylabel="features represented",
           title=f"features represented (of {N})")
    bx.legend(fontsize=8)
    for a in (ax, bx):
        a.set_xticks(ms, [str(m) for m in ms])
        a.xaxis.set_minor_formatter(plt.NullFormatter())
    fig.tight_layout()
    return fig

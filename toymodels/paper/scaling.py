"""Superposition yields robust neural scaling (Liu, Liu & Gore 2025): loss vs hidden size m.

Features fire with a power-law frequency p_i ∝ i^−α. Under strong superposition (here: negative weight decay,
which pushes every feature to norm ≈ 1) all features are represented and the loss falls as ≈ 1/m, set by the
interference between them; under weaker superposition (large positive weight decay) the rarer features are
dropped and the loss follows the frequency tail instead.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from toymodels import analysis
from toymodels.config import ToyConfig
from toymodels.paper.common import budget, fit, style

SECTION = "followups"
SOURCE = "Liu, Liu & Gore 2025, Superposition Yields Robust Neural Scaling"
N, ALPHA, P0 = 256, 1.2, 0.2
"""Feature i (1-based) fires with probability P0 · i^−ALPHA."""
REGIMES = {"strong": -0.3, "weak": 3.0}
"""Weight decay per regime."""
M_FULL, M_QUICK = [6, 8, 12, 16, 24, 32], [6, 12, 24]
STEPS = (1500, 1000)

TITLE = "Superposition yields robust scaling: loss vs hidden size m, strong vs weak superposition (256 features)"
CAPTION = (
    "Strong superposition (negative weight decay: more features represented, nearly all by m = 24) gives loss "
    "∝ m^−1, the "
    "fitted exponent in the legend; weaker superposition (large weight decay: far fewer features kept) gives a "
    "shallower law set by the rare features it drops. Right: features represented (‖W_i‖ ≥ 0.5) vs m.\n"
    f"relu_output, {N} features firing with probability {P0}·i^−{ALPHA}, weight decay "
    f"{REGIMES['strong']} (strong) and {REGIMES['weak']} (weak), m = {', '.join(map(str, M_FULL))}, "
    f"{STEPS[0]} steps (lr 1e-2 warm-up + cosine), loss on 16 fresh batches (--quick: m = "
    f"{', '.join(map(str, M_QUICK))}, {STEPS[1]} steps)."
)


def densities() -> list[float]:
    return (P0 * np.arange(1, N + 1, dtype=float) ** -ALPHA).tolist()


def compute(quick: bool = False, seed: int = 0) -> pd.DataFrame:
    rows = []
    for m in (M_QUICK if quick else M_FULL):
        for regime, wd in REGIMES.items():
            res = fit(ToyConfig(n_features=N, n_hidden=m, density=densities()), quick, seed, steps=STEPS,
                      weight_decay=wd, eval_batches=16)
            rows.append({"m": m, "regime": regime, "weight_decay": wd, "loss": float(res.final_loss[0]),
                         "represented": int(analysis.n_represented(res.W)[0]), "steps": budget(quick, *STEPS)})
    return pd.DataFrame(rows)


def exponent(df: pd.DataFrame, regime: str) -> float:
    """−slope of log loss vs log m (least squares) for one regime."""
    sub = df[df["regime"] == regime]
    return float(-np.polyfit(np.log(sub["m"]), np.log(sub["loss"]), 1)[0])


def plot(df: pd.DataFrame) -> plt.Figure:
    import seaborn as sns

    style()
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4.2))
    pal = {"strong": "tab:purple", "weak": "tab:orange"}
    for regime, sub in df.groupby("regime"):
        k = exponent(df, regime)
        c = np.exp(np.mean(np.log(sub["loss"]) + k * np.log(sub["m"])))
        ax.plot(sub["m"], c * sub["m"].astype(float) ** -k, "--", color=pal[regime], lw=1)
        ax.plot(sub["m"], sub["loss"], "o-", color=pal[regime],
                label=f"{regime} (wd {REGIMES[regime]}): loss ∝ m^−{k:.2f}")
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

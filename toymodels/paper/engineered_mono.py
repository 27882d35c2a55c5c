"""Engineering monosemanticity (Jermyn et al. 2022): negative hidden-bias init and more neurons than features.

The model is the paper's absolute-value task, y = ReLU(W_out ReLU(W_in x + b_hidden) + b) → |x| (the
`abs_value` model with a per-neuron hidden bias), one of Jermyn et al.'s three tasks.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
import torch

from toymodels.config import ToyConfig
from toymodels.paper.common import fit, style

SECTION = "followups"
SOURCE = "Jermyn, Schiefer & Hubinger 2022, Engineering Monosemanticity in Toy Models"
N, DENSITY = 8, 0.1
NEURONS = [8, 16, 32]
BIASES = [0.0, -0.1, -0.2, -0.3]
STEPS, RESTARTS = (2000, 800), (2, 1)
MONO = 0.9
"""A neuron is monosemantic when one feature gives ≥ this share of its summed response to single features."""

TITLE = "Engineering monosemanticity: hidden-bias init and neuron count (absolute value of 8 features)"
CAPTION = (
    "Monosemanticity (mean over live neurons of the share of a neuron's response to single features that "
    "comes from its top feature) rises with a more negative hidden-bias init (at ≥ 2 neurons per feature) and "
    "from 1 to 2 neurons per feature (the ± pair each |x_i| needs; flat beyond), while the loss falls too.\n"
    f"abs_value with a trainable hidden bias, {N} features at density {DENSITY}, neurons "
    f"{', '.join(map(str, NEURONS))}, bias init {', '.join(map(str, BIASES))} (one train() call per neuron "
    f"count, bias inits as instances), {STEPS[0]} steps (lr 1e-2 warm-up + cosine), best of {RESTARTS[0]} "
    f"restarts (--quick: {STEPS[1]} steps, 1 restart)."
)


def neuron_response(W_FH: torch.Tensor, b_H: torch.Tensor) -> torch.Tensor:
    """[F, H] each neuron's activation on x = ±e_f (the larger sign) above its activation at x = 0."""
    return (torch.maximum(torch.relu(W_FH + b_H), torch.relu(b_H - W_FH)) - torch.relu(b_H)).clamp_min(0)


def mono_stats(W_FH: torch.Tensor, b_H: torch.Tensor) -> dict:
    """Monosemanticity of one model: mean top-feature share over live neurons, monosemantic neurons, features
    with a monosemantic neuron."""
    a_FH = neuron_response(W_FH, b_H)
    total_H = a_FH.sum(0)
    live = total_H > 1e-2
    share_H = a_FH.max(0).values / total_H.clamp_min(1e-12)
    mono = live & (share_H >= MONO)
    return {"monosemanticity": float(share_H[live].mean()) if live.any() else float("nan"),
            "mono_neurons": int(mono.sum()), "live_neurons": int(live.sum()),
            "features_covered": len(set(a_FH.argmax(0)[mono].tolist()))}


def compute(quick: bool = False, seed: int = 0) -> pd.DataFrame:
    rows = []
    for m in NEURONS:
        cfg = ToyConfig(n_features=N, n_hidden=m, model="abs_value", density=DENSITY, hidden_bias=BIASES)
        res = fit(cfg, quick, seed, steps=STEPS, restarts=RESTARTS)
        W_IFH, b_IH = res.model.W_in.detach(), res.model.b_hidden.detach()
        for i, b0 in enumerate(BIASES):
            rows.append({"neurons": m, "bias_init": b0, "loss": float(res.final_loss[i]),
                         "bias_final_mean": float(b_IH[i].mean()), **mono_stats(W_IFH[i], b_IH[i])})
    return pd.DataFrame(rows)


def plot(df: pd.DataFrame) -> plt.Figure:
    import seaborn as sns

    style()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    pal = "crest"
    sns.lineplot(data=df, x="bias_init", y="monosemanticity", hue="neurons", marker="o", palette=pal, ax=axes[0])
    axes[0].set(xlabel="hidden-bias init", ylabel="monosemanticity", title="vs bias init (per neuron count)")
    axes[0].invert_xaxis()
    sns.lineplot(data=df, x="neurons", y="monosemanticity", hue="bias_init", marker="o", palette="flare",
                 ax=axes[1])
    axes[1].set(xscale="log", xticks=NEURONS, xticklabels=[f"{m}\n({m // N}× features)" for m in NEURONS],
                xlabel="neurons", title="vs neuron count (per bias init)")
    axes[1].xaxis.set_minor_formatter(plt.NullFormatter())
    sns.lineplot(data=df, x="bias_init", y="loss", hue="neurons", marker="o", palette=pal, ax=axes[2],
                 legend=False)
    axes[2].set(yscale="log", xlabel="hidden-bias init", ylabel="test loss", title="loss: no worse when monosemantic")
    axes[2].invert_xaxis()
    for ax in axes[:2]:
        ax.set_ylim(0, 1.02)
        ax.axhline(1, color="0.6", lw=0.8, ls="--")
    best = df.loc[df["monosemanticity"].idxmax()]
    fig.suptitle(f"most monosemantic: {int(best['mono_neurons'])}/{int(best['live_neurons'])} neurons "
                 f"monosemantic, covering {int(best['features_covered'])}/{N} features", fontsize=9)
    fig.tight_layout()
    return fig

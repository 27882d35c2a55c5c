"""Computation in superposition: an absolute-value model uses neuron pairs, then polysemantic motifs."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from toymodels.config import ToyConfig
from toymodels.paper.common import fit, style

SECTION = "paper"
SOURCE = "Elhage et al. 2022, Computation in Superposition"
DENSITIES = [1.0, 0.1, 0.03, 0.01]
N, M = 100, 40
SMALL_STEPS, SMALL_RESTARTS, STEPS, DENSE_STEPS = (3_000, 1_000), (8, 8), (4_000, 400), (1_500, 400)
DENSE_LR = 0.2
"""Peak lr of the dense 100 → 40 model. At 1e-2 most neurons pile onto the top features (12 features, up to 8
neurons each): an unused feature has zero gradient (|x| is even, x odd), so only noise moves a neuron to it.
At 0.2 for 1,500 steps it ends with a ±pair on each of the top 20 features and 6× lower loss (4,000 steps at 0.2
degrade again to polysemantic neurons); the sparse densities keep 1e-2 (0.1 is ~25% worse there)."""
MOTIF_DENSITY = 0.1
"""Density whose neurons are drawn as stacked bars and searched for the asymmetric motif."""
MONO = 0.9
"""A neuron is monosemantic when one feature carries ≥ this share of its squared input weight."""

TITLE = f"Computation in superposition: |x| with ReLU neurons (3 → 6 dense; {N} → {M} across density)"
CAPTION = (
    "Dense: each feature gets two neurons, ReLU(x) and ReLU(−x). Sparser: monosemantic neurons give way to "
    "polysemantic ones (middle; bottom: every neuron's input weights at density "
    f"{MOTIF_DENSITY:g}, stacked by feature). Right: the asymmetric superposition motif, found automatically "
    "in the trained weights: neuron A reads feature a strongly and feature b weakly with the opposite sign "
    "and writes b back amplified (reciprocal output weights); neuron B also reads a and writes −b, cancelling "
    "the interference a would cause on b; B in turn does the same for its own weak feature b′ with A as its "
    "inhibitor (the short --quick run may not show the motif).\n"
    f"abs_value, 3 → 6 at density 1 ({SMALL_STEPS[0]} steps, best of {SMALL_RESTARTS[0]}); {N} → {M} with "
    f"importance 0.8^i at densities {', '.join(map(str, DENSITIES))} ({STEPS[0]} steps; "
    f"--quick {STEPS[1]}, small model {SMALL_STEPS[1]} steps, best of {SMALL_RESTARTS[1]}); lr 1e-2 warm-up "
    f"+ cosine (dense {N} → {M}: peak lr {DENSE_LR:g}, {DENSE_STEPS[0]} steps, else neurons pile onto the top "
    "features); "
    f"monosemantic = one feature carries ≥ {MONO:.0%} of a neuron's squared input weight."
)


def _long(res, label: str, densities) -> pd.DataFrame:
    W_in, W_out = res.model.W_in.detach().numpy(), res.model.W_out.detach().numpy()  # [I,F,H], [I,H,F]
    I, F, H = W_in.shape
    return pd.DataFrame({
        "model": label, "density": np.repeat(densities, F * H),
        "feature": np.tile(np.repeat(np.arange(F), H), I), "neuron": np.tile(np.arange(H), I * F),
        "w_in": W_in.reshape(-1), "w_out": W_out.transpose(0, 2, 1).reshape(-1),
    })


def compute(quick: bool = False, seed: int = 0) -> pd.DataFrame:
    small = fit(ToyConfig(n_features=3, n_hidden=6, model="abs_value", density=1.0), quick, seed,
                steps=SMALL_STEPS, restarts=SMALL_RESTARTS)
    dense = fit(ToyConfig(n_features=N, n_hidden=M, model="abs_value", importance_decay=0.8, density=1.0),
                quick, seed, steps=DENSE_STEPS, lr=DENSE_LR)
    big = fit(ToyConfig(n_features=N, n_hidden=M, model="abs_value", importance_decay=0.8,
                        density=[[d] for d in DENSITIES[1:]]), quick, seed, steps=STEPS)
    return pd.concat([_long(small, "3→6", [1.0]), _long(dense, f"{N}→{M}", DENSITIES[:1]),
                      _long(big, f"{N}→{M}", DENSITIES[1:])], ignore_index=True)


def neuron_summary(df: pd.DataFrame) -> pd.DataFrame:
    """Per (density, neuron): its dominant feature, that feature's share of the squared input weight."""
    sq = df.assign(sq=df["w_in"] ** 2)
    tot = sq.groupby(["density", "neuron"])["sq"].transform("sum")
    sq["share"] = sq["sq"] / tot.clip(lower=1e-12)
    top = sq.loc[sq.groupby(["density", "neuron"])["sq"].idxmax()]
    top = top.assign(alive=tot.loc[top.index] > 0.01)
    return top[["density", "neuron", "feature", "share", "alive"]]


def find_motif(W_in_FH: np.ndarray, W_out_FH: np.ndarray) -> dict | None:
    """The clearest asymmetric superposition motif, or None.

    Neuron A: its strongest input feature a, plus a feature b read with the opposite sign at 10–70% of
    a's magnitude, written back amplified (W_out[b, A] > 1.5·W_out[a, A]). Neuron B: also reads a (same
    sign, ≥ 30%) and writes b negatively, so a alone does not leak into b's output. Prefers mutual pairs
    (B is itself such a neuron, with weak feature b2 and A as its inhibitor), then the clearest weak read.
    """
    F, H = W_in_FH.shape
    found = []
    for A in range(H):
        col = W_in_FH[:, A]
        a = int(np.argmax(np.abs(col)))
        if abs(col[a]) < 0.3:
            continue
        for b in range(F):
            r = col[b] / col[a]
            if b == a or not -0.7 < r < -0.1 or W_out_FH[b, A] < max(1.5 * W_out_FH[a, A], 0.3):
                continue
            for B in range(H):
                if B != A and W_in_FH[a, B] * col[a] > 0.3 * col[a] ** 2 and W_out_FH[b, B] < -0.2:
                    found.append({"A": A, "B": B, "a": a, "b": b})
    if not found:
        return None
    weak = {(m["A"], m["B"]): m["b"] for m in found}
    for m in found:
        m["b2"] = weak.get((m["B"], m["A"]))
    return min(found, key=lambda m: (m["b2"] is None, W_in_FH[m["b"], m["A"]] / W_in_FH[m["a"], m["A"]]))


def _stacked(ax, W_FH: np.ndarray, colors) -> None:
    """Per-neuron stacked bars of input weights (positive up, negative down), sorted by top feature."""
    order = np.lexsort((-np.abs(W_FH).max(0), np.abs(W_FH).argmax(0)))
    x, h, bottom, c = [], [], [], []  # every segment, drawn in one bar() call
    for j, n in enumerate(order):
        up = down = 0.0
        for f in np.argsort(-np.abs(W_FH[:, n])):
            w = W_FH[f, n]
            if abs(w) < 0.03:
                break
            x.append(j), h.append(w), bottom.append(up if w > 0 else down), c.append(colors[f])
            up, down = (up + w, down) if w > 0 else (up, down + w)
    ax.bar(x, h, bottom=bottom, color=c, width=0.85, lw=0)
    ax.axhline(0, color="0.3", lw=0.8)
    ax.set_xlim(-0.6, len(order) - 0.4)


def plot(df: pd.DataFrame) -> plt.Figure:
    style()
    fig = plt.figure(figsize=(14, 7.6))
    gs = fig.add_gridspec(2, 3, width_ratios=[0.7, 1.1, 1.3], height_ratios=[1, 0.9], wspace=0.35,
                          hspace=0.45)
    small = df[df["model"] == "3→6"].pivot(index="feature", columns="neuron", values="w_in")
    order = np.lexsort((-small.to_numpy().max(0), np.abs(small.to_numpy()).argmax(0)))
    ax = fig.add_subplot(gs[0, 0])
    sns.heatmap(small.iloc[:, order], cmap="RdBu", center=0, vmin=-1.5, vmax=1.5, ax=ax, cbar=False,
                annot=True, fmt=".1f", annot_kws={"size": 7})
    ax.set(title="3 → 6, dense: a ±pair per feature", xlabel="neuron", ylabel="feature")
    big = df[df["model"] != "3→6"]
    s = neuron_summary(big)
    s = s[s["alive"]]
    counts = s.assign(kind=np.where(s["share"] >= MONO, "monosemantic", "polysemantic")).groupby(
        ["density", "kind"]).size().unstack(fill_value=0).sort_index(ascending=False)
    mono = s[s["share"] >= MONO]
    per_feat = mono.groupby("density")["feature"].nunique().reindex(counts.index, fill_value=0)
    ax = fig.add_subplot(gs[0, 1])
    counts.plot.bar(stacked=True, ax=ax, color=["tab:blue", "tab:orange"], width=0.75)
    ax.plot(range(len(per_feat)), per_feat.values, "k-o", ms=4, label="features with a monosemantic neuron")
    ax.set_xticklabels([f"{d:g}" for d in counts.index], rotation=0)
    ax.set(xlabel="feature density", ylabel="neurons", title=f"{N} → {M}: neurons by kind")
    ax.legend(fontsize=7, loc="upper left")

    mid = big[big["density"] == MOTIF_DENSITY]
    W_in = mid.pivot(index="feature", columns="neuron", values="w_in").to_numpy()  # [F, H]
    W_out = mid.pivot(index="feature", columns="neuron", values="w_out").to_numpy()  # [F, H]: neuron → f
    colors = plt.get_cmap("viridis")(np.clip(np.arange(N) / 30, 0, 1))  # features ≥ 30 share the lightest
    ax = fig.add_subplot(gs[1, :])
    _stacked(ax, W_in, colors)
    ax.set(xlabel="neuron (sorted by strongest input feature)", ylabel="W_in, stacked by feature",
           title=f"{N} → {M} at density {MOTIF_DENSITY:g}: each neuron's input weights (colour: feature "
                 "importance rank, dark = most important)")
    ax.set_xticks([])

    ax = fig.add_subplot(gs[0, 2])
    m = find_motif(W_in, W_out)
    if m is None:
        ax.text(0.5, 0.5, f"no asymmetric motif found\nat density {MOTIF_DENSITY:g} in this run", ha="center",
                va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return fig
    names = ["a", "b"] + (["b′"] if m["b2"] is not None else [])
    feats = [m["a"], m["b"]] + ([m["b2"]] if m["b2"] is not None else [])
    labels, vals_A, vals_B = [], [], []
    for kind, W in (("in", W_in), ("out", W_out)):
        for name, f in zip(names, feats, strict=True):
            labels.append(f"W_{kind}[{name}={f}]")
            vals_A.append(W[f, m["A"]])
            vals_B.append(W[f, m["B"]])
    x = np.arange(len(labels))
    ax.bar(x - 0.2, vals_A, 0.4, color="tab:purple", label=f"neuron A (#{m['A']}): reads a, leaks into b")
    ax.bar(x + 0.2, vals_B, 0.4, color="tab:green", label=f"neuron B (#{m['B']}): reads a, inhibits b")
    ax.axhline(0, color="0.3", lw=0.8)
    ax.axvline(len(names) - 0.5, color="0.7", lw=0.8, ls=":")
    ax.set_xticks(x, labels, fontsize=7, rotation=20)
    ax.set_title(f"asymmetric superposition motif (density {MOTIF_DENSITY:g})", fontsize=9)
    ax.legend(fontsize=7, loc="lower left")
    return fig

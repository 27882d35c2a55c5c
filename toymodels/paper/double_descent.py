"""Superposition, memorization and double descent (Henighan et al. 2023): the ReLU-output model on T samples.

Small T: the model memorises, storing the T training points' hidden vectors h_t = W x_t as a regular polygon.
Large T: it stores features instead. In between, test loss peaks (double descent).
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from toymodels import analysis
from toymodels.config import ToyConfig, TrainConfig
from toymodels.paper.common import budget, style, vector_panel
from toymodels.train import train

SECTION = "followups"
SOURCE = "Henighan et al. 2023, Superposition, Memorization, and Double Descent"
N, DENSITY = 200, 0.02
"""200 features, ~4 active per sample (the paper: 10,000 at 0.001, ~10 active); overlaps between two samples stay
rare (≈8 %), so memorised points do not share features."""
T_FULL = [3, 4, 5, 6, 8, 12, 20, 30, 50, 80, 130, 200, 300, 500]
T_QUICK = [5, 8, 20, 50, 130, 300]
M_FULL, M_QUICK = (2, 3), (2,)
STEPS, RESTARTS = (3000, 3000), (2, 2)
LR, WD = 1e-2, 1e-2

TITLE = "Double descent: memorised data points, then features, in the ReLU-output model (200 features → m dims)"
CAPTION = (
    "Test loss (fresh samples) vs training-set size T peaks between memorisation (small T: the training points' "
    "hidden vectors W x_t form a regular polygon, each with dimensionality ≈ m/T) and generalisation (large T: "
    "features hold the dimensions; panels: the 60 longest); the peak moves to larger T as m grows.\n"
    f"relu_output, {N} features at density {DENSITY}, inputs scaled to unit norm, full batch on T samples, "
    f"AdamW lr {LR} (warm-up + cosine), weight decay {WD}, {STEPS[0]} steps, best of {RESTARTS[0]} restarts on "
    f"training loss; m = {', '.join(map(str, M_FULL))} (--quick: m = 2, {len(T_QUICK)} sizes)."
)


def compute(quick: bool = False, seed: int = 0) -> pd.DataFrame:
    """Rows of kind 'loss' (per T, m), 'data' (each training point's hidden vector) and 'feature' (each W_f)."""
    Ts = T_QUICK if quick else T_FULL
    rows = []
    for m in (M_QUICK if quick else M_FULL):
        steps = budget(quick, *STEPS)
        res = train(ToyConfig(n_features=N, n_hidden=m, density=DENSITY, normalize=True, n_instances=len(Ts)),
                    TrainConfig(steps=steps, lr=LR, schedule="cosine", warmup_steps=steps // 20, weight_decay=WD,
                                dataset_size=Ts, restarts=budget(quick, *RESTARTS), seed=seed, eval_batches=16))
        for i, T in enumerate(Ts):
            rows.append({"kind": "loss", "m": m, "T": T, "test_loss": float(res.final_loss[i]),
                         "train_loss": float(res.dataset_loss[i])})
            x_TF = res.dataset[i][res.dataset[i].norm(dim=-1) > 0]  # an all-zero sample (~2 %) has no vector
            H_TM = x_TF @ res.W[i]  # hidden vectors of the training points
            for kind, V in (("data", H_TM), ("feature", res.W[i])):
                D = analysis.feature_dimensionality(V[None])[0]
                for j in range(len(V)):
                    rows.append({"kind": kind, "m": m, "T": T, "index": j, "dimensionality": float(D[j]),
                                 "norm": float(V[j].norm()), **{f"v{h}": float(V[j, h]) for h in range(min(m, 2))}})
    return pd.DataFrame(rows)


def polygon_gaps(V_T2: np.ndarray) -> np.ndarray:
    """Angles (degrees) between angularly consecutive 2-D vectors; all 360/T for a regular polygon."""
    ang = np.sort(np.degrees(np.arctan2(V_T2[:, 1], V_T2[:, 0])))
    return np.diff(np.r_[ang, ang[0] + 360])


def peak_ratio(loss: pd.DataFrame) -> tuple[int, float, float]:
    """(T at the interior maximum of test loss, peak / loss at the smallest T, peak / loss at the largest T)."""
    s = loss.sort_values("T")
    y = s["test_loss"].to_numpy()
    k = int(np.argmax(y[1:-1])) + 1
    return int(s["T"].iloc[k]), float(y[k] / y[0]), float(y[k] / y[-1])


def plot(df: pd.DataFrame) -> plt.Figure:
    import seaborn as sns

    style()
    loss = df[df["kind"] == "loss"]
    two = df[df["m"] == 2]
    Ts = sorted(loss["T"].unique())
    show = [T for T in (5, 8) if T in Ts] + [Ts[-1]]
    fig = plt.figure(figsize=(13, 6.4))
    grid = fig.add_gridspec(2, 2 + len(show), width_ratios=[1.6, 1.6] + [1] * len(show))
    ax = fig.add_subplot(grid[0, :2])
    sns.lineplot(data=loss, x="T", y="test_loss", hue="m", marker="o", palette="viridis", ax=ax)
    sns.lineplot(data=loss, x="T", y="train_loss", hue="m", palette="viridis", ls=":", legend=False, ax=ax)
    T_pk, left, right = peak_ratio(loss[loss["m"] == 2])
    ax.set(xscale="log", yscale="log", xlabel="training-set size T", ylabel="loss (solid: test, dotted: train)",
           ylim=(1e-2 / N, None),
           title=f"m = 2: test loss peaks at T = {T_pk} ({left:.1f}× the smallest T's, {right:.1f}× the largest T's)")
    ax.axhline(1 / N, color="0.5", lw=0.8, ls="--")
    ax.text(Ts[0], 1.1 / N, "loss of output 0", fontsize=7, color="0.4")
    ax = fig.add_subplot(grid[1, :2])
    pts = two[two["kind"] != "loss"]
    sns.stripplot(data=pts, x="T", y="dimensionality", hue="kind", dodge=True, size=2.5, alpha=0.6, jitter=0.25,
                  palette={"data": "tab:red", "feature": "tab:blue"}, ax=ax)
    ax.plot(range(len(Ts)), [2 / T for T in Ts], "k:", lw=1, label="m / T")
    ax.set(ylim=(-0.03, 1.0), xlabel="training-set size T (m = 2)", ylabel="dimensionality D",
           title="data points hold the dimensions at small T, features at large T")
    ax.legend(fontsize=7, loc="upper right")
    for c, T in enumerate(show):
        for r, kind in enumerate(("data", "feature")):
            sub = two[(two["kind"] == kind) & (two["T"] == T)]
            V = sub.nlargest(60, "norm")[["v0", "v1"]].to_numpy()  # the 60 longest (of up to 200 features)
            lim = 1.25 * max(np.abs(V).max(), 1e-6)
            color = "tab:red" if kind == "data" else "tab:blue"
            extra = f"\nangles {'/'.join(f'{g:.0f}' for g in polygon_gaps(V))}°" if kind == "data" and T <= 8 else ""
            vector_panel(fig.add_subplot(grid[r, 2 + c]), V, [color] * len(V), lim=lim,
                         title=f"T = {T}: {'points W x_t' if kind == 'data' else 'features W_f'}{extra}")
    fig.tight_layout()
    return fig

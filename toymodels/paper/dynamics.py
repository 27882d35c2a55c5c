"""Learning dynamics: features jump between discrete dimensionalities ("energy levels"), each jump a step in the
loss, and a jump is a geometric transformation of a group of feature vectors."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from toymodels import analysis
from toymodels.config import ToyConfig
from toymodels.paper.common import budget, fit, style, vector_panel

SECTION = "paper"
SOURCE = "Elhage et al. 2022, Learning Dynamics (Discrete Energy Level Jumps; Geometric Transformations)"

N, M, DENSITY = 100, 10, 0.25
STEPS, EVERY, LR = (6_000, 3_000), (10, 10), 3e-3
INIT_SCALE = 0.03
"""Xavier init × this: learning starts near the origin and moves from saddle to saddle, so the jumps are discrete."""
WINDOW, JUMP = 10, 0.15
"""A jump: a represented feature's D_i changes by more than JUMP within WINDOW snapshots, with ‖W_i‖ ≥ MIN_NORM at
both ends (D_i of a near-zero vector is noise)."""
MIN_NORM = 0.3
LEVELS = {"1": 1.0, "3/4": 0.75, "2/3": 2 / 3, "1/2": 0.5, "2/5": 0.4, "1/3": 1 / 3, "1/4": 0.25}

TITLE = f"Learning dynamics: discrete jumps of feature dimensionality ({N} features → {M} dims)"
CAPTION = (
    "Top: training loss, falling in steps; middle: each represented feature's D_i, which sits on a level and "
    f"jumps (red ticks: jumps > {JUMP} within {WINDOW} snapshots, each at a step of the loss); bottom: the largest "
    "jump as a geometric transformation, the jumping feature (red) and its final neighbours projected on their plane.\n"
    f"relu_output, uniform importance, density {DENSITY}, constant lr {LR:g} (the paper's 1e-3: same jumps, slower), "
    f"init {INIT_SCALE}× Xavier, {STEPS[0]} steps (--quick {STEPS[1]}), weights every {EVERY[0]} steps; one torch "
    "thread "
    "inside compute, so the result does not depend on the machine's thread count."
)


def jumps(df: pd.DataFrame, window: int = WINDOW, jump: float = JUMP) -> pd.DataFrame:
    """Jump events of represented features: feature, start/end step, ΔD_i, and the loss's fall over the jump
    relative to its median fall over windows of the same length (> 1: the jump is a step in the loss)."""
    tr = df[df["kind"] == "trace"]
    D_SF = tr.pivot(index="step", columns="feature", values="dimensionality").to_numpy()
    big_SF = tr.pivot(index="step", columns="feature", values="norm").to_numpy() >= MIN_NORM
    loss_S = tr.groupby("step")["loss"].first().to_numpy()
    steps = np.sort(tr["step"].unique())
    final = tr[tr["step"] == steps[-1]].set_index("feature")["norm"] >= analysis.REPRESENTED_NORM
    fall_S = np.log(loss_S[:-window]) - np.log(loss_S[window:])
    typical = float(np.median(np.abs(fall_S))) + 1e-12
    rows = []
    for f in np.flatnonzero(final.sort_index().to_numpy()):
        dD = np.where(big_SF[window:, f] & big_SF[:-window, f], D_SF[window:, f] - D_SF[:-window, f], 0.0)
        t, last = 0, -window
        for t in np.flatnonzero(np.abs(dD) > jump):
            if t < last + window:  # one event per excursion
                continue
            t_best = t + int(np.argmax(np.abs(dD[t:t + window])))
            rows.append({"feature": int(f), "start": int(steps[t_best]), "end": int(steps[t_best + window]),
                         "delta_D": float(dD[t_best]), "loss_fall": float(fall_S[t_best] / typical)})
            last = t_best
    return pd.DataFrame(rows, columns=["feature", "start", "end", "delta_D", "loss_fall"])


def compute(quick: bool = False, seed: int = 0) -> pd.DataFrame:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # matmul reductions differ with the thread count, and these dynamics amplify that
    try:
        res = fit(ToyConfig(n_features=N, n_hidden=M, density=DENSITY), quick, seed, steps=STEPS,
                  snapshot_every=budget(quick, *EVERY), log_every=budget(quick, *EVERY), lr=LR,
                  schedule="constant", warmup_steps=0, init_scale=INIT_SCALE)
    finally:
        torch.set_num_threads(threads)
    snaps_SFH = res.snapshots[:, 0].double()
    steps = res.snapshot_steps.numpy()
    S = len(steps)
    loss = np.interp(steps, res.history_steps.numpy(), res.loss_history[:, 0, 0].numpy())
    trace = pd.DataFrame({
        "kind": "trace", "step": np.repeat(steps, N), "feature": np.tile(np.arange(N), S),
        "norm": analysis.feature_norms(snaps_SFH).flatten().numpy(),
        "dimensionality": analysis.feature_dimensionality(snaps_SFH).flatten().numpy(),
        "loss": np.repeat(loss, N),
    })
    return pd.concat([trace, _transformation(trace, snaps_SFH.numpy(), steps)], ignore_index=True)


def _transformation(trace: pd.DataFrame, snaps_SFH: np.ndarray, steps: np.ndarray) -> pd.DataFrame:
    """Rows kind=geometry: the largest jump's feature and its final neighbours at 4 snapshots around the jump,
    projected on the top-2 principal plane of their final vectors (columns x, y)."""
    ev = jumps(trace)
    if ev.empty:
        return pd.DataFrame()
    e = ev.loc[ev["delta_D"].abs().idxmax()]
    f = int(e["feature"])
    W_FH = snaps_SFH[-1]
    unit = W_FH / np.maximum(np.linalg.norm(W_FH, axis=1), 1e-12)[:, None]
    group = sorted({f} | set(np.flatnonzero((unit[f] @ W_FH.T) ** 2 > 0.02).tolist()))
    plane = np.linalg.svd(W_FH[group], full_matrices=False)[2][:2]  # [2, H]
    i0, i1 = np.searchsorted(steps, [e["start"], e["end"]])
    picks = sorted({max(i0 - 3 * WINDOW, 0), i0, (i0 + i1) // 2, i1, min(i1 + 3 * WINDOW, len(steps) - 1)})
    rows = []
    for i in picks:
        xy = snaps_SFH[i][group] @ plane.T
        for g, (x, y) in zip(group, xy, strict=True):
            rows.append({"kind": "geometry", "step": int(steps[i]), "feature": g, "x": x, "y": y,
                         "jumping": g == f})
    return pd.DataFrame(rows)


def plot(df: pd.DataFrame) -> plt.Figure:
    style()
    tr, geo = df[df["kind"] == "trace"], df[df["kind"] == "geometry"]
    panels = sorted(geo["step"].unique()) if len(geo) else []
    fig = plt.figure(figsize=(10, 8.2))
    gs = fig.add_gridspec(3, max(len(panels), 1), height_ratios=[1, 2.4, 1.5], hspace=0.35)
    ax0 = fig.add_subplot(gs[0, :])
    ax1 = fig.add_subplot(gs[1, :], sharex=ax0)
    per_step = tr.groupby("step")["loss"].first()
    ax0.plot(per_step.index, per_step.values, color="k", lw=1)
    ax0.set(yscale="log", ylabel="loss")
    last = tr[tr["step"] == tr["step"].max()].set_index("feature")
    colors = plt.get_cmap("viridis")
    for f in last.index[last["norm"] >= analysis.REPRESENTED_NORM]:
        g = tr[tr["feature"] == f]
        ax1.plot(g["step"], g["dimensionality"], lw=0.8, alpha=0.7, color=colors(f / N))
    for label, y in LEVELS.items():
        ax1.axhline(y, color="0.5", ls=":", lw=0.8)
        ax1.text(1.005, y, label, transform=ax1.get_yaxis_transform(), va="center", fontsize=8)
    ev = jumps(tr)
    for s in ev["start"]:
        ax0.axvline(s, color="tab:red", lw=0.6, alpha=0.5)
        ax1.plot([s], [1.02], "v", color="tab:red", ms=4)
    ax1.set(xlabel="training step", ylabel="feature dimensionality D_i", ylim=(0, 1.06), xscale="log")
    ax1.set_title(f"{len(ev)} jumps > {JUMP} within {WINDOW} snapshots; median loss fall at a jump "
                  f"{ev['loss_fall'].median() if len(ev) else float('nan'):.1f}× the typical fall", fontsize=9)
    lim = float(np.hypot(geo["x"], geo["y"]).max()) * 1.2 if len(geo) else 1.0
    for j, s in enumerate(panels):
        g = geo[geo["step"] == s].sort_values("feature")
        ax = fig.add_subplot(gs[2, j])
        cols = ["tab:red" if jmp else "0.4" for jmp in g["jumping"]]
        vector_panel(ax, g[["x", "y"]].to_numpy(dtype=float), cols, title=f"step {s}", lim=lim)
    return fig

"""Learning dynamics: features sit on discrete dimensionalities ("energy levels") and jump between them, each jump
a step in the loss, and a jump is a geometric transformation of a group of feature vectors."""

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

N, M, DENSITY = 6, 3, 0.05
"""The paper's uniform setting (equal importance and sparsity) at a density where every feature ends in a digon:
six features → three dims end as an octahedron (three antipodal pairs, D_i = 1/2)."""
INSTANCES = (12, 6)
"""Independent inits trained as one tensor (full, quick); every statistic is over all of them."""
STEPS, EVERY, LR, BATCH = (5_000, 3_000), 10, 1e-3, 1024
"""(full, quick) steps, snapshot interval, the paper's constant lr, batch; the 12 inits' last jump ends at 2,020."""
INIT_SCALE = 0.03
"""Xavier init × this: learning starts near the origin and moves from saddle to saddle."""
PLATEAU, TOL = 20, 0.03
"""A plateau: ≥ PLATEAU consecutive snapshots within TOL of one level. A jump: a feature's move from one plateau
to the next at a level ≥ JUMP away."""
JUMP, SMOOTH = 0.15, 5
"""Smaller moves (e.g. 1/3 ↔ 2/5) are a trace passing near a level; SMOOTH: log-loss points in the running mean."""
LEVELS = {"1": 1.0, "3/4": 0.75, "2/3": 2 / 3, "1/2": 0.5, "2/5": 0.4, "1/3": 1 / 3, "1/4": 0.25, "1/6": 1 / 6,
          "0": 0.0}
"""Polytope levels (dedicated, tetrahedron, triangle, digon, pentagon) and k features on one line (1/k)."""

TITLE = f"Learning dynamics: discrete jumps of feature dimensionality ({N} features → {M} dims)"
CAPTION = (
    "Top: training loss, falling in steps; middle: each feature's D_i sits on a level and jumps to another (shaded: "
    f"moves between plateaus of ≥ {PLATEAU * EVERY} steps within {TOL} of a level), each at a step of the loss; "
    "bottom: the largest jump as a geometric transformation (the jumping feature red; plane of its final "
    "neighbours).\n"
    f"relu_output, uniform importance, {N} → {M} (the paper's 400 → 30 is past this budget; at 100 → 10 the traces "
    f"climb while norms grow), density {DENSITY} (ends as an octahedron of digons), {INSTANCES[0]} inits as one "
    f"tensor (--quick {INSTANCES[1]}; drawn: the median by loss fall at its jumps), AdamW constant lr {LR:g}, batch "
    f"{BATCH}, init {INIT_SCALE}× Xavier, {STEPS[0]} steps (--quick {STEPS[1]}), weights every {EVERY} steps."
)


def plateaus(D_S: np.ndarray) -> list[tuple[int, int, str]]:
    """(first, last snapshot index, level name) of each plateau of one feature's D_i trace."""
    lv = np.array(list(LEVELS.values()))
    idx_S = np.abs(D_S[:, None] - lv).argmin(1)
    on_S = np.abs(D_S - lv[idx_S]) < TOL
    out, i = [], 0
    while i < len(D_S):
        j = i
        while on_S[i] and j + 1 < len(D_S) and on_S[j + 1] and idx_S[j + 1] == idx_S[i]:
            j += 1
        if on_S[i] and j - i + 1 >= PLATEAU:
            out.append((i, j, list(LEVELS)[idx_S[i]]))
        i = j + 1
    return out


def jumps(df: pd.DataFrame) -> pd.DataFrame:
    """Jumps of every instance: a feature's move between consecutive plateaus whose levels differ by ≥ JUMP.
    Columns: instance, feature, start/end step (last snapshot of one plateau, first of the next), levels, ΔD_i,
    and loss_fall: the (smoothed) log-loss's fall per step during the jump over its fall per step in the windows
    of the same length just before and after (> 1: the jump is a step in the loss)."""
    rows = []
    for inst, tr in df[df["kind"] == "trace"].groupby("instance"):
        D_SF = tr.pivot(index="step", columns="feature", values="dimensionality").to_numpy()
        logloss_S = np.log(tr.groupby("step")["loss"].first().to_numpy())
        s_S = np.convolve(np.pad(logloss_S, SMOOTH // 2, mode="edge"), np.ones(SMOOTH) / SMOOTH, mode="valid")
        steps = np.sort(tr["step"].unique())
        for f in range(D_SF.shape[1]):
            pl = plateaus(D_SF[:, f])
            for (_, a, la), (b, _, lb) in zip(pl[:-1], pl[1:], strict=True):
                if abs(LEVELS[lb] - LEVELS[la]) < JUMP:
                    continue
                lo, hi = max(a - (b - a), 0), min(b + (b - a), len(s_S) - 1)
                around = (s_S[lo] - s_S[a] + s_S[b] - s_S[hi]) / max(a - lo + hi - b, 1)
                rows.append({"instance": int(inst), "feature": f, "start": int(steps[a]), "end": int(steps[b]),
                             "from": la, "to": lb, "delta_D": float(LEVELS[lb] - LEVELS[la]),
                             "loss_fall": float((s_S[a] - s_S[b]) / (b - a) / max(around, 1e-6))})
    return pd.DataFrame(rows, columns=["instance", "feature", "start", "end", "from", "to", "delta_D", "loss_fall"])


def on_level(df: pd.DataFrame) -> pd.Series:
    """Per instance: the fraction of (feature, snapshot) points on a plateau, up to the end of its last jump (the
    converged tail, all on 1/2, would inflate it)."""
    ev = jumps(df).groupby("instance")["end"].max()
    cover = {}
    for inst, g in df[df["kind"] == "trace"].groupby("instance"):
        D_SF = g.pivot(index="step", columns="feature", values="dimensionality").to_numpy()
        S = int(np.searchsorted(np.sort(g["step"].unique()), ev.get(inst, g["step"].max()))) + 1
        cover[inst] = np.mean([sum(min(b, S - 1) - a + 1 for a, b, _ in plateaus(D_SF[:, f]) if a < S) / S
                               for f in range(D_SF.shape[1])])
    return pd.Series(cover)


def shown(df: pd.DataFrame) -> int:
    """The instance drawn in full: the (lower) median instance by its median loss fall at a jump."""
    med = jumps(df).groupby("instance")["loss_fall"].median().sort_values(kind="stable")
    return int(med.index[(len(med) - 1) // 2]) if len(med) else 0


def compute(quick: bool = False, seed: int = 0) -> pd.DataFrame:
    I = budget(quick, *INSTANCES)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # matmul reductions differ with the thread count, and these dynamics amplify that
    try:
        res = fit(ToyConfig(n_features=N, n_hidden=M, density=[[DENSITY] * N] * I), quick, seed, steps=STEPS,
                  snapshot_every=EVERY, log_every=EVERY, lr=LR, schedule="constant", warmup_steps=0,
                  init_scale=INIT_SCALE, batch_size=BATCH)
    finally:
        torch.set_num_threads(threads)
    snaps_SIFH = res.snapshots.double()
    steps = res.snapshot_steps.numpy()
    S = len(steps)
    loss_SI = np.stack([np.interp(steps, res.history_steps.numpy(), res.loss_history[:, i, 0].numpy())
                        for i in range(I)], 1)
    trace = pd.DataFrame({
        "kind": "trace", "instance": np.tile(np.repeat(np.arange(I), N), S), "step": np.repeat(steps, I * N),
        "feature": np.tile(np.arange(N), S * I),
        "norm": analysis.feature_norms(snaps_SIFH.flatten(0, 1)).flatten().numpy(),
        "dimensionality": analysis.feature_dimensionality(snaps_SIFH.flatten(0, 1)).flatten().numpy(),
        "loss": np.repeat(loss_SI.flatten(), N),
    })
    i = shown(trace)
    return pd.concat([trace, _transformation(trace[trace["instance"] == i], snaps_SIFH[:, i].numpy(), steps)],
                     ignore_index=True)


def _transformation(trace: pd.DataFrame, snaps_SFH: np.ndarray, steps: np.ndarray) -> pd.DataFrame:
    """Rows kind=geometry: every feature of the shown instance at 5 snapshots around its largest jump, projected
    on the top-2 principal plane of the jumping feature and its final neighbours (columns x, y)."""
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
    picks = sorted({max(i0 - PLATEAU, 0), i0, (i0 + i1) // 2, i1, min(i1 + PLATEAU, len(steps) - 1)})
    rows, inst = [], int(trace["instance"].iloc[0])
    for i in picks:
        xy = snaps_SFH[i] @ plane.T
        for g, (x, y) in enumerate(xy):
            rows.append({"kind": "geometry", "instance": inst, "step": int(steps[i]), "feature": g, "x": x, "y": y,
                         "jumping": g == f})
    return pd.DataFrame(rows)


def plot(df: pd.DataFrame) -> plt.Figure:
    style()
    geo = df[df["kind"] == "geometry"]
    inst = shown(df)
    tr = df[(df["kind"] == "trace") & (df["instance"] == inst)]
    panels = sorted(geo["step"].unique()) if len(geo) else []
    fig = plt.figure(figsize=(10, 8.2))
    gs = fig.add_gridspec(3, max(len(panels), 1), height_ratios=[1, 2.4, 1.5], hspace=0.35)
    ax0 = fig.add_subplot(gs[0, :])
    ax1 = fig.add_subplot(gs[1, :], sharex=ax0)
    per_step = tr.groupby("step")["loss"].first()
    ax0.plot(per_step.index, per_step.values, color="k", lw=1)
    ax0.set(yscale="log", ylabel="loss")
    colors = plt.get_cmap("tab10")
    for f, g in tr.groupby("feature"):
        ax1.plot(g["step"], g["dimensionality"], lw=1.2, alpha=0.85, color=colors(f))
    for label, y in LEVELS.items():
        ax1.axhline(y, color="0.5", ls=":", lw=0.8)
        ax1.text(1.005, y, label, transform=ax1.get_yaxis_transform(), va="center", fontsize=8)
    ev_all = jumps(df)
    ev = ev_all[ev_all["instance"] == inst]
    for _, e in ev.iterrows():
        for ax in (ax0, ax1):
            ax.axvspan(e["start"], e["end"], color="tab:red", alpha=0.06, lw=0)
        ax1.plot([e["start"], e["end"]], [LEVELS[e["from"]], LEVELS[e["to"]]], "o", color=colors(e["feature"]),
                 ms=3)
    last = ev["end"].max() if len(ev) else tr["step"].max()
    ax1.set(xlabel="training step", ylabel="feature dimensionality D_i", ylim=(-0.02, 1.06),
            xlim=(0, min(tr["step"].max(), 2 * last)))
    cover = on_level(df)
    n_inst = df.loc[df["kind"] == "trace", "instance"].nunique()
    ax1.set_title(f"all {n_inst} inits: {len(ev_all)} jumps between levels; at a jump the loss falls "
                  f"{ev_all['loss_fall'].median():.1f}× faster than just before and after (median)\n"
                  f"{cover.median():.0%} of a trace on a level until its last jump (median); drawn: the median init",
                  fontsize=9)
    lim = float(np.hypot(geo["x"], geo["y"]).max()) * 1.2 if len(geo) else 1.0
    for j, s in enumerate(panels):
        g = geo[geo["step"] == s].sort_values("feature")
        ax = fig.add_subplot(gs[2, j])
        cols = ["tab:red" if jmp else "0.4" for jmp in g["jumping"]]
        vector_panel(ax, g[["x", "y"]].to_numpy(dtype=float), cols, title=f"step {s}", lim=lim)
    return fig

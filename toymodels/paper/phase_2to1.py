"""Figure: the 2→1 phase diagram (extra feature's importance × density) with the analytic boundaries."""

from __future__ import annotations

import tempfile

import numpy as np
import pandas as pd

TITLE = "Phase diagram: 2 features in 1 dimension"
SECTION = "paper"
SOURCE = "Elhage et al. 2022, Superposition as a phase change"
CAPTION = (
    "Phase of the extra feature (blue: not represented, green: dedicated, red: superposition); black lines: "
    "phase boundaries of the global optimum of the exact expected loss over all four parameters (toymodels."
    "theory), dashed: where its kind changes (ignore, dedicate, antipodal pair with unequal norms and a bias of "
    "either sign, or partial superposition: one weight under 0.5, at high density); ×: cells away from the "
    "lines that disagree; the title gives the agreement.\n"
    "2→1 ReLU-output model, feature 0 importance 1, extra feature importance 0.1→10 (x), both densities "
    "1→0.01 (y), 16×16 grid, best of 10 restarts picked on the exact expected loss, 1000 AdamW steps (lr 0.01, "
    "batch 256) per model."
)

PHASE_COLORS = {"not_represented": "#4c72b0", "dedicated": "#55a868", "superposition": "#c44e52"}


def point_table(df: pd.DataFrame, feature: int = 1) -> pd.DataFrame:
    """Sweep results (one row per point × feature) → one row per point with the given feature's metrics."""
    sub = df[df.feature == feature].sort_values("point").reset_index(drop=True)
    return sub[["point", "ix", "iy", "x", "y", "density", "importance", "norm", "interference",
                "dimensionality", "phase", "loss"]]


def with_theory(pts: pd.DataFrame, phase_fn=None) -> tuple[pd.DataFrame, float, int]:
    """Add the theoretical phase (`phase_fn(density, importance)`, default the 2 → 1 optimum's) and
    boundary-adjacency; return (table, agreement, cells used)."""
    from toymodels.theory import agreement, near_boundary, phase_2to1

    pts = pts.copy()
    pts["theory"] = (phase_fn or phase_2to1)(pts.density.to_numpy(), pts.importance.to_numpy())
    shape = (pts.iy.max() + 1, pts.ix.max() + 1)
    emp = pts.sort_values(["iy", "ix"]).phase.to_numpy().reshape(shape)
    th = pts.sort_values(["iy", "ix"]).theory.to_numpy().reshape(shape)
    pts = pts.sort_values(["iy", "ix"]).reset_index(drop=True)
    pts["near_boundary"] = near_boundary(th).ravel()
    agree, n = agreement(emp, th)
    pts.attrs.update(agreement=agree, cells_used=n)
    return pts, agree, n


def compute(quick: bool = False, seed: int = 0, overrides: tuple[str, ...] = ()) -> pd.DataFrame:
    """Run the phase_2to1 sweep (16×16 × 10 restarts; quick: 10×10 × 4) and return one row per cell."""
    size = ["grid.n=10", "train.restarts=4"] if quick else ["grid.n=16"]
    pts, _, _ = with_theory(run_phase_sweep("phase_2to1", [*size, f"train.seed={seed}", *overrides]))
    return pts


def run_phase_sweep(name: str, overrides: list[str]) -> pd.DataFrame:
    """Run sweep experiment `name` in a scratch folder; one row per grid point for its phase feature."""
    from toymodels.sweep import load, run_sweep

    cfg = load(name, ["progress=false", *overrides])
    with tempfile.TemporaryDirectory() as tmp:
        df = run_sweep(cfg, out=tmp, log=lambda *_: None)
    return point_table(df, cfg.phase_feature)


def plot(df: pd.DataFrame):
    """Phase map (cells) + the optimum's phase boundaries (solid) and kind boundaries (dashed)."""
    from toymodels.theory import phase_2to1

    fig, ax = phase_map(df)
    overlay(ax, phase_2to1, dashed=lambda p, r: phase_2to1(p, r, "kind"))
    ax.set_title(f"2→1: trained phase vs the optimum's (lines)\n{agreement_text(df)}", fontsize=9)
    fig.tight_layout()
    return fig


def overlay(ax, solid, dashed=None) -> None:
    """Boundaries of the labels `solid(p, r)` (and `dashed(p, r)`): the changes along r (300 log-spaced
    points over the axes) at each of `theory.LINE_DENSITIES`, joined row to row; a line that starts or ends
    (a junction) is joined to the nearest change in the row beyond."""
    from toymodels.theory import LINE_DENSITIES

    xlim, ylim = ax.get_xlim(), ax.get_ylim()
    r = np.geomspace(xlim[0] / 3, xlim[1] * 3, 300)  # past the edges, so lines run off the axes
    ps = np.array(LINE_DENSITIES)
    for fn, style in ((dashed, {"ls": "--", "lw": 0.9, "color": "0.15"}), (solid, {"lw": 1.6, "color": "k"})):
        if fn is None:
            continue
        lab = fn(ps[:, None], r[None, :])  # [P, R]
        rows = [[(np.sqrt(r[k] * r[k + 1]), f"{a}|{b}") for k, (a, b) in enumerate(zip(row[:-1], row[1:], strict=True))
                 if a != b] for row in lab]
        for key in sorted({k for row in rows for _, k in row}):  # sorted: the same drawing order every run
            on = [[x for x, k in row if k == key][:1] for row in rows]  # first change of this kind per row
            n = 0
            while n < len(rows):
                if not on[n]:
                    n += 1
                    continue
                m = n
                while m + 1 < len(rows) and on[m + 1]:
                    m += 1
                xs, ys = [on[k][0] for k in range(n, m + 1)], list(ps[n:m + 1])
                for end, at in ((n - 1, 0), (m + 1, len(xs))):  # join a junction to the next row's change
                    ref = xs[0] if at == 0 else xs[-1]  # the end being extended
                    near = [x for x, _ in rows[end] if abs(np.log(x / ref)) < 0.5] if 0 <= end < len(rows) else []
                    if near:
                        xs.insert(at, min(near, key=lambda x: abs(np.log(x / ref))))
                        ys.insert(at, ps[end])
                ax.plot(xs, ys, **style)
                n = m + 1
    ax.set(xlim=xlim, ylim=ylim)


def agreement_text(df: pd.DataFrame) -> str:
    """'agreement A % of N cells away from the lines' (and × marks drawn by `phase_map` callers)."""
    away = df[~df.near_boundary]
    return f"agreement {(away.theory == away.phase).mean():.0%} of {len(away)} cells away from the lines"


def phase_map(df: pd.DataFrame):
    """(fig, ax) with the cells of a phase table (x = importance, y = density, log axes) and a phase legend."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    from toymodels.paper.common import style
    from toymodels.theory import PHASES

    style()  # explicit, so the look is the same alone (--only) and after other figures
    xs, ys = np.sort(df.x.unique()), np.sort(df.y.unique())
    code = {p: i for i, p in enumerate(PHASES)}
    grid = df.pivot(index="y", columns="x", values="phase").loc[ys, xs].map(code.get).to_numpy(float)
    fig, ax = plt.subplots(figsize=(5.6, 4.6))
    ax.pcolormesh(_edges(xs), _edges(ys), grid, cmap=ListedColormap([PHASE_COLORS[p] for p in PHASES]),
                  vmin=-0.5, vmax=len(PHASES) - 0.5, shading="flat")
    ax.set(xscale="log", yscale="log", xlabel="relative importance of the extra feature",
           ylabel="feature density (1 − sparsity)", xlim=_edges(xs)[[0, -1]], ylim=_edges(ys)[[0, -1]])
    ax.grid(False)  # grid lines over cells read as cell borders
    if "theory" in df:  # cells away from the theory's boundaries whose phase disagrees with it
        bad = df[~df.near_boundary & (df.theory != df.phase)]
        ax.plot(bad.x, bad.y, "x", color="k", ms=6, mew=1.4, ls="none")
    handles = [plt.Rectangle((0, 0), 1, 1, color=PHASE_COLORS[p]) for p in PHASES]
    ax.legend(handles, [p.replace("_", " ") for p in PHASES], loc="lower left", fontsize=8, framealpha=0.9)
    return fig, ax


def _edges(v: np.ndarray) -> np.ndarray:
    """Cell edges of log-spaced centres."""
    lv = np.log(v)
    mid = (lv[1:] + lv[:-1]) / 2
    return np.exp(np.concatenate([[2 * lv[0] - mid[0]], mid, [2 * lv[-1] - mid[-1]]]))

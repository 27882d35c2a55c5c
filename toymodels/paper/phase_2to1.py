"""Figure: the 2→1 phase diagram (extra feature's importance × density) with the analytic boundaries."""

from __future__ import annotations

import tempfile

import numpy as np
import pandas as pd

TITLE = "Phase diagram: 2 features in 1 dimension"
CAPTION = (
    "Phase of the extra feature (blue: not represented, green: dedicated dimension, red: antipodal "
    "superposition); black lines: where the closed-form expected losses of the three candidates cross "
    "(toymodels.theory); the title gives the share of cells away from those lines whose phase matches.\n"
    "2→1 ReLU-output model, feature 0 importance 1, extra feature importance 0.1→10 (x), both densities "
    "1→0.01 (y), 16×16 grid, best of 10 restarts, 1000 AdamW steps (lr 0.01, batch 256) per model."
)

PHASE_COLORS = {"not_represented": "#4c72b0", "dedicated": "#55a868", "superposition": "#c44e52"}


def point_table(df: pd.DataFrame, feature: int = 1) -> pd.DataFrame:
    """Sweep results (one row per point × feature) → one row per point with the given feature's metrics."""
    sub = df[df.feature == feature].sort_values("point").reset_index(drop=True)
    return sub[["point", "ix", "iy", "x", "y", "density", "importance", "norm", "interference",
                "dimensionality", "phase", "loss"]]


def with_theory(pts: pd.DataFrame) -> tuple[pd.DataFrame, float, int]:
    """Add the theoretical phase and boundary-adjacency; return (table, agreement, cells used)."""
    from toymodels.theory import agreement, near_boundary, phase_2to1

    pts = pts.copy()
    pts["theory"] = phase_2to1(pts.density.to_numpy(), pts.importance.to_numpy())
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
    """Phase map (cells) + theoretical boundaries (lines on a fine grid)."""
    from toymodels.theory import boundaries_2to1, triple_point_2to1

    fig, ax = phase_map(df)
    ys = np.sort(df.y.unique())
    fy = np.geomspace(ys.min() / 1.2, ys.max() * 1.2, 50)
    fy = np.sort(np.append(fy, triple_point_2to1()))  # the three lines meet there
    xlim, ylim = ax.get_xlim(), ax.get_ylim()
    for r in boundaries_2to1(fy).values():  # exact crossing lines of the candidates' losses
        ax.plot(r, fy, color="k", lw=1.4)
    ax.set(xlim=xlim, ylim=ylim)
    agree = (df.theory == df.phase)[~df.near_boundary].mean()
    ax.set_title(f"2→1: trained phase vs theory (lines); agreement {agree:.0%} "
                 f"of {int((~df.near_boundary).sum())} cells", fontsize=9)
    fig.tight_layout()
    return fig


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
    handles = [plt.Rectangle((0, 0), 1, 1, color=PHASE_COLORS[p]) for p in PHASES]
    ax.legend(handles, [p.replace("_", " ") for p in PHASES], loc="lower left", fontsize=8, framealpha=0.9)
    return fig, ax


def _edges(v: np.ndarray) -> np.ndarray:
    """Cell edges of log-spaced centres."""
    lv = np.log(v)
    mid = (lv[1:] + lv[:-1]) / 2
    return np.exp(np.concatenate([[2 * lv[0] - mid[0]], mid, [2 * lv[-1] - mid[-1]]]))

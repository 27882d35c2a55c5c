"""The atlas's maps and generated summary.

Maps: one figure per (structure, importance profile): the toy models' own phase map (share of represented
features in superposition; numbers: features represented), then one panel per SAE variant coloured by the median
over seeds of the share of represented features recovered (cos ≥ RECOVERED_COS). Each cell is annotated with
that median and its seed spread (max − min); a cell whose seeds disagree by more than DISAGREE is outlined in
red. The dashed line is the compressed-sensing boundary (`ceilings.cs_boundary_l0`): cells above it (denser)
have more active features per sample than ℓ1 recovery can handle.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from toymodels.groundtruth.atlas import RECOVERED_COS, cell_stats

DISAGREE = 0.25
"""A cell whose seeds' recovered shares span more than this (max − min) is marked as disagreeing."""
REGION = 0.9
"""The summary's region: cells whose median recovered share is ≥ this."""


def _axes(df: pd.DataFrame) -> tuple[list[tuple[int, int]], list[float]]:
    shapes = sorted({(int(n), int(m)) for n, m in zip(df.n, df.m, strict=True)}, key=lambda p: (p[0] / p[1], p))
    return shapes, sorted(df.density.unique())


def _grid(stats: pd.DataFrame, shapes, dens, col: str) -> np.ndarray:
    g = np.full((len(dens), len(shapes)), np.nan)
    for r in stats.itertuples():
        g[dens.index(r.density), shapes.index((int(r.n), int(r.m)))] = getattr(r, col)
    return g


def _panel(ax, grid, shapes, dens, title, cmap, annot, spread=None, cs=None, vmax=1.0):
    ax.pcolormesh(np.ma.masked_invalid(grid), cmap=cmap, vmin=0, vmax=vmax, edgecolors="white", linewidth=0.5)
    ax.set_xlim(0, grid.shape[1])
    ax.set_ylim(0, grid.shape[0])
    ax.grid(False)
    for y in range(grid.shape[0]):
        for x in range(grid.shape[1]):
            if np.isnan(grid[y, x]):
                continue
            text = annot[y][x] if isinstance(annot, list) else f"{grid[y, x]:.2f}"
            if spread is not None and np.isfinite(spread[y, x]):
                text += f"\n±{spread[y, x] / 2:.2f}"
                if spread[y, x] > DISAGREE:
                    ax.add_patch(__import__("matplotlib.patches").patches.Rectangle(
                        (x + 0.04, y + 0.04), 0.92, 0.92, fill=False, edgecolor="red", linewidth=1.6))
            ax.text(x + 0.5, y + 0.5, text, ha="center", va="center", fontsize=6.5,
                    color="white" if grid[y, x] < 0.45 * vmax else "black")
    if cs is not None:  # boundary between cells inside (True) and outside the CS-recoverable region
        for y in range(cs.shape[0]):
            for x in range(cs.shape[1]):
                if y + 1 < cs.shape[0] and cs[y, x] != cs[y + 1, x]:
                    ax.plot([x, x + 1], [y + 1, y + 1], "k--", lw=1.4)
                if x + 1 < cs.shape[1] and cs[y, x] != cs[y, x + 1]:
                    ax.plot([x + 1, x + 1], [y, y + 1], "k--", lw=1.4)
    ax.set_xticks(np.arange(len(shapes)) + 0.5, [f"{n}→{m}" for n, m in shapes], rotation=90, fontsize=7)
    ax.set_yticks(np.arange(len(dens)) + 0.5, [f"{d:g}" for d in dens], rotation=0, fontsize=7)
    ax.set_title(title, fontsize=9)


def atlas_figure(df: pd.DataFrame, structure: str = "independent", importance: float | None = None, ncols: int = 6):
    """Toy phase map + one recovered-share map per variant for one structure and importance profile."""
    import matplotlib.pyplot as plt

    from toymodels.paper.common import style

    style()
    importance = df.importance_last.max() if importance is None else importance
    sub = df[(df.structure == structure) & (df.importance_last == importance)]
    shapes, dens = _axes(sub)
    variants = list(dict.fromkeys(sub.variant))
    nrows = int(np.ceil((len(variants) + 1) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.3 * ncols, 2.5 * nrows + 0.6), squeeze=False,
                             constrained_layout=True)
    toy = sub[sub.variant == variants[0]].assign(sup=lambda d: d.n_superposition / d.n_represented.clip(lower=1))
    cs = _grid(cell_stats(toy.assign(ok=(toy.true_l0 < toy.cs_boundary_l0).astype(float)), "ok"), shapes, dens,
               "median") >= 0.5
    sup, rep = (_grid(cell_stats(toy, c), shapes, dens, "median") for c in ("sup", "n_represented"))
    _panel(axes[0, 0], sup, shapes, dens, "toy model: share in superposition\n(numbers: features represented)",
           "viridis", [[f"{v:.0f}" if np.isfinite(v) else "" for v in row] for row in rep], cs=cs)
    axes[0, 0].set_ylabel("feature density")
    for i, v in enumerate(variants, 1):
        st = cell_stats(sub[sub.variant == v], "recovered")
        ax = axes[i // ncols, i % ncols]
        _panel(ax, _grid(st, shapes, dens, "median"), shapes, dens, v, "magma", None,
               spread=_grid(st, shapes, dens, "spread"), cs=cs)
    for j in range(len(variants) + 1, nrows * ncols):
        axes[j // ncols, j % ncols].axis("off")
    fig.suptitle(f"Share of represented features recovered (cos ≥ {RECOVERED_COS}), median ± half-range over seeds; "
                 f"{structure} features, importance 1 → {importance:g}; red box: seeds disagree (range > {DISAGREE}); "
                 "dashed: compressed-sensing boundary", fontsize=9)
    return fig


def summary(df: pd.DataFrame) -> str:
    """Markdown: per variant, the region recovering ≥ REGION of represented features and the gap to the
    ceilings (feature-level F1: ceiling = true dictionary + OMP; dictionary part = ceiling − own dictionary +
    OMP; encoder part = own dictionary + OMP − the SAE)."""
    live = df[df.recovered.notna()]
    lines = ["| variant | cells with median recovered ≥ 90 % | where (n→m @ density) | feature F1 | ceiling F1 | "
             "dictionary gap | encoder gap | MMCS | L0 / true L0, trained → calibrated (median) | worst seed spread |",
             "|" + "---|" * 10]
    for v, d in live.groupby("variant", sort=True):
        st = cell_stats(d, "recovered")
        good = st[st["median"] >= REGION]
        where = ", ".join(f"{int(r.n)}→{int(r.m)}@{r.density:g}"
                          + ("" if r.structure == "independent" else f" {r.structure[:4]}.")
                          + ("" if r.importance_last == 1 else f" imp{r.importance_last:g}")
                          for r in good.itertuples())
        f1, ceil, own = d.feature_f1.mean(), d.ceiling_f1.mean(), d.dict_f1.mean()
        l0 = f"{(d.l0 / d.true_l0).median():.2f}"
        if "l0_trained" in d and not d.l0_trained.equals(d.l0):
            l0 = f"{(d.l0_trained / d.true_l0).median():.2f} → {l0}"
        lines.append(f"| {v} | {len(good)}/{len(st)} | {where or '—'} | {f1:.3f} | {ceil:.3f} | {ceil - own:+.3f} | "
                     f"{own - f1:+.3f} | {d.mmcs.mean():.3f} | {l0} | "
                     f"{st.spread.max():.2f} |")
    return "\n".join(lines) + "\n"


def save_report(df: pd.DataFrame, out, name: str = "atlas") -> None:
    """summary.md and one map (PNG) per structure × importance profile under `out`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from toymodels.io import write_text

    out = Path(out)
    write_text(out / "summary.md", f"# {name}: recoverability summary\n\n" + summary(df))
    for s in sorted(df.structure.unique()):
        for v in sorted(df.importance_last.unique(), reverse=True):
            if not ((df.structure == s) & (df.importance_last == v)).any():
                continue
            fig = atlas_figure(df, s, v)
            fig.savefig(out / f"map_{s}_imp{v:g}.png", dpi=110, metadata={"Software": None})
            plt.close(fig)

"""Published results beside ours: `sweeps/<experiment>_published.csv` (a `#`-commented source header, then one
row per published variant and target L0) joined with a finished benchmark's leaderboard."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

COLUMNS = ("f1", "mcc", "uniqueness", "explained_variance")


def published_table(experiment: str) -> pd.DataFrame | None:
    """The published table of `experiment` (None if it has none)."""
    from toymodels.errors import DataFileError
    from toymodels.experiments import sweeps_dir

    path = Path(sweeps_dir()) / f"{experiment}_published.csv"
    if not path.is_file():
        return None
    try:
        return pd.read_csv(path, comment="#")
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        raise DataFileError(f"{path}: unreadable ({str(e).splitlines()[0][:120]})") from None


def compare(board: pd.DataFrame, published: pd.DataFrame) -> pd.DataFrame:
    """Per published (variant, target L0): ours (seed means from the leaderboard), published, ours − published."""
    ours = board.rename(columns={c: f"{c}_ours" for c in COLUMNS})
    keep = ["variant", "target_l0", "l0", "n_seeds", *(f"{c}_ours" for c in COLUMNS if c in board)]
    t = published.merge(ours[[k for k in keep if k in ours]], on=["variant", "target_l0"], how="left")
    for c in COLUMNS:
        if f"{c}_ours" in t:
            t[f"{c}_diff"] = t[f"{c}_ours"] - t[c]
    return t


def markdown(t: pd.DataFrame) -> str:
    cols = ["variant", "sae", "target_l0"] + [x for c in ("f1", "mcc") for x in (f"{c}_ours", c, f"{c}_diff")
                                               if x in t]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, r in t.iterrows():
        lines.append("| " + " | ".join(f"{r[c]:.3f}" if isinstance(r[c], float) else str(r[c]) for c in cols) + " |")
    return "\n".join(lines) + "\n"


def print_published(experiment: str, out) -> None:
    """Print (and write to out/published_comparison.md) ours beside the published numbers, if any."""
    from toymodels.io import write_text

    pub = published_table(experiment)
    board_path = Path(out) / "leaderboard.csv"
    if pub is None or not board_path.is_file():
        return
    text = ("Published (SAELens docs / SynthSAEBench paper; see the csv header) beside ours, seed means:\n\n"
            + markdown(compare(pd.read_csv(board_path), pub)))
    write_text(Path(out) / "published_comparison.md", text)
    print(text)

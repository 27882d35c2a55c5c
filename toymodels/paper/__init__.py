"""The paper's figures: one module per figure, registered in `FIGURES` (gallery order).

Each module defines TITLE, CAPTION (two lines: what to look for; the parameters used), SECTION (a key of
`SECTIONS`), SOURCE (the paper and section it reproduces), `compute(quick=False, seed=0) -> DataFrame` (a tidy
table, saved as data/<name>.csv) and `plot(df) -> Figure`. `build_gallery` runs them and writes
<name>.png/.svg, the CSVs and index.html (grouped by section).

Each figure is committed to the gallery as one transaction (`toymodels.outdir`): its PNG, SVG and CSV with
index.html and provenance.json, under the gallery's manifest.json. A kill leaves the gallery as it was before
that figure; `verify_gallery` refuses a gallery whose files are not what its manifest records.
"""

from __future__ import annotations

import html
import importlib
import io
import sys
import time
from pathlib import Path

import numpy as np

from toymodels.errors import ConfigError
from toymodels.io import atomic_path, write_text
from toymodels.outdir import Transaction, check_finished, lock, transaction, verify
from toymodels.progress import progress

FIGURES = [
    "intro",
    "basic",
    "sparsity",
    "dimensionality",
    "adversarial",
    "nonuniform",
    "correlated",
    "privileged",
    "computation",
    "dynamics",
    "phase_2to1",
    "phase_3to2",
    "sae_recovery",
    "double_descent",
    "capacity",
    "engineered_mono",
    "scaling",
]

SECTIONS = {"paper": "The 2022 paper", "followups": "The follow-ups", "sae": "SAEs on ground truth"}
"""Gallery sections, in order: a figure module's SECTION is one of these keys."""


def section_of(mod) -> tuple[str, str]:
    """(SECTION, SOURCE) of a figure module; a module without them falls back to ("paper", "")."""
    section = getattr(mod, "SECTION", "paper")
    if section not in SECTIONS:
        raise ConfigError(f"SECTION: {mod.__name__} has {section!r}; choose from {', '.join(SECTIONS)}")
    return section, getattr(mod, "SOURCE", "")


def load(name: str):
    """The figure module `toymodels.paper.<name>`."""
    if name not in FIGURES:
        raise ConfigError(f"only: unknown figure {name!r}; choose from {', '.join(FIGURES)}")
    return importlib.import_module(f"toymodels.paper.{name}")


def _target(out, rel: str):
    """A temp path for `rel`: staged in a Transaction, or written by atomic rename under a folder."""
    return out.file(rel) if isinstance(out, Transaction) else atomic_path(Path(out) / rel)


def save_figure(fig, out, name: str) -> None:
    """Write <name>.png and <name>.svg byte-for-byte reproducibly (no dates or software versions embedded) into
    a folder or a Transaction."""
    import matplotlib

    matplotlib.rcParams["svg.hashsalt"] = "toymodels"
    for ext, meta in (("png", {"Software": None}), ("svg", {"Date": None, "Creator": None})):
        with _target(out, f"{name}.{ext}") as tmp:
            fig.savefig(tmp, format=ext, dpi=120, metadata=meta, bbox_inches="tight")


def write_table(df, path, tx: Transaction | None = None) -> None:
    """`df` as CSV at `path` (relative to the transaction's folder when `tx` is given)."""
    buf = io.StringIO()
    df.to_csv(buf, index=False, float_format="%.6g")
    if tx is None:
        write_text(path, buf.getvalue())
    else:
        tx.write_text(str(path), buf.getvalue())


PROVENANCE = "data/provenance.json"


def record_provenance(tx: Transaction, name: str, **settings) -> None:
    """data/provenance.json: per figure in the gallery, the settings and package versions needed to rerun it
    exactly (records of figures the gallery no longer holds are dropped)."""
    from toymodels.io import environment, read_json

    path = tx.folder / PROVENANCE
    record = read_json(path) if path.exists() else {}
    present = present_figures(tx)
    record = {k: v for k, v in record.items() if k in present} if isinstance(record, dict) else {}
    record[name] = {**settings, "command": f"toymodels figures --only {name}" + " --quick" * settings["quick"]
                    + f" --seed {settings['seed']}", "environment": environment()}
    tx.write_json(PROVENANCE, record)


def figure_files(name: str) -> list[str]:
    return [f"{name}.png", f"{name}.svg", f"data/{name}.csv"]


def present_figures(tx: Transaction) -> list[str]:
    """Figures the gallery will hold once `tx` commits (all three files listed in its manifest)."""
    planned = tx.planned()
    return [n for n in FIGURES if all(f in planned for f in figure_files(n))]


def write_index(out_dir: Path) -> None:
    """index.html: every registered figure present in `out_dir`, with its title, caption and data link."""
    write_text(Path(out_dir) / "index.html", index_page([n for n in FIGURES if (Path(out_dir) / f"{n}.png").exists()]))


def index_page(names: list[str]) -> str:
    """The gallery page for `names` (in gallery order), grouped by section (the 2022 paper, the follow-ups, SAEs
    on ground truth), each figure with its title, source paper, caption and data link."""
    groups: dict[str, list[str]] = {key: [] for key in SECTIONS}
    for name in FIGURES:
        if name not in names:
            continue
        mod = load(name)
        section, source = section_of(mod)
        caption = "<br>".join(html.escape(line) for line in mod.CAPTION.strip().splitlines())
        reproduces = f'<p class="source">Reproduces: {html.escape(source)}</p>\n' if source else ""
        groups[section].append(
            f'<section id="{name}">\n<h3>{html.escape(mod.TITLE)}</h3>\n{reproduces}'
            f'<a href="{name}.svg"><img src="{name}.png" alt="{html.escape(mod.TITLE)}"></a>\n'
            f'<p>{caption}</p>\n<p class="links"><a href="{name}.svg">SVG</a> · '
            f'<a href="data/{name}.csv">data (CSV)</a></p>\n</section>'
        )
    parts = [f'<h2 id="section-{key}">{html.escape(SECTIONS[key])}</h2>\n' + "\n".join(items)
             for key, items in groups.items() if items]
    toc = " · ".join(f'<a href="#section-{key}">{html.escape(SECTIONS[key])}</a>'
                     for key, items in groups.items() if items)
    page = (
        '<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        "<title>Toy Models of Superposition: reproduced figures</title>\n"
        "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
        "img{max-width:100%;border:1px solid #ddd}section{margin-bottom:3em}.links{font-size:90%}"
        ".source{font-style:italic;color:#555}h2{border-bottom:2px solid #ddd;margin-top:2em}</style>\n"
        "</head>\n<body>\n<h1>Toy Models of Superposition: reproduced figures</h1>\n"
        "<p>Generated by <code>toymodels figures</code>; every figure's numbers are in "
        f"<code>data/</code>.</p>\n<p>{toc}</p>\n"
        + "\n".join(parts) + "\n</body>\n</html>\n"
    )
    return page


def verify_gallery(out_dir) -> list[str]:
    """The figures of a gallery written by `build_gallery`; refused (DataFileError, one line) unless its
    manifest is complete, every file matches it, and each figure on index.html has its PNG, SVG and CSV."""
    import re

    from toymodels.errors import DataFileError

    out_dir = Path(out_dir)
    seen = check_finished(out_dir)
    if seen is None:
        raise DataFileError(f"{out_dir}: no manifest.json (not a gallery written by this toymodels)")
    names = re.findall(r'<section id="([^"]+)">', (out_dir / "index.html").read_text())
    m = verify(out_dir, ("index.html",), seen)
    for name in names:
        for f in figure_files(name):
            if f not in m["files"]:
                raise DataFileError(f"{out_dir / f}: figure {name} is on index.html but not in the manifest")
    return names


COST = {"sae_recovery": 165, "dimensionality": 139, "scaling": 100, "privileged": 96, "sparsity": 74,
        "computation": 73, "double_descent": 60, "correlated": 52, "adversarial": 39, "engineered_mono": 35,
        "basic": 34}
"""Full-mode seconds of the slow figures (one thread, 2 cores): with `jobs` > 1 the longest start first."""


def _compute(name: str, quick: bool, seed: int, threads: int):
    """(name, table, seconds) of one figure in a worker process, on `threads` torch threads and with any joblib
    work inside it sequential (the gallery's workers already fill the cores)."""
    import joblib
    import torch

    torch.set_num_threads(threads)
    with joblib.parallel_config(backend="sequential"):
        return _timed_compute(name, quick, seed)


def _timed_compute(name: str, quick: bool, seed: int):
    """(name, table, seconds) of one figure's `compute`."""
    t0 = time.perf_counter()
    df = load(name).compute(quick=quick, seed=seed)
    return name, df, time.perf_counter() - t0


def _save(name: str, df, out_dir: Path, quick: bool, seed: int) -> None:
    """Plot `df` and commit the figure's files, index.html and provenance as one transaction."""
    import matplotlib.pyplot as plt

    state = np.random.get_state()
    np.random.seed(0)  # seaborn's stripplot jitter draws from numpy's global RNG: same PNG every run
    fig = load(name).plot(df)
    np.random.set_state(state)
    with transaction(out_dir, meta={"kind": "figures"}, keep=True) as tx:  # this figure, all at once
        if tx.old is None:  # a gallery from before manifests: keep its files as they are
            for other in FIGURES:
                for f in figure_files(other):
                    tx.adopt(f)
        write_table(df, f"data/{name}.csv", tx)
        save_figure(fig, tx, name)
        record_provenance(tx, name, quick=quick, seed=seed)
        tx.write_text("index.html", index_page(present_figures(tx)))
    plt.close(fig)


def build_gallery(names: list[str] | None = None, out_dir: str | Path = "figures", quick: bool = False,
                  seed: int = 0, jobs: int = 1) -> dict[str, float]:
    """Compute, plot and save each figure in `names` (default: all); returns seconds per figure. With `jobs` > 1
    the figures compute in that many worker processes (each on this process's torch thread count, so the files
    are the same as with one job), longest first, and are saved here as they finish."""
    import matplotlib

    matplotlib.use("Agg")

    names = list(names or FIGURES)
    for n in names:  # unknown names fail before any work
        load(n)
    out_dir = Path(out_dir)
    seconds = {}
    with lock(out_dir):  # one writer per gallery
        bar = progress(total=len(names), desc="figures", enabled=None)
        for name, df, compute_s in _computed(names, quick, seed, jobs):
            bar.set_postfix_str(name)
            t1 = time.perf_counter()
            _save(name, df, out_dir, quick, seed)
            seconds[name] = compute_s + time.perf_counter() - t1
            bar.update(1)
            print(f"{name}: {seconds[name]:.1f}s (compute {compute_s:.1f}s, plot {seconds[name] - compute_s:.1f}s)",
                  file=sys.stderr, flush=True)
        bar.close()
    print(f"figures: {len(names)} in {sum(seconds.values()):.1f}s of compute and plotting → {out_dir}/index.html",
          file=sys.stderr)
    return seconds


def _computed(names: list[str], quick: bool, seed: int, jobs: int):
    """(name, table, compute seconds) per figure: in gallery order here, or as worker processes finish them."""
    if jobs <= 1 or len(names) == 1:
        yield from (_timed_compute(name, quick, seed) for name in names)
        return
    import joblib
    import torch

    order = sorted(names, key=lambda n: -COST.get(n, 0))
    threads = torch.get_num_threads()
    yield from joblib.Parallel(n_jobs=min(jobs, len(names)), backend="loky", return_as="generator_unordered")(
        joblib.delayed(_compute)(n, quick, seed, threads) for n in order)

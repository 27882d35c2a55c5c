"""The ground-truth SAE leaderboard: variants × widths × sparsity settings × seeds, trained pack by pack.

    toymodels benchmark run                       # sweeps/benchmark.yaml → results/benchmark/
    toymodels benchmark run --experiment benchmark_tiny n_train=20000

Outputs in `out/`: `results.csv` (tidy, one row per SAE), `leaderboard.md` + `leaderboard.csv` (per variant
and width, metrics interpolated at each width's matched L0, see `match_l0`) and the Pareto figure (L0 vs
MCC, F1, explained variance): `figures/pareto.png` + `.svg` and its table `figures/data/pareto.csv`, committed
together under `manifest.json`; `packs/` keeps each finished pack's scores so a rerun resumes.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from toymodels.config import SEED_RANGE, _is_int, _is_num, _is_seed, check_types
from toymodels.errors import check
from toymodels.groundtruth.synthetic import SyntheticConfig
from toymodels.io import check_out_path

SEED_MAX_DATA = 2**63 - 2
"""data_seed + 1 seeds the eval draw, so data_seed stays one below the largest seed."""
SPARSITY_FIELD = {"relu": "l1_coeff", "relu_april": "l1_coeff", "gated": "l1_coeff", "jumprelu": "l0_coeff",
                  "topk": "k", "batchtopk": "k", "matryoshka": "k"}
"""The SAEConfig field each variant's sparsity settings set."""
LEADERBOARD_METRICS = ("f1", "f1_live", "mcc", "mmcs", "uniqueness", "explained_variance", "absorption",
                       "absorption_fraction", "absorption_gap", "shrinkage", "dead_frac")
"""Leaderboard columns: `mmcs` is Sharkey et al.'s signed MMCS, `absorption` Chanin et al.'s full-absorption
rate as SAEBench computes it (results.csv also has `mmcs_abs` and `absorption_matched`)."""
PARETO = (("mcc", "MCC (Hungarian, decoder |cos|)"), ("f1", "mean latent F1"),
          ("explained_variance", "explained variance"))


@dataclass
class BenchmarkConfig:
    """A leaderboard run (kind: benchmark): a dataset and the grid of SAEs to train and score on it."""

    kind: str = "benchmark"
    """Experiment kind; benchmark for this schema."""
    name: str = "benchmark"
    """Experiment name."""
    description: str = ""
    """One-line summary shown by `toymodels experiments`."""
    dataset: SyntheticConfig = field(default_factory=SyntheticConfig)
    """The synthetic dictionary (ignored when dataset_file is set)."""
    dataset_file: str | None = None
    """A dataset .safetensors file (toymodels dataset make) to use instead of `dataset`."""
    n_train: int = 300_000
    """Training samples drawn from the dictionary (≥ 1)."""
    n_eval: int = 20_000
    """Held-out samples the SAEs are scored on (≥ 1)."""
    variants: list = field(default_factory=lambda: ["relu", "topk", "batchtopk", "jumprelu", "matryoshka"])
    """SAE variants (toymodels.sae.VARIANTS)."""
    widths: list = field(default_factory=lambda: [1024])
    """Latents per SAE (d_sae), each ≥ 1."""
    k: list = field(default_factory=lambda: [6, 10, 16])
    """Sparsity settings of topk / batchtopk / matryoshka: active latents per sample."""
    l1_coeff: list = field(default_factory=lambda: [1.0, 3.0, 10.0])
    """Sparsity settings of relu / relu_april / gated: L1 coefficients."""
    l0_coeff: list = field(default_factory=lambda: [0.3, 1.0, 3.0])
    """Sparsity settings of jumprelu: L0 coefficients."""
    seeds: list = field(default_factory=lambda: [0])
    """SAE init seeds."""
    sae_options: dict = field(default_factory=dict)
    """Extra SAEConfig fields per variant, e.g. {jumprelu: {threshold_init: 1.0}} (not the sparsity field)."""
    steps: int = 3000
    """SAE optimiser steps (≥ 1)."""
    batch_size: int = 1024
    """SAE batch size (≥ 1)."""
    lr: float = 1e-3
    """SAE learning rate (> 0)."""
    resample_every: int = 0
    """Resample dead latents every this many steps (≥ 0; 0 = never); see SAETrainConfig."""
    resample_until: float = 0.5
    """Fraction of training (in [0, 1]) after which no more resampling happens."""
    resample_min_rate: float = 0.0
    """Also resample latents firing at under this fraction of their SAE's mean rate (in [0, 1); 0 = dead only)."""
    match_l0: str = "width"
    """The L0 each width's SAEs are compared at: width (the true L0 of the `width` most frequent features on
    the eval set, as SynthSAEBench compares its width-4096 SAEs at the top-4096 features' L0; the data's true L0
    once width ≥ n_features) or all (the data's true L0)."""
    data_seed: int = 0
    """Seeds the samples (train and eval draws use data_seed and data_seed + 1)."""
    out: str = "results/benchmark"
    """Output folder (results.csv, leaderboard.md/.csv, figures/)."""
    progress: bool = True
    """Progress bar while training."""

    def __post_init__(self):
        from toymodels.sae import VARIANTS

        check_types(self)
        check(self.kind == "benchmark", "kind", "benchmark for a BenchmarkConfig", self.kind)
        check_out_path(self.out)
        for name in ("n_train", "n_eval", "steps", "batch_size"):
            v = getattr(self, name)
            check(_is_int(v) and v >= 1, name, "an integer ≥ 1", v)
        check(_is_int(self.resample_every) and self.resample_every >= 0, "resample_every", "an integer ≥ 0",
              self.resample_every)
        check(_is_seed(self.data_seed) and self.data_seed < SEED_MAX_DATA, "data_seed", SEED_RANGE, self.data_seed)
        check(self.match_l0 in ("width", "all"), "match_l0", "width or all", self.match_l0)
        check(len(self.variants) >= 1 and all(v in VARIANTS for v in self.variants), "variants",
              f"a non-empty list from {', '.join(VARIANTS)}", list(self.variants))
        check(len(self.widths) >= 1 and all(_is_int(w) and w >= 1 for w in self.widths), "widths",
              "a non-empty list of integers ≥ 1", list(self.widths))
        check(len(self.seeds) >= 1 and all(_is_seed(s) for s in self.seeds), "seeds",
              f"a non-empty list of seeds, each {SEED_RANGE}", list(self.seeds))
        from toymodels.sae import SAEConfig

        fixed = {"variant", "d_in", "d_sae", "seed", "name"}
        sae_fields = {f.name for f in dataclasses.fields(SAEConfig)} - fixed
        for v, opts in self.sae_options.items():
            check(v in VARIANTS, "sae_options", f"keyed by variants from {', '.join(VARIANTS)}", v)
            check(hasattr(opts, "keys") and set(opts) <= sae_fields - {SPARSITY_FIELD[v]}, f"sae_options.{v}",
                  f"a mapping of SAEConfig fields other than {SPARSITY_FIELD[v]}", opts)
        for name in ("k", "l1_coeff", "l0_coeff"):
            if any(SPARSITY_FIELD[v] == name for v in self.variants):
                vals = list(getattr(self, name))
                ok = len(vals) >= 1 and all(_is_num(v) and v > 0 for v in vals)
                if name == "k":
                    ok = ok and all(_is_int(v) and v <= min(self.widths) for v in vals)
                check(ok, name, "a non-empty list of values > 0" + (" (integers ≤ the smallest width)"
                                                                    if name == "k" else ""), vals)
        self.train_config()  # the training settings and every SAE of the grid are valid before any data is drawn
        sae_grid(self, self.dataset.d_model)

    def train_config(self):
        """The SAETrainConfig every SAE of the grid trains with."""
        from toymodels.sae import SAETrainConfig

        return SAETrainConfig(steps=self.steps, batch_size=self.batch_size, lr=self.lr, seed=self.data_seed,
                              resample_every=self.resample_every, resample_until=self.resample_until,
                              resample_min_rate=self.resample_min_rate, progress=self.progress)


def sae_grid(cfg: BenchmarkConfig, d_in: int) -> list:
    """Every SAEConfig of the run: variants × widths × sparsity settings × seeds."""
    from toymodels.sae import SAEConfig

    out = []
    for v in cfg.variants:
        key = SPARSITY_FIELD[v]
        for w in cfg.widths:
            for s in getattr(cfg, key):
                for seed in cfg.seeds:
                    value = int(s) if key == "k" else float(s)
                    out.append(SAEConfig(variant=v, d_in=d_in, d_sae=int(w), seed=int(seed), **{key: value},
                                         **cfg.sae_options.get(v, {}), name=f"{v}-{w}-{key}{s:g}-s{seed}"))
    return out


def load_or_sample(cfg: BenchmarkConfig):
    """(train dataset, eval dataset): from dataset_file (split in order) or sampled from `cfg.dataset`."""
    from toymodels.errors import DataFileError
    from toymodels.groundtruth.files import GroundTruthDataset, load_dataset
    from toymodels.groundtruth.synthetic import Dictionary

    if cfg.dataset_file:
        ds = load_dataset(cfg.dataset_file)
        n = ds.n_samples
        if n < 2:
            raise DataFileError(f"{cfg.dataset_file}: needs ≥ 2 samples to split into train and eval")
        n_eval = min(cfg.n_eval, n // 2)
        ev = GroundTruthDataset.from_dense(ds.hidden[n - n_eval:], ds.feature_vectors,
                                           ds.true_acts()[n - n_eval:] if ds.has_acts else None,
                                           parent=ds.parent, density=ds.density, meta=ds.meta)
        tr = GroundTruthDataset(hidden=ds.hidden[:n - n_eval], meta=ds.meta)
        return tr, ev
    d = Dictionary(cfg.dataset)
    return d.sample(cfg.n_train, seed=cfg.data_seed), d.sample(cfg.n_eval, seed=cfg.data_seed + 1)


def run_key(cfg: BenchmarkConfig) -> str:
    """Hash of everything that changes the results (not out, progress, description; a dataset file by its
    bytes): finished packs are reused only by a run with the same key."""
    import hashlib
    import json

    from toymodels.config import to_dict
    from toymodels.outdir import sha256

    body = {k: v for k, v in (to_dict(cfg) | {"dataset": to_dict(cfg.dataset)}).items()
            if k not in ("out", "progress", "description")}
    if cfg.dataset_file:
        body["dataset_file"] = sha256(cfg.dataset_file)
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()[:16]


def run_benchmark(cfg: BenchmarkConfig) -> pd.DataFrame:
    """Train every SAE of the grid pack by pack, score each on held-out ground truth, write every output.

    A finished pack's score rows are kept in `out/packs/`, so a killed run resumes where it stopped; the
    outputs are committed together (`toymodels.outdir`), so a reader never sees a mix of two runs."""
    from toymodels.outdir import lock

    with lock(cfg.out):  # one writer per output folder for the whole run
        return _run_locked(cfg)


def _run_locked(cfg: BenchmarkConfig) -> pd.DataFrame:
    import json

    import torch

    from toymodels.config import to_dict
    from toymodels.groundtruth.metrics import score_sae
    from toymodels.io import environment, read_json, write_text
    from toymodels.outdir import transaction
    from toymodels.sae.train import pack_indices, train_in_packs

    t0 = time.perf_counter()
    out, key = Path(cfg.out), run_key(cfg)
    train_ds, eval_ds = load_or_sample(cfg)
    configs = sae_grid(cfg, train_ds.hidden.shape[1])
    tc = cfg.train_config()

    def pack_file(idx) -> Path:
        return out / "packs" / f"{key}-{configs[idx[0]].name}.json"

    def resume(idx):
        path = pack_file(idx)
        rows = read_json(path) if path.is_file() else None  # JSON: floats round-trip exactly
        return rows if isinstance(rows, list) and len(rows) == len(idx) else None

    def finish(idx, saes):
        rows = []
        for i, sae in zip(idx, saes, strict=True):
            c, key_field = configs[i], SPARSITY_FIELD[configs[i].variant]
            with torch.no_grad():
                scores = score_sae(sae, eval_ds, n_eval=cfg.n_eval)
            rows.append({"variant": c.variant, "width": c.d_sae, "sparsity_param": key_field,
                         "sparsity_value": getattr(c, key_field), "seed": c.seed, **scores})
        write_text(pack_file(idx), json.dumps(rows))  # key order kept; atomic rename: the pack's done marker
        return rows

    t1 = time.perf_counter()
    rows, resumed = train_in_packs(configs, train_ds.hidden, tc, resume, finish)
    t2 = time.perf_counter()
    if resumed:
        print(f"benchmark: {resumed} finished pack(s) resumed from {out / 'packs'}", file=sys.stderr)
    df = pd.DataFrame(rows)
    df["true_l0"] = eval_ds.mean_l0()
    rates_F = firing_rates(eval_ds, cfg.n_eval)
    df["target_l0"] = [matched_l0(rates_F, w if cfg.match_l0 == "width" else None) for w in df["width"]]
    board = leaderboard(df)
    with transaction(out, meta={"kind": "benchmark", "key": key}) as tx:
        tx.write_text("results.csv", df.to_csv(index=False))
        tx.write_text("leaderboard.csv", board.to_csv(index=False))
        tx.write_text("leaderboard.md", leaderboard_markdown(board, cfg))
        save_pareto(df, tx, prefix="figures/")
        tx.write_json("run.json", {"config": to_dict(cfg) | {"dataset": to_dict(cfg.dataset)},
                                   "seconds": {"data": t1 - t0, "train_and_score": t2 - t1,
                                               "write": time.perf_counter() - t2},
                                   "n_saes": len(configs), "packs_resumed": resumed, "key": key,
                                   "environment": environment()})
    keep = {pack_file(idx).name for idx in pack_indices(configs)}
    for stale in (out / "packs").glob("*.json"):  # packs of other configurations in this folder
        if stale.name not in keep:
            stale.unlink()
    return df


def load_benchmark(out) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(results, leaderboard) of a finished `benchmark run`; a folder whose outputs are not all from one
    complete run is refused (DataFileError, one line)."""
    from toymodels.errors import DataFileError
    from toymodels.outdir import check_finished, verify

    out = Path(out)
    seen = check_finished(out)
    try:
        tables = pd.read_csv(out / "results.csv"), pd.read_csv(out / "leaderboard.csv")
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        raise DataFileError(f"{out}: unreadable benchmark table ({str(e).splitlines()[0][:120]})") from None
    verify(out, ("results.csv", "leaderboard.csv"), seen)
    return tables


def firing_rates(ds, n: int) -> np.ndarray:
    """[F] fraction of the first n samples in which each true feature is active (empty without true acts)."""
    if not ds.has_acts:
        return np.zeros(0)
    return (ds.true_acts(n) != 0).float().mean(0).numpy()


def matched_l0(rates_F: np.ndarray, width: int | None = None) -> float:
    """The L0 to compare SAEs of this width at: the summed firing rates of the `width` most frequent features
    (the expected number of them active per sample); all features when width is None. NaN without truth."""
    if len(rates_F) == 0:
        return float("nan")
    return float(np.sort(rates_F)[::-1][:width].sum())


def _interp(l0: np.ndarray, y: np.ndarray, at: float) -> tuple[float, bool]:
    """y at L0 = `at` by linear interpolation in log L0; outside the range: the nearest point (flag False)."""
    o = np.argsort(l0)
    x, y = np.log(np.maximum(l0[o], 1e-9)), y[o]
    inside = bool(x[0] <= np.log(at) <= x[-1])
    return float(np.interp(np.log(at), x, y)), inside


def leaderboard(df: pd.DataFrame) -> pd.DataFrame:
    """Per (variant, width): seed-averaged metrics interpolated at that width's `target_l0`, ranked by F1;
    `f1_sd` is the standard deviation over seeds of each seed's own interpolated F1 (NaN with one seed)."""
    metrics = [m for m in LEADERBOARD_METRICS if m in df]
    rows = []
    for (v, w), g in df.groupby(["variant", "width"], sort=False):
        ref = float(g["target_l0"].iloc[0])
        m = g.groupby("sparsity_value")[["l0", *metrics]].mean()
        row = {"variant": v, "width": w, "target_l0": ref, "l0_min": m["l0"].min(), "l0_max": m["l0"].max()}
        for k in metrics:
            row[k], inside = _interp(m["l0"].to_numpy(), m[k].to_numpy(), ref)
        f1_seeds = [_interp(gs["l0"].to_numpy(), gs["f1"].to_numpy(), ref)[0] for _, gs in g.groupby("seed")]
        row["f1_sd"] = float(np.std(f1_seeds, ddof=1)) if len(f1_seeds) > 1 else float("nan")
        row["n_seeds"] = len(f1_seeds)
        row["matched"] = inside
        rows.append(row)
    board = pd.DataFrame(rows).sort_values("f1", ascending=False, kind="stable").reset_index(drop=True)
    board.insert(0, "rank", np.arange(1, len(board) + 1))
    return board


def leaderboard_markdown(board: pd.DataFrame, cfg: BenchmarkConfig | None = None) -> str:
    cols = [c for c in board.columns if c not in ("matched",)]
    at = ("the data's true L0" if cfg is not None and cfg.match_l0 == "all" else
          "each width's matched L0 (the true L0 of its `width` most frequent features)")
    lines = [f"# SAE leaderboard ({cfg.name if cfg else ''})", "",
             f"Metrics are seed means, interpolated (linearly in log L0) at {at}, `target_l0`; "
             "`*` marks variants whose L0 range does not bracket it (the nearest run is shown). "
             "`mmcs`: Sharkey et al.'s mean max signed cosine; `absorption`: Chanin et al.'s full-absorption "
             "rate and `absorption_fraction` Till's fraction, both as SAEBench computes them, with the true "
             "parent vectors as probes; `absorption_gap`: P(parent latent | parent, no child) − "
             "P(parent latent | parent, child), mean over edges.", "",
             "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, r in board.iterrows():
        cells = [("–" if np.isnan(r[c]) else f"{r[c]:.3f}") if isinstance(r[c], float) else str(r[c])
                 for c in cols]
        if not r["matched"]:
            cells[1] += "*"
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def pareto_table(df: pd.DataFrame) -> pd.DataFrame:
    """The Pareto figure's points: per (variant, width, sparsity setting) the seed means of L0 and each
    plotted metric, with the width's target L0."""
    cols = ["l0", *(m for m, _ in PARETO)]
    keys = ["variant", "width", "sparsity_param", "sparsity_value"]
    t = df.groupby(keys, sort=False).agg(**{c: (c, "mean") for c in cols}, target_l0=("target_l0", "first"),
                                         n_seeds=("seed", "nunique"))
    return t.reset_index()


def save_pareto(df: pd.DataFrame, out, prefix: str = "") -> None:
    """<prefix>pareto.png/.svg and the points they show in <prefix>data/pareto.csv (as the gallery), into a folder
    or a Transaction."""
    from toymodels.outdir import Transaction
    from toymodels.paper import save_figure, write_table

    table = pareto_table(df)
    if isinstance(out, Transaction):
        write_table(table, f"{prefix}data/pareto.csv", out)
    else:
        write_table(table, Path(out) / f"{prefix}data/pareto.csv")
    fig = pareto_figure(table)
    save_figure(fig, out, f"{prefix}pareto")
    import matplotlib.pyplot as plt

    plt.close(fig)


def pareto_figure(df: pd.DataFrame):
    """L0 vs MCC, F1 and explained variance from a `pareto_table`; one line per (variant, width); dashed lines
    at the target L0s."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, axes = plt.subplots(1, 3, figsize=(13, 4), constrained_layout=True)
    variants = list(dict.fromkeys(df["variant"]))
    colors = dict(zip(variants, plt.get_cmap("tab10").colors, strict=False))
    for ax, (metric, label) in zip(axes, PARETO, strict=True):
        for (v, w), g in df.groupby(["variant", "width"], sort=False):
            m = g.sort_values("l0")
            ax.plot(m["l0"], m[metric], "o-", color=colors[v], label=f"{v} ({w})" if df["width"].nunique() > 1
                    else v, alpha=0.9)
        for t in sorted(set(df["target_l0"].dropna())):
            ax.axvline(t, color="k", ls="--", lw=1)
        ax.set_xscale("log")
        lo, hi = df["l0"].min(), df["l0"].max()
        ticks = [t for t in (1, 2, 3, 4, 6, 8, 10, 15, 20, 30, 50, 100, 200, 500, 1000) if lo / 1.2 <= t <= hi * 1.2]
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel("L0 (active latents / sample)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("SAEs on ground truth: sparsity vs recovery (dashed: the L0 they are compared at)")
    return fig

"""The ground-truth SAE leaderboard: variants × widths × target L0s (or sparsity settings) × seeds, trained pack
by pack.

    toymodels benchmark run                       # sweeps/benchmark.yaml → results/benchmark/
    toymodels benchmark run --experiment benchmark_tiny n_train=20000

Outputs in `out/`: `results.csv` (tidy, one row per SAE), `leaderboard.md` + `leaderboard.csv` (per variant,
width and target L0: metrics of the SAEs trained at that L0, or interpolated where a variant cannot be steered
there; see `exact_l0`, `target_l0`, `match_l0`) and the Pareto figure (L0 vs MCC, F1, explained variance):
`figures/pareto.png` + `.svg` and its table `figures/data/pareto.csv`, committed together under `manifest.json`;
`packs/` keeps each finished pack's scores so a rerun resumes.
"""

from __future__ import annotations

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
LEADERBOARD_METRICS = ("f1", "f1_live", "mcc", "mmcs", "uniqueness", "explained_variance", "absorption",
                       "absorption_fraction", "absorption_gap", "shrinkage", "dead_frac")
"""Leaderboard columns: `mmcs` is Sharkey et al.'s signed MMCS, `absorption` Chanin et al.'s full-absorption
rate as SAEBench computes it (results.csv also has `mmcs_abs` and `absorption_matched`)."""
GRID_FIELDS = ("k", "l1_coeff", "l0_coeff")
"""Sparsity fields with a top-level list in BenchmarkConfig; other variants' values go in `sparsity`."""
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
    plugins: list = field(default_factory=list)
    """Python files or modules that register extra SAE variants (toymodels.sae.register_variant), imported
    before `variants` is checked."""
    variants: list = field(default_factory=lambda: ["relu", "topk", "batchtopk", "jumprelu", "matryoshka"])
    """SAE variants (toymodels.sae.variant_names(), built-in or from `plugins`)."""
    widths: list = field(default_factory=lambda: [1024])
    """Latents per SAE (d_sae), each ≥ 1."""
    k: list = field(default_factory=lambda: [6, 10, 16])
    """Sparsity settings of topk / batchtopk / matryoshka: active latents per sample."""
    l1_coeff: list = field(default_factory=lambda: [1.0, 3.0, 10.0])
    """Sparsity settings of relu / relu_april / gated: L1 coefficients."""
    l0_coeff: list = field(default_factory=lambda: [0.3, 1.0, 3.0])
    """Sparsity settings of jumprelu: L0 coefficients."""
    sparsity: dict = field(default_factory=dict)
    """Sparsity settings per variant, {variant: [values of its config's sparsity_field]}; overrides the lists
    above, and is required for a variant whose sparsity field has no list above."""
    seeds: list = field(default_factory=lambda: [0])
    """SAE init seeds."""
    sae_options: dict = field(default_factory=dict)
    """Extra config fields per variant, e.g. {jumprelu: {threshold_init: 1.0}} (not the sparsity field)."""
    rows: dict = field(default_factory=dict)
    """Named leaderboard rows that train a variant with fixed config fields, {label: {variant: name, field:
    value, ...}}, e.g. {jumprelu_tanh: {variant: jumprelu, sparsity_loss: tanh}}; list the label in
    `variants`. The variant's `sae_options` apply first; `sparsity` may be keyed by the label."""
    steps: int = 3000
    """SAE optimiser steps (≥ 1)."""
    batch_size: int = 1024
    """SAE batch size (≥ 1)."""
    lr: float = 1e-3
    """SAE learning rate (> 0)."""
    grad_clip: float = 0.0
    """Clip each SAE's gradient to at most this norm (≥ 0; 0 = off); see SAETrainConfig.grad_clip."""
    normalize: bool = True
    """Train on data scaled so E‖x‖² = d_model (SAETrainConfig.normalize); false: on the raw data."""
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
    exact_l0: bool = True
    """Train each variant at each target L0 (`target_l0`, else the matched L0) where it can be steered there
    (a controller on the penalty, or k = target) and report it at that L0; the sparsity lists above then only
    give the controllers' starting coefficient (their median). Variants that cannot be steered (and TopK
    between two integers) are swept and interpolated. False: every variant is swept and interpolated."""
    target_l0: list | None = None
    """L0s to compare at (each in (0, smallest width]); null → each width's matched L0 (`match_l0`)."""
    data_seed: int = 0
    """Seeds the samples (train and eval draws use data_seed and data_seed + 1)."""
    out: str = "results/benchmark"
    """Output folder (results.csv, leaderboard.md/.csv, figures/)."""
    progress: bool = True
    """Progress bar while training."""
    device: str = "auto"
    """Where the SAEs train and encode the eval set: auto (CUDA when present, else CPU), cpu, cuda, cuda:N, mps."""
    precision: str = "float32"
    """SAE training precision: float32, tf32 or bf16 (see SAETrainConfig.precision)."""

    def __post_init__(self):
        from toymodels.device import check_device, check_precision
        from toymodels.sae import get_variant, load_plugin, variant_names
        from toymodels.sae.registry import config_fields

        check_types(self)
        check_device(self.device)
        check_precision(self.precision)
        check(self.kind == "benchmark", "kind", "benchmark for a BenchmarkConfig", self.kind)
        check_out_path(self.out)
        for spec in self.plugins:
            load_plugin(str(spec))
        for name in ("n_train", "n_eval", "steps", "batch_size"):
            v = getattr(self, name)
            check(_is_int(v) and v >= 1, name, "an integer ≥ 1", v)
        check(_is_int(self.resample_every) and self.resample_every >= 0, "resample_every", "an integer ≥ 0",
              self.resample_every)
        check(_is_seed(self.data_seed) and self.data_seed < SEED_MAX_DATA, "data_seed", SEED_RANGE, self.data_seed)
        check(self.match_l0 in ("width", "all"), "match_l0", "width or all", self.match_l0)
        check(isinstance(self.exact_l0, bool), "exact_l0", "true or false", self.exact_l0)
        known = variant_names()
        fixed = {"d_in", "d_sae", "seed", "name"}
        for label, spec in self.rows.items():
            check(isinstance(label, str) and label not in known, "rows", "keyed by new labels (not variant names)",
                  label)
            check(hasattr(spec, "keys") and spec.get("variant") in known, f"rows.{label}",
                  f"a mapping with variant: one of {', '.join(known)}", spec)
            allowed = config_fields(spec["variant"]) - fixed - {get_variant(spec["variant"]).config.sparsity_field}
            check(set(spec) - {"variant"} <= allowed, f"rows.{label}",
                  f"variant plus {spec['variant']} config fields from {', '.join(sorted(allowed))}", dict(spec))
        labels = [*known, *self.rows]
        check(len(self.variants) >= 1 and all(v in labels for v in self.variants), "variants",
              f"a non-empty list from {', '.join(labels)}", list(self.variants))
        check(len(self.widths) >= 1 and all(_is_int(w) and w >= 1 for w in self.widths), "widths",
              "a non-empty list of integers ≥ 1", list(self.widths))
        if self.target_l0 is not None:
            t = list(self.target_l0)
            check(len(t) >= 1 and all(_is_num(x) and 0 < x <= min(self.widths) for x in t), "target_l0",
                  f"null or a non-empty list of numbers in (0, smallest width={min(self.widths)}]", t)
        check(len(self.seeds) >= 1 and all(_is_seed(s) for s in self.seeds), "seeds",
              f"a non-empty list of seeds, each {SEED_RANGE}", list(self.seeds))
        for v, opts in self.sae_options.items():
            check(v in known, "sae_options", f"keyed by variants from {', '.join(known)}", v)
            allowed = config_fields(v) - fixed - {get_variant(v).config.sparsity_field}
            check(hasattr(opts, "keys") and set(opts) <= allowed, f"sae_options.{v}",
                  f"a mapping of {v} config fields from {', '.join(sorted(allowed))}", dict(opts))
        for v, vals in self.sparsity.items():
            check(v in labels, "sparsity", f"keyed by variants or rows from {', '.join(labels)}", v)
            check(isinstance(vals, (list, tuple)) or type(vals).__name__ == "ListConfig", f"sparsity.{v}",
                  "a list of values", vals)
        for v in self.variants:
            key = get_variant(self.row(v)[0]).config.sparsity_field
            if key is None:
                continue
            vals = list(self.sparsity_values(v))
            where = f"sparsity.{v}" if v in self.sparsity or key not in GRID_FIELDS else key
            ok = len(vals) >= 1 and all(_is_num(x) and x > 0 for x in vals)
            if key == "k":
                ok = ok and all(_is_int(x) and x <= min(self.widths) for x in vals)
            check(ok, where, f"a non-empty list of {v}'s {key} values > 0" + (" (integers ≤ the smallest width)"
                                                                           if key == "k" else ""), vals)
        self.train_config()  # the training settings and every SAE of the grid are valid before any data is drawn
        stand_in = list(self.target_l0) if self.target_l0 is not None else [1.0]  # the matched L0 needs data
        sae_grid(self, self.dataset.d_model, {int(w): stand_in for w in self.widths})

    def train_config(self):
        """The SAETrainConfig every SAE of the grid trains with."""
        from toymodels.sae import SAETrainConfig

        return SAETrainConfig(steps=self.steps, batch_size=self.batch_size, lr=self.lr, seed=self.data_seed,
                              grad_clip=self.grad_clip, normalize=self.normalize,
                              resample_every=self.resample_every, resample_until=self.resample_until,
                              resample_min_rate=self.resample_min_rate, progress=self.progress,
                              device=self.device, precision=self.precision)

    def row(self, label: str) -> tuple[str, dict]:
        """(variant, its extra config fields) of a `variants` entry: a variant name or a label of `rows`."""
        spec = dict(self.rows.get(label, {"variant": label}))
        variant = spec.pop("variant")
        return variant, dict(self.sae_options.get(variant, {})) | spec

    def sparsity_values(self, label: str) -> list:
        """The sparsity settings a variant (or row label) is trained at ([None] if its config has no sparsity
        field)."""
        from toymodels.sae import get_variant

        variant = self.row(label)[0]
        key = get_variant(variant).config.sparsity_field
        if key is None:
            return [None]
        for name in (label, variant):
            if name in self.sparsity:
                return list(self.sparsity[name])
        return list(getattr(self, key)) if key in GRID_FIELDS else []


def sae_grid(cfg: BenchmarkConfig, d_in: int, targets: dict | None = None) -> list[tuple]:
    """(SAEConfig, the L0 it is trained for or NaN, its setting's tag, its row label) for every SAE of the run.
    `targets`: width → L0s to compare at; with `exact_l0`, variants that can be steered are trained at each (variant ×
    width × target × seed), the others (and all without exact_l0) sweep their sparsity settings (variant ×
    width × setting × seed)."""
    from toymodels.sae import SAEConfig, get_variant

    out = []
    for label in cfg.variants:
        v, opts = cfg.row(label)
        ccls = get_variant(v).config
        key = ccls.sparsity_field
        for w in cfg.widths:
            runs = []  # (fields, tag, trained_at)
            steer = [(t, ccls.l0_settings(t)) for t in (targets or {}).get(w, [])] if cfg.exact_l0 else []
            if steer and all(st is not None for _, st in steer):
                start = float(np.median(cfg.sparsity_values(label))) if key and key != "k" else None
                for t, settings in steer:
                    for fields in settings:
                        if fields.get("k", 0) > w:  # a TopK bracket's top beyond the width
                            continue
                        fields = ({key: start} if start and "target_l0" in fields else {}) | fields
                        tag = f"l0{t:g}" if "target_l0" in fields else "-".join(f"{a}{b:g}" for a, b in
                                                                                  fields.items())
                        runs.append((fields, tag, float(t)))
            else:
                for val in cfg.sparsity_values(label):
                    fields = {} if key is None else {key: int(val) if _is_int(val) else float(val)}
                    runs.append((fields, "" if key is None else f"{key}{val:g}", float("nan")))
            for fields, tag, at in runs:
                for seed in cfg.seeds:
                    name = f"{label}-{w}{'-' + tag if tag else ''}-s{seed}"
                    out.append((SAEConfig(variant=v, d_in=d_in, d_sae=int(w), seed=int(seed), **opts, **fields,
                                          name=name), at, tag or "-", label))
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


GRID_ONLY_FIELDS = ("variants", "rows", "widths", "k", "l1_coeff", "l0_coeff", "sparsity", "seeds", "sae_options",
                   "exact_l0", "target_l0", "match_l0")
"""Fields that only decide which SAEs the grid holds: a pack's key has its own SAEs' configs instead."""


def run_key(cfg: BenchmarkConfig, pack: list[tuple] | None = None) -> str:
    """Hash of everything that changes the results (not out, progress, description; a dataset file by its
    bytes; the package's TRAINING_REVISION). With `pack` (its `sae_grid` entries): the key of that pack's rows,
    which depend on the data, training and scoring settings and its own SAEs only, so a finished pack is reused
    by any run that trains the same SAEs on the same data (changing one variant retrains only its packs)."""
    import hashlib
    import json

    from toymodels.config import to_dict
    from toymodels.device import hash_fields
    from toymodels.outdir import sha256
    from toymodels.sae import train as train_mod

    body = {k: v for k, v in (to_dict(cfg) | {"dataset": to_dict(cfg.dataset)}).items()
            if k not in ("out", "progress", "description", "device", "precision")
            and (k, v) not in (("grad_clip", 0), ("normalize", True))}  # defaults: older keys stay valid
    body |= hash_fields(cfg.device, cfg.precision)  # nothing on the CPU at float32: older keys stay valid
    body["revision"] = train_mod.TRAINING_REVISION  # packs trained by older code are not reused
    if cfg.dataset_file:
        body["dataset_file"] = sha256(cfg.dataset_file)
    if pack is not None:
        body = {k: v for k, v in body.items() if k not in GRID_ONLY_FIELDS}
        body["saes"] = [[to_dict(c), at, tag, label] for c, at, tag, label in pack]
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
    from toymodels.device import describe, resolve
    from toymodels.groundtruth.metrics import score_sae
    from toymodels.io import environment, read_json, write_text
    from toymodels.outdir import transaction
    from toymodels.sae.train import pack_indices, train_in_packs

    t0 = time.perf_counter()
    out, key = Path(cfg.out), run_key(cfg)
    train_ds, eval_ds = load_or_sample(cfg)
    rates_F = firing_rates(eval_ds, cfg.n_eval)
    matched = {int(w): matched_l0(rates_F, int(w) if cfg.match_l0 == "width" else None) for w in cfg.widths}
    targets = {w: list(cfg.target_l0) if cfg.target_l0 is not None else [m] for w, m in matched.items()}
    if cfg.exact_l0 and cfg.target_l0 is None:
        check(all(np.isfinite(m) for m in matched.values()), "target_l0",
              "given (a list of L0s) when the dataset has no true activations to match", None)
    grid = sae_grid(cfg, train_ds.hidden.shape[1], targets)
    configs = [c for c, _, _, _ in grid]
    tc = cfg.train_config()

    def pack_file(idx) -> Path:
        return out / "packs" / f"{run_key(cfg, [grid[i] for i in idx])}-{configs[idx[0]].name}.json"

    def resume(idx):
        path = pack_file(idx)
        rows = read_json(path) if path.is_file() else None  # JSON: floats round-trip exactly
        return rows if isinstance(rows, list) and len(rows) == len(idx) else None

    def finish(idx, saes):
        rows = []
        for i, sae in zip(idx, saes, strict=True):
            c, at, tag, label = grid[i]
            field = c.sparsity_field
            with torch.no_grad():
                scores = score_sae(sae, eval_ds, n_eval=cfg.n_eval, device=cfg.device)
            value = sae.history.get("sparsity_coeff", getattr(c, field) if field else 0.0)  # a controller's final λ
            rows.append({"variant": label, "width": c.d_sae, "sparsity_param": field, "sparsity_value": value,
                         "setting": tag, "trained_at": at, "seed": c.seed, **scores})
        write_text(pack_file(idx), json.dumps(rows))  # key order kept; atomic rename: the pack's done marker
        return rows

    t1 = time.perf_counter()
    rows, resumed = train_in_packs(configs, train_ds.hidden, tc, resume, finish)
    t2 = time.perf_counter()
    if resumed:
        print(f"benchmark: {resumed} finished pack(s) resumed from {out / 'packs'}", file=sys.stderr)
    df = pd.DataFrame(rows)
    df["true_l0"] = eval_ds.mean_l0()
    df["target_l0"] = [matched[int(w)] for w in df["width"]]
    board = leaderboard(df, targets)
    with transaction(out, meta={"kind": "benchmark", "key": key}) as tx:
        tx.write_text("results.csv", df.to_csv(index=False))
        tx.write_text("leaderboard.csv", board.to_csv(index=False))
        tx.write_text("leaderboard.md", leaderboard_markdown(board, cfg))
        save_pareto(df, tx, prefix="figures/")
        tx.write_json("run.json", {"config": to_dict(cfg) | {"dataset": to_dict(cfg.dataset)},
                                   "seconds": {"data": t1 - t0, "train_and_score": t2 - t1,
                                               "write": time.perf_counter() - t2},
                                   "n_saes": len(configs), "packs_resumed": resumed, "key": key,
                                   "device": describe(resolve(cfg.device)), "precision": cfg.precision,
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
    return float(np.interp(np.log(at), x, y)), inside  # one point: that point (inside iff at its L0)


def leaderboard(df: pd.DataFrame, targets: dict | None = None) -> pd.DataFrame:
    """Per (variant, width, target L0): seed-averaged metrics at that L0, ranked by F1 within each (width,
    target). `method` says how: `exact` (SAEs trained at the target: their mean, `l0` their measured L0) or
    `interpolated` (linearly in log L0 between settings: TopK between two integers, variants without a
    controller, or exact_l0 off). `f1_sd` is the standard deviation over seeds (NaN with one seed). `targets`:
    width → L0s (default: each width's `target_l0` column)."""
    metrics = [m for m in LEADERBOARD_METRICS if m in df]
    if "trained_at" not in df:
        df = df.assign(trained_at=np.nan, setting=df["sparsity_value"].astype(str))
    rows = []
    for (v, w), g in df.groupby(["variant", "width"], sort=False):
        for ref in (targets or {}).get(int(w), [float(g["target_l0"].iloc[0])]):
            at = g[np.isclose(g["trained_at"], ref)]
            at = at if len(at) else g[g["trained_at"].isna()]
            if not len(at):
                continue
            m = at.groupby("setting")[["l0", *metrics]].mean()
            row = {"variant": v, "width": w, "target_l0": ref, "l0_min": m["l0"].min(), "l0_max": m["l0"].max()}
            exact = len(m) == 1 and at["trained_at"].notna().all()
            if exact:
                row.update({"l0": float(m["l0"].iloc[0]), **{k: float(m[k].iloc[0]) for k in metrics}})
                f1_seeds, inside = at.groupby("seed")["f1"].mean().tolist(), True
            else:
                row["l0"] = float(ref)
                for k in metrics:
                    row[k], inside = _interp(m["l0"].to_numpy(), m[k].to_numpy(), ref)
                f1_seeds = [_interp(gs.groupby("setting")["l0"].mean().to_numpy(),
                                    gs.groupby("setting")["f1"].mean().to_numpy(), ref)[0]
                            for _, gs in at.groupby("seed")]
            row["method"] = "exact" if exact else "interpolated"
            row["f1_sd"] = float(np.std(f1_seeds, ddof=1)) if len(f1_seeds) > 1 else float("nan")
            row["n_seeds"] = len(f1_seeds)
            row["matched"] = inside
            rows.append(row)
    board = pd.DataFrame(rows).sort_values(["width", "target_l0", "f1"], ascending=[True, True, False],
                                           kind="stable").reset_index(drop=True)
    board.insert(0, "rank", board.groupby(["width", "target_l0"]).cumcount() + 1)
    return board


def leaderboard_markdown(board: pd.DataFrame, cfg: BenchmarkConfig | None = None) -> str:
    cols = [c for c in board.columns if c not in ("matched",)]
    at = ("the data's true L0" if cfg is not None and cfg.match_l0 == "all" else
          "each width's matched L0 (the true L0 of its `width` most frequent features)")
    if cfg is not None and cfg.target_l0 is not None:
        at = "the experiment's target L0s"
    lines = [f"# SAE leaderboard ({cfg.name if cfg else ''})", "",
             f"Metrics are seed means at {at}, `target_l0`: `exact` rows were trained at it (a controller on the "
             "sparsity coefficient, or k = target; `l0` is their measured L0), `interpolated` rows are "
             "interpolated linearly in log L0 between sparsity settings; `*` marks those whose L0 range does "
             "not bracket the target (the nearest run is shown). "
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
    if "setting" not in df:  # a sweep without settings' tags: one setting per sparsity value
        df = df.assign(setting=[f"{p}{v:g}" for p, v in zip(df["sparsity_param"], df["sparsity_value"], strict=True)])
    keys = ["variant", "width", "setting"]
    t = df.groupby(keys, sort=False).agg(**{c: (c, "mean") for c in cols}, sparsity_param=("sparsity_param", "first"),
                                         sparsity_value=("sparsity_value", "mean"), target_l0=("target_l0", "first"),
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

    fig, axes = plt.subplots(1, 3, figsize=(14.5, 4), layout="constrained")
    variants = list(dict.fromkeys(df["variant"]))
    palette = [*plt.get_cmap("tab10").colors, "black", "gold", "teal", "navy"]  # 14 distinct; tab20's pairs look alike
    colors = {v: palette[i % len(palette)] for i, v in enumerate(variants)}
    markers = {v: "osD^vPX*<>hpdH"[i % 14] for i, v in enumerate(variants)}
    for ax, (metric, label) in zip(axes, PARETO, strict=True):
        for (v, w), g in df.groupby(["variant", "width"], sort=False):
            m = g.sort_values("l0")
            ax.plot(m["l0"], m[metric], markers[v] + "-", color=colors[v],
                    label=f"{v} ({w})" if df["width"].nunique() > 1 else v, alpha=0.9)
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
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside right center", fontsize=8)  # off the points
    fig.suptitle("SAEs on ground truth: sparsity vs recovery (dashed: the L0 they are compared at)")
    return fig

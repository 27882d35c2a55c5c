"""The recoverability atlas: for each amount and kind of superposition, which SAE variant recovers which of a toy
model's represented features, how reliably over seeds, and how far from what an ideal method reaches.

    toymodels sweep atlas                          # sweeps/atlas.yaml → runs/atlas/ (resumable)
    toymodels sweep atlas densities=[1,0.1] seeds=3 n_jobs=2

Cells: toy-model shape (n features → m dims: several n at a fixed m and several m at a fixed n) × structure
(independent / correlated / anticorrelated / hierarchical sets) × importance profile × feature density; every
cell has `seeds` replicates (a toy model and its SAEs per seed). A *unit* of work is one shape (n, m): the toy
models of each structure train as the instances of one `train()` call, and every SAE of the shape (all variants,
cells and seeds) trains in one `train_saes` call, one stream of hidden activations per toy model, so the SAEs of
one variant form one packed module (a tensor program) per shape. Every SAE trains at its cell's true
L0 (mean active represented features per sample): penalty variants through their L0 controller, TopK-family
variants with k = that L0 (TopK, AbsTopK and Matching Pursuit: rounded to an integer; the TopK family: at least
1). Short runs leave the controllers and BatchTopK's inference threshold short of it, so every SAE but the
integer-k ones is then put on it exactly (`calibrate_l0`, `toymodels.sae.calibrate`; `l0_trained` keeps where
training left it). A finished unit's rows are written to `out/units/`, so a rerun resumes; units run in
parallel (joblib). Ceilings per cell and seed are in `toymodels.groundtruth.ceilings`; maps and summary in
`atlas_report`.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from toymodels.config import STRUCTURES, _is_int, _is_num, check_types, to_dict
from toymodels.errors import check
from toymodels.io import check_out_path

L1_FAMILY = ("relu", "relu_april", "gated", "p_anneal")
"""Variants whose sparsity is an L1-style penalty (their L0 controller gets a lower gain in the atlas)."""
RECOVERED_COS = 0.9
"""A represented feature counts as recovered when some decoder row has cos ≥ this with it (signed)."""


@dataclass
class AtlasConfig:
    """A recoverability atlas (kind: atlas): the toy-model grid, the SAEs fit to each cell, how to run it."""

    kind: str = "atlas"
    """Experiment kind; atlas for this schema."""
    name: str = "atlas"
    """Experiment name."""
    description: str = ""
    """One-line summary shown by `toymodels experiments`."""
    m_fixed: int = 8
    """Hidden width of the n-at-fixed-m family (≥ 1)."""
    n_values: list = field(default_factory=lambda: [4, 8, 16, 32])
    """Feature counts n trained at m = m_fixed."""
    n_fixed: int = 16
    """Feature count of the m-at-fixed-n family (≥ 1)."""
    m_values: list = field(default_factory=lambda: [4, 8, 16])
    """Hidden widths m trained at n = n_fixed."""
    densities: list = field(default_factory=lambda: [1.0, 0.3, 0.1, 0.03])
    """Feature densities (1 − sparsity), each in (0, 1]; every feature of a cell has the same density."""
    importance_last: list = field(default_factory=lambda: [1.0, 0.1])
    """Importance profiles: importance falls geometrically from 1 (feature 0) to this value (feature n − 1);
    1 is flat. Each value in (0, 1]."""
    structures: list = field(default_factory=lambda: list(STRUCTURES))
    """Feature structures (toymodels.features): independent, correlated, anticorrelated, hierarchical."""
    set_size: int = 2
    """Features per set for the structured kinds (must divide every n)."""
    child_prob: float = 0.5
    """Hierarchical sets: probability that a child fires when its parent does, in (0, 1]."""
    seeds: int = 3
    """Replicates per cell (≥ 1): replicate r is toy-model instance r of the cell and SAE seed r."""
    model: str = "relu_output"
    """Toy model (relu_output or linear: the hidden h = W x is a linear superposition)."""
    toy_steps: int = 3000
    """Toy-model optimiser steps (≥ 1)."""
    toy_lr: float = 3e-3
    """Toy-model learning rate (> 0)."""
    toy_batch: int = 1024
    """Toy-model batch size (≥ 1)."""
    variants: list = field(default_factory=lambda: ["relu", "relu_april", "gated", "p_anneal", "jumprelu", "topk",
                                                    "abstopk", "batchtopk", "matryoshka", "matching_pursuit"])
    """SAE variants (toymodels.sae.variant_names())."""
    width_factor: int = 2
    """SAE latents per toy feature (d_sae = width_factor · n, ≥ 1). With exactly one latent per feature, one
    latent is spent cancelling the decoder bias on the many all-zero samples of sparse data and one feature is
    left uncovered (4 orthogonal features at density 0.1: TopK MMCS 0.66–0.83 with 4 latents, 0.99 with 8)."""
    sae_options: dict = field(default_factory=lambda: {"jumprelu": {"threshold_lr_scale": 3.0},
                                                       **{v: {"l0_gain": 0.02} for v in L1_FAMILY}})
    """Extra config fields per variant, e.g. {jumprelu: {threshold_init: 1.0}}. Default: JumpReLU's threshold
    learns 3× faster (as the leaderboard), and the L1 family's L0 controller runs at gain 0.02: at the default
    0.05 it overshoots low targets in short runs and the latents die (8 → 8 at density 0.1, target L0 0.79,
    300 steps: relu and gated end at L0 0.04–0.09; at 0.02 gated ends at 0.68–0.73, relu still at 0.04–0.4)."""
    sae_steps: int = 1000
    """SAE optimiser steps (≥ 1)."""
    sae_batch: int = 512
    """SAE batch size (≥ 1)."""
    sae_lr: float = 3e-3
    """SAE learning rate (> 0)."""
    resample_every: int = 30
    """Resample dead and rare latents every this many SAE steps, during the first 80 % (0: never)."""
    calibrate_l0: bool = True
    """After training, move each SAE whose latents are gated by an offset (all but TopK, AbsTopK and Matching
    Pursuit) onto the cell's true L0 exactly, by one common shift of its gates fit on its training samples
    (`toymodels.sae.calibrate`); `l0_trained` keeps the L0 it reached by training alone."""
    n_train: int = 16384
    """Hidden activations per toy model that its SAEs train on (≥ 1)."""
    n_eval: int = 4096
    """Fresh hidden activations every SAE and ceiling is scored on (≥ 1)."""
    seed: int = 0
    """Seeds the toy models and the samples (each unit's seed is a hash of this and its content)."""
    backend: str = "loky"
    """joblib backend across units: loky (processes), threading or sequential."""
    n_jobs: int = 2
    """Units trained in parallel (−1: all cores)."""
    out: str = "runs/atlas"
    """Output folder: results.csv (one row per variant × cell × seed), summary.md, maps, units/ (resume)."""
    progress: bool = True
    """Print one line per finished unit."""

    def __post_init__(self):
        from toymodels.sae import variant_names

        check_types(self)
        check(self.kind == "atlas", "kind", "atlas for an AtlasConfig", self.kind)
        check_out_path(self.out)
        check(_is_int(self.resample_every) and self.resample_every >= 0, "resample_every", "an integer ≥ 0",
              self.resample_every)
        for name in ("m_fixed", "n_fixed", "seeds", "width_factor", "toy_steps", "toy_batch", "sae_steps", "sae_batch",
                     "n_train", "n_eval", "set_size"):
            check(_is_int(getattr(self, name)) and getattr(self, name) >= 1, name, "an integer ≥ 1",
                  getattr(self, name))
        for name in ("n_values", "m_values"):
            v = list(getattr(self, name))
            check(all(_is_int(x) and x >= 1 for x in v), name, "a list of integers ≥ 1", v)
        check(len(self.shapes()) >= 1, "n_values", "non-empty (or m_values non-empty)", list(self.n_values))
        d = list(self.densities)
        check(len(d) >= 1 and all(_is_num(x) and 0 < x <= 1 for x in d), "densities",
              "a non-empty list of numbers in (0, 1]", d)
        v = list(self.importance_last)
        check(len(v) >= 1 and all(_is_num(x) and 0 < x <= 1 for x in v), "importance_last",
              "a non-empty list of numbers in (0, 1]", v)
        s = list(self.structures)
        check(len(s) >= 1 and all(x in STRUCTURES for x in s), "structures",
              f"a non-empty list from {', '.join(STRUCTURES)}", s)
        if any(x != "independent" for x in s):
            bad = [n for n, _ in self.shapes() if n % self.set_size]
            check(not bad, "set_size", f"a divisor of every n (not of {bad})", self.set_size)
        check(_is_num(self.child_prob) and 0 < self.child_prob <= 1, "child_prob", "in (0, 1]", self.child_prob)
        check(self.model in ("relu_output", "linear"), "model", "relu_output or linear", self.model)
        for name in ("toy_lr", "sae_lr"):
            check(_is_num(getattr(self, name)) and getattr(self, name) > 0, name, "a number > 0",
                  getattr(self, name))
        known = variant_names()
        check(len(self.variants) >= 1 and all(x in known for x in self.variants), "variants",
              f"a non-empty list from {', '.join(known)}", list(self.variants))
        for k, opts in self.sae_options.items():
            check(k in known and hasattr(opts, "keys"), "sae_options", "a mapping {variant: {field: value}}", k)
        check(self.backend in ("loky", "threading", "sequential"), "backend", "loky, threading or sequential",
              self.backend)
        check(_is_int(self.n_jobs) and (self.n_jobs == -1 or self.n_jobs >= 1), "n_jobs", "−1 or an integer ≥ 1",
              self.n_jobs)

    def shapes(self) -> list[tuple[int, int]]:
        """(n, m) pairs of both compression families, without repeats, sorted by m then n."""
        pairs = {(int(n), int(self.m_fixed)) for n in self.n_values} | {(int(self.n_fixed), int(m))
                                                                        for m in self.m_values}
        return sorted(pairs, key=lambda p: (p[1], p[0]))

    def units(self) -> list[tuple[int, int]]:
        """Shapes (n, m), one unit of work each, largest first (so parallel workers finish together)."""
        return sorted(self.shapes(), key=lambda p: -p[0] * p[1])

    def train_config(self):
        from toymodels.sae import SAETrainConfig

        return SAETrainConfig(steps=self.sae_steps, batch_size=self.sae_batch, lr=self.sae_lr, seed=self.seed,
                              resample_every=self.resample_every, resample_until=0.8, resample_min_rate=0.2,
                              dead_after=1000, progress=False)


def importance_profile(n: int, last: float) -> list[float]:
    """Geometric importances from 1 (feature 0) to `last` (feature n − 1)."""
    return [1.0] if n == 1 else [float(last ** (i / (n - 1))) for i in range(n)]


def l0_fields(variant: str, target: float, d_sae: int) -> dict:
    """Config fields that train `variant` at L0 = target (see the module docstring for the rounding)."""
    from toymodels.sae import get_variant
    from toymodels.sae.penalty import PenaltyConfig
    from toymodels.sae.topk import TopKFamilyConfig

    cls = get_variant(variant).config
    if issubclass(cls, PenaltyConfig):
        return {"target_l0": float(min(max(target, 1e-3), d_sae))}
    if issubclass(cls, TopKFamilyConfig) and cls.fractional_k:
        return {"k": float(min(max(target, 1.0), d_sae))}
    if "k" in {f.name for f in __import__("dataclasses").fields(cls)}:
        return {"k": int(min(max(round(target), 1), d_sae))}
    return {}


AFTER_TRAINING = ("calibrate_l0",)
"""Fields that act only after training: they change a unit's rows, not its seed."""


def unit_key(cfg: AtlasConfig, shape: tuple[int, int], seed_only: bool = False) -> str:
    """Hash of everything that changes the rows of unit `shape` (not where or how it runs); with `seed_only`,
    of what changes its training (the unit's seed)."""
    skip = ("name", "description", "backend", "n_jobs", "out", "progress") + (AFTER_TRAINING if seed_only else ())
    body = {k: v for k, v in to_dict(cfg).items() if k not in skip}
    if not seed_only:  # the unit's seed stays; its cached rows do not outlive the code that trained them
        from toymodels.sae.train import TRAINING_REVISION

        body["revision"] = TRAINING_REVISION
    text = json.dumps({"shape": list(shape), **body}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _toy_cells(cfg: AtlasConfig) -> list[tuple[float, float, int]]:
    """(density, importance_last, replicate) of every instance of one toy train() call, in instance order."""
    return [(float(d), float(v), r) for d in cfg.densities for v in cfg.importance_last for r in range(cfg.seeds)]


def run_unit(cfg: AtlasConfig, shape: tuple[int, int]) -> tuple[pd.DataFrame, dict]:
    """Train and score every toy model and SAE of one shape (n features → m dims); (rows, timings)."""
    import torch

    from toymodels.analysis import instance_table
    from toymodels.config import ToyConfig, TrainConfig
    from toymodels.groundtruth.ceilings import cs_boundary_l0, omp_scores, scores
    from toymodels.groundtruth.metrics import cos
    from toymodels.groundtruth.toydata import toy_dataset
    from toymodels.sae import SAEConfig, train_saes
    from toymodels.sae.calibrate import calibrate_l0
    from toymodels.train import train

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        t0, c0 = time.perf_counter(), time.process_time()
        cells = _toy_cells(cfg)
        n, m = shape
        seed = int(unit_key(cfg, shape, seed_only=True)[:8], 16) % 2**31
        data, toy_programs = [], 0  # (cell row dict, dataset with n_train + n_eval samples)
        for structure in cfg.structures:
            toy = ToyConfig(n_features=n, n_hidden=m, model=cfg.model, structure=structure,
                            set_size=cfg.set_size, child_prob=cfg.child_prob,
                            density=[[d] * n for d, _, _ in cells],
                            importance=[importance_profile(n, v) for _, v, _ in cells])
            res = train(toy, TrainConfig(steps=cfg.toy_steps, lr=cfg.toy_lr, batch_size=cfg.toy_batch,
                                         seed=seed, progress=False))
            toy_programs += 1
            phase = instance_table(res.W, res.final_loss)
            for i, (d, v, r) in enumerate(cells):
                ds = toy_dataset(res, i, n_samples=cfg.n_train + cfg.n_eval, seed=seed + 1 + i)
                row = {"structure": structure, "n": n, "m": m, "compression": n / m, "density": d,
                       "importance_last": v, "seed": r, "n_represented": int(phase.n_represented[i]),
                       "n_superposition": int(phase.n_superposition[i]),
                       "dims_per_feature": float(phase.dims_per_feature[i]), "toy_loss": float(phase.loss[i])}
                data.append((row, ds))
        t1 = time.perf_counter()
        configs, owner, streams = [], [], []
        live = [j for j, (_, ds) in enumerate(data) if ds.n_features]
        for s, j in enumerate(live):
            row, ds = data[j]
            true_N = (ds.true_acts(cfg.n_train) != 0).sum(1).float()
            row["true_l0"] = float(true_N.mean())
            for v in cfg.variants:
                width = cfg.width_factor * row["n"]
                fields = l0_fields(v, row["true_l0"], width) | dict(cfg.sae_options.get(v, {}))
                configs.append(SAEConfig(variant=v, d_in=m, d_sae=width, seed=row["seed"], **fields))
                owner.append(j)
                streams.append(s)
        saes = []
        if configs:
            X = torch.stack([data[j][1].hidden[:cfg.n_train] for j in live])  # [S, N, m]
            saes = train_saes(configs, X, cfg.train_config(), streams=streams)
        trained = list(saes)
        if cfg.calibrate_l0:
            saes = [calibrate_l0(sae, X[s], data[j][0]["true_l0"])
                    for sae, s, j in zip(saes, streams, owner, strict=True)]
        t2 = time.perf_counter()
        rows, ceiling = [], {}
        for c, j, sae, raw in zip(configs, owner, saes, trained, strict=True):
            row, ds = data[j]
            h = ds.hidden[cfg.n_train:]
            true = ds.true_acts()[cfg.n_train:]
            V, par = ds.feature_vectors, ds.parent
            steps_N = (true != 0).sum(1)
            if j not in ceiling:
                ceiling[j] = omp_scores(h, V, steps_N, V, true, par)
            with torch.no_grad():
                acts = sae.encode(h)
                s = scores(h, acts, sae.decode(acts), sae.W_dec, V, true, par)
                own = omp_scores(h, sae.W_dec, steps_N, V, true, par, b_D=sae.b_dec)
                l0_trained = s["l0"] if raw is sae else float((raw.encode(h) != 0).sum(1).float().mean())
            best = cos(sae.W_dec, V).max(1).values
            ceil = ceiling[j]
            rows.append(row | {
                "variant": c.variant, "target_l0": _target(c, sae, row), "l0_trained": l0_trained,
                "recovered": float((best >= RECOVERED_COS).float().mean()),
                **{k: s[k] for k in ("mmcs", "mcc", "feature_f1", "f1", "precision", "recall",
                                     "explained_variance", "l0", "dead_frac", "shrinkage")},
                "absorption": s.get("absorption", float("nan")),
                "absorption_fraction": s.get("absorption_fraction", float("nan")),
                "ceiling_f1": ceil["feature_f1"], "ceiling_ev": ceil["explained_variance"],
                "ceiling_l0": ceil["l0"], "ceiling_absorption": ceil.get("absorption", float("nan")),
                "dict_f1": own["feature_f1"], "dict_ev": own["explained_variance"],
                "cs_boundary_l0": cs_boundary_l0(row["n_represented"], m)})
        for row, ds in data:  # nothing represented: no SAE, nothing to recover
            if not ds.n_features:
                rows += [row | {"variant": v, "true_l0": 0.0, "recovered": float("nan")} for v in cfg.variants]
        t3 = time.perf_counter()
    finally:
        torch.set_num_threads(threads)
    from toymodels.sae.train import pack_indices

    info = {"n": n, "m": m, "cpu_seconds": time.process_time() - c0, "toy_seconds": t1 - t0,
            "sae_seconds": t2 - t1, "score_seconds": t3 - t2,
            "toy_programs": toy_programs, "sae_programs": len(pack_indices(configs)), "saes": len(configs)}
    return pd.DataFrame(rows), info


def _target(c, sae, row) -> float:
    """The L0 the SAE was put at: the true L0 when calibrated, else its training target or k."""
    if sae.history.get("l0_calibration_offset") is not None:
        return row["true_l0"]
    return float(getattr(c, "target_l0", None) or getattr(c, "k", float("nan")))


def run_atlas(cfg: AtlasConfig, log=None) -> pd.DataFrame:
    """Run (or resume) the atlas; writes out/results.csv, out/summary.md, out/run.json and the maps."""
    import joblib

    from toymodels.io import read_json, write_json, write_text
    from toymodels.outdir import lock

    log = log or (lambda s: print(s, file=sys.stderr, flush=True))
    out = Path(cfg.out)
    t0 = time.perf_counter()
    with lock(out):
        (out / "units").mkdir(parents=True, exist_ok=True)
        keys = {u: unit_key(cfg, u) for u in cfg.units()}
        todo = [m for m in keys if not (out / "units" / f"{keys[m]}.csv").is_file()]
        jobs = min(len(todo), cfg.n_jobs if cfg.n_jobs > 0 else len(todo)) or 1
        with joblib.parallel_config(backend=cfg.backend):
            for df, info in joblib.Parallel(n_jobs=jobs, return_as="generator_unordered")(
                    joblib.delayed(run_unit)(cfg, m) for m in todo):
                key = keys[(info["n"], info["m"])]
                write_json(out / "units" / f"{key}.json", info)
                write_text(out / "units" / f"{key}.csv", df.to_csv(index=False))  # written last: marks done
                if cfg.progress:
                    log(f"atlas {cfg.name}: unit {info['n']}→{info['m']} done ({info['saes']} SAEs in "
                        f"{info['sae_programs']} packed programs; toy {info['toy_seconds']:.0f}s, SAEs "
                        f"{info['sae_seconds']:.0f}s, scoring {info['score_seconds']:.0f}s)")
        df = pd.concat([pd.read_csv(out / "units" / f"{keys[m]}.csv") for m in keys], ignore_index=True)
        infos = [read_json(out / "units" / f"{keys[m]}.json") for m in keys]
        df = tidy(df)
        from toymodels.groundtruth.atlas_report import save_report

        seconds = time.perf_counter() - t0
        run = {"units": infos, "seconds": seconds, "resumed": len(keys) - len(todo),
               "saes": sum(i["saes"] for i in infos), "sae_programs": sum(i["sae_programs"] for i in infos),
               "toy_programs": sum(i["toy_programs"] for i in infos), "config": to_dict(cfg)}
        write_text(out / "results.csv", df.to_csv(index=False, float_format="%.6g"))
        write_json(out / "run.json", run)
        save_report(df, out, cfg.name)
    log(f"atlas {cfg.name}: {run['saes']} SAEs ({run['sae_programs']} SAE programs, {run['toy_programs']} toy "
        f"programs, {run['resumed']}/{len(keys)} units resumed) in {seconds:.0f}s → {out / 'results.csv'}")
    return df


def tidy(df: pd.DataFrame) -> pd.DataFrame:
    """Rows sorted by (variant, structure, importance, m, n, density, seed); a `cell` label per cell."""
    df = df.sort_values(["variant", "structure", "importance_last", "m", "n", "density", "seed"],
                        ascending=[True, True, False, True, True, False, True], kind="stable").reset_index(drop=True)
    df.insert(0, "cell", [f"{s}|imp{v:g}|{n}→{m}|p{d:g}" for s, v, n, m, d in
                          zip(df.structure, df.importance_last, df.n, df.m, df.density, strict=True)])
    return df


def load(name: str, overrides=()) -> AtlasConfig:
    """Compose atlas experiment `name` with Hydra overrides into a validated AtlasConfig."""
    from toymodels.experiments import compose, to_object

    cfg = to_object(compose(name, list(overrides), kind="atlas"))
    return cfg


def cell_stats(df: pd.DataFrame, value: str) -> pd.DataFrame:
    """Per variant and cell: median, min, max and spread (max − min) of `value` over seeds."""
    keys = ["variant", "structure", "importance_last", "n", "m", "compression", "density"]
    g = df.groupby(keys, sort=False)[value]
    out = g.agg(["median", "min", "max", "count"]).reset_index()
    out["spread"] = out["max"] - out["min"]
    return out


"""Sweeps: expand an experiment's grid, pack the points into instance batches, train them in parallel, store.

A grid point is one (x, y) cell; every point of a batch (and each of its restarts) is one instance of a
single `train()` call, so a 40×40 grid × 10 restarts is a handful of tensor programs. Points are sorted by
density before packing, so low-density batches stay sparse (the trainer materialises only non-zero rows). Each
batch's seed is a hash of the sweep seed and the batch's content, never of scheduling, so every joblib backend
(loky, dask, ray) and every resume gives bit-identical results.

    toymodels sweep phase_2to1 grid.n=20 train.restarts=5          # CLI (Hydra override syntax)
    python -m toymodels.sweep --config-name phase_2to1 --multirun train.seed=0,1   # native Hydra
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from toymodels.backends import BACKENDS, backend, check_backend, ray_unordered
from toymodels.config import ToyConfig, TrainConfig, _is_int, _is_num, check_types, to_dict
from toymodels.errors import check
from toymodels.io import check_out_path

NOT_CONTENT = ("backend", "n_jobs", "address", "out", "progress", "description")
"""SweepConfig keys that change how a sweep runs, not what it computes (excluded from the content hash)."""


@dataclass
class AxisConfig:
    """One axis of the grid: a log- or linearly-spaced range written into density or importance."""

    field: str = "density"
    """Which ToyConfig quantity this axis sets: density or importance."""
    features: list[int] = dataclasses.field(default_factory=list)
    """Feature indices the axis sets (others keep the base toy value); empty: all features."""
    lo: float = 1.0
    """First value (> 0 for a log axis)."""
    hi: float = 0.01
    """Last value (> 0 for a log axis); lo > hi is allowed (the axis runs downwards)."""
    log: bool = True
    """Geometric spacing (True) or linear."""
    n: int | None = None
    """Points on this axis; null: grid.n."""


@dataclass
class GridConfig:
    """A 2-D grid: every (x, y) pair is one grid point."""

    n: int = 20
    """Points per axis for axes that do not set their own n (≥ 2)."""
    x: AxisConfig = field(default_factory=lambda: AxisConfig(field="importance", lo=0.1, hi=10.0))
    """Horizontal axis."""
    y: AxisConfig = field(default_factory=AxisConfig)
    """Vertical axis."""


@dataclass
class SweepConfig:
    """A sweep experiment (kind: sweep): base model + training, a grid over it, and how/where to run it."""

    kind: str = "sweep"
    """Experiment kind; sweep for this schema."""
    name: str = "sweep"
    """Experiment name (used in the default output folder)."""
    description: str = ""
    """One-line summary shown by `toymodels experiments`."""
    toy: ToyConfig = field(default_factory=ToyConfig)
    """Base ToyConfig of every grid point; the axes overwrite density/importance of some features."""
    train: TrainConfig = field(default_factory=lambda: TrainConfig(on_divergence="mark", progress=False))
    """Training of every batch; train.seed is the sweep seed, train.restarts the best-of-N per point."""
    grid: GridConfig = field(default_factory=GridConfig)
    """The grid of points."""
    phase_feature: int = 1
    """Feature whose phase (not_represented / dedicated / superposition) labels a grid point."""
    batch_points: int = 200
    """Grid points per instance batch (a batch trains batch_points × restarts instances at once; ≥ 1). On a GPU
    (train.device) batches are packed larger automatically, up to GPU_BATCH_BYTES of batch tensors each."""
    backend: str = "loky"
    """joblib backend: loky (local processes), threading, sequential, dask (address = scheduler; null starts a
    LocalCluster) or ray (address = cluster; null starts a local one)."""
    n_jobs: int = 2
    """Parallel workers for loky/threading and the LocalCluster (−1: all cores)."""
    address: str | None = None
    """Scheduler address for dask (e.g. tcp://10.0.0.1:8786) or ray (e.g. auto); null: local."""
    out: str | None = None
    """Output folder; null: runs/sweeps/<name>-<content hash> (rerunning the same sweep resumes it)."""
    progress: bool = True
    """Progress bar over grid points (hidden anyway when stderr is not a terminal)."""

    def __post_init__(self):
        check_types(self)
        check(self.kind == "sweep", "kind", "sweep for a SweepConfig", self.kind)
        check_out_path(self.out)
        check(self.backend in BACKENDS, "backend", f"one of {', '.join(BACKENDS)}", self.backend)
        check(_is_int(self.batch_points) and self.batch_points >= 1, "batch_points", "an integer ≥ 1",
              self.batch_points)
        check(_is_int(self.n_jobs) and (self.n_jobs == -1 or self.n_jobs >= 1), "n_jobs", "−1 or an integer ≥ 1",
              self.n_jobs)
        check(self.address is None or isinstance(self.address, str), "address", "null or a string", self.address)
        F = self.toy.n_features
        check(_is_int(self.phase_feature) and 0 <= self.phase_feature < F, "phase_feature",
              f"a feature index in [0, {F - 1}]", self.phase_feature)
        check(_is_int(self.grid.n) and self.grid.n >= 2, "grid.n", "an integer ≥ 2", self.grid.n)
        for ax in ("x", "y"):
            a: AxisConfig = getattr(self.grid, ax)
            check(a.field in ("density", "importance"), f"grid.{ax}.field", "density or importance", a.field)
            check(all(_is_int(f) and 0 <= f < F for f in a.features), f"grid.{ax}.features",
                  f"feature indices in [0, {F - 1}]", list(a.features))
            check(a.n is None or (_is_int(a.n) and a.n >= 2), f"grid.{ax}.n", "null or an integer ≥ 2", a.n)
            for end in ("lo", "hi"):
                v = getattr(a, end)
                check(_is_num(v), f"grid.{ax}.{end}", "a finite number", v)
                check(not a.log or v > 0, f"grid.{ax}.{end}", "> 0 on a log axis", v)


@dataclass
class Batch:
    """One unit of work: the grid points it trains, its content hash (= id) and its seed."""

    id: str
    points: list[int]
    toy: ToyConfig
    train: TrainConfig


def axis_values(a: AxisConfig, n_default: int) -> np.ndarray:
    n = a.n or n_default
    return np.geomspace(a.lo, a.hi, n) if a.log else np.linspace(a.lo, a.hi, n)


def grid_shape(cfg: SweepConfig) -> tuple[int, int]:
    """(points on x, points on y)."""
    return cfg.grid.x.n or cfg.grid.n, cfg.grid.y.n or cfg.grid.n


def check_size(cfg: SweepConfig) -> None:
    """Refuse, before expanding anything, a grid whose table cannot fit in memory: every point is a Python row of
    5 + 2·n_features values (~100 bytes each while the table is built)."""
    from toymodels.budget import check_memory

    nx, ny = grid_shape(cfg)
    check_memory(100 * nx * ny * (5 + 2 * cfg.toy.n_features),
                 f"grid ({nx} × {ny} = {nx * ny} points of {cfg.toy.n_features} features)")


def expand(cfg: SweepConfig) -> pd.DataFrame:
    """One row per grid point: point, ix, iy, x, y, per-feature density_f / importance_f (decay applied)."""
    check_size(cfg)
    xs, ys = axis_values(cfg.grid.x, cfg.grid.n), axis_values(cfg.grid.y, cfg.grid.n)
    base = dataclasses.replace(cfg.toy, n_instances=None)
    dens0, imp0 = base.density_array()[0], base.importance_array()[0]
    rows = []
    for iy, y in enumerate(ys):
        for ix, x in enumerate(xs):
            q = {"density": dens0.copy(), "importance": imp0.copy()}
            for a, v in ((cfg.grid.x, x), (cfg.grid.y, y)):
                q[a.field][list(a.features) or slice(None)] = v
            rows.append({"point": len(rows), "ix": ix, "iy": iy, "x": float(x), "y": float(y),
                         **{f"density_{f}": float(d) for f, d in enumerate(q["density"])},
                         **{f"importance_{f}": float(d) for f, d in enumerate(q["importance"])}})
    return pd.DataFrame(rows)


def content_hash(cfg: SweepConfig) -> str:
    """Hash of everything that changes the results (not backend, workers, output folder; the device only as the
    kind it resolves to, and not at all for the CPU, so CPU hashes are those of before the device option)."""
    d = {k: v for k, v in _asdict(cfg).items() if k not in NOT_CONTENT}
    d["train"] = _train_key(cfg)
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]


GPU_BATCH_BYTES = 1 << 30
"""On a GPU, a sweep batch holds up to about this many bytes of per-step batch tensors (x, out, error, grads)."""


def device_kind(cfg: SweepConfig) -> str:
    """cpu, cuda or mps (torch-cpu: the CPU under TOYMODELS_TORCH_PATH=1): where the sweep's batches train
    (checked here for a local run; for a remote Dask/Ray cluster, auto counts as cpu and an explicit device is the
    workers' business)."""
    from toymodels.device import cpu_fast_paths, resolve

    dev = cfg.train.device
    if cfg.backend in ("dask", "ray") and cfg.address:
        return "cpu" if dev in ("auto", "cpu") else dev.split(":")[0]
    d = resolve(dev, "train.device")
    return "cpu" if cpu_fast_paths(d) else "torch-cpu" if d.type == "cpu" else d.type  # torch-cpu: tests


def _train_key(cfg: SweepConfig) -> dict:
    d = {k: v for k, v in to_dict(cfg.train).items() if k != "device"}
    kind = device_kind(cfg)
    return d if kind == "cpu" else d | {"device": kind}


def points_per_batch(cfg: SweepConfig, n_points: int) -> int:
    """cfg.batch_points on the CPU; on a GPU, as many more as fit GPU_BATCH_BYTES (one batch is one kernel
    stream, and a GPU needs wide ones to be busy)."""
    if device_kind(cfg) == "cpu":
        return cfg.batch_points
    tc, toy = cfg.train, cfg.toy
    per_point = 6 * 4 * tc.restarts * tc.batch_size * (toy.n_features + toy.n_hidden)
    return max(cfg.batch_points, min(n_points, GPU_BATCH_BYTES // max(per_point, 1)))


def plan(cfg: SweepConfig) -> tuple[pd.DataFrame, list[Batch]]:
    """The grid and its batches: points sorted by density (sparse with sparse), chunked, seeded by content."""
    grid = expand(cfg)
    F = cfg.toy.n_features
    dcols, icols = [f"density_{f}" for f in range(F)], [f"importance_{f}" for f in range(F)]
    order = grid.assign(_d=grid[dcols].max(axis=1)).sort_values(["_d", "point"], ascending=[False, True],
                                                                  kind="stable").point.to_numpy()
    batches, size, train_key = [], points_per_batch(cfg, len(order)), _train_key(cfg)
    for start in range(0, len(order), size):
        pts = sorted(int(p) for p in order[start:start + size])
        sub = grid.set_index("point").loc[pts]
        dens, imp = sub[dcols].to_numpy().tolist(), sub[icols].to_numpy().tolist()
        key = json.dumps({"seed": cfg.train.seed, "toy": to_dict(cfg.toy), "train": train_key,
                          "density": dens, "importance": imp}, sort_keys=True)
        h = hashlib.sha256(key.encode()).hexdigest()
        toy = dataclasses.replace(cfg.toy, density=dens, importance=imp, importance_decay=1.0,
                                  n_instances=None)
        tc = dataclasses.replace(cfg.train, seed=int(h[:8], 16) % 2**31, progress=False)
        batches.append(Batch(id=h[:16], points=pts, toy=toy, train=tc))
    return grid, batches


def run_batch(batch: Batch) -> tuple[str, pd.DataFrame, dict]:
    """Train one batch on one thread; return (id, tidy table, tensors). Runs inside joblib workers."""
    import torch

    from toymodels.analysis import feature_table
    from toymodels.train import train

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread per worker: no oversubscription, and identical results anywhere (a GPU
    # batch's host side is one thread too)
    try:
        res = train(batch.toy, batch.train)
    finally:
        torch.set_num_threads(threads)
    table = feature_table(res.W, batch.toy, res.final_loss)
    F = batch.toy.n_features
    table.insert(0, "point", np.repeat(batch.points, F))
    table = table.drop(columns="instance")
    table["best_restart"] = res.best_restart.repeat_interleave(F).numpy()
    table["batch"] = batch.id
    table["seed"] = batch.train.seed
    tensors = {"W_IFH": res.W, "b_IF": res.model.b.detach(), "final_loss": res.final_loss,
               "restart_loss": res.restart_loss, "points": torch.tensor(batch.points)}
    return batch.id, table, {"tensors": tensors, "seconds": res.seconds,
                             "model_steps": len(batch.points) * batch.train.restarts * batch.train.steps}


def check_batch_memory(cfg: SweepConfig, batches: list[Batch]) -> None:
    """The batches that train at once fit in memory (each worker holds one batch's `train()`)."""
    import os

    from toymodels.budget import check_memory, train_bytes

    if not batches:
        return
    tc, toy = cfg.train, cfg.toy
    K = max(len(b.points) for b in batches) * tc.restarts
    H = toy.n_hidden * (2 if toy.model == "abs_value" else 1)
    jobs = (os.cpu_count() or 1) if cfg.n_jobs == -1 else cfg.n_jobs
    workers = 1 if cfg.backend == "sequential" else min(len(batches), jobs)
    if cfg.backend in ("dask", "ray") and cfg.address:
        workers = 1  # remote workers: only one batch's result is held here at a time
    check_memory(workers * train_bytes(K, toy.n_features, H, tc.batch_size, steps=tc.steps,
                                       log_every=tc.log_every, snapshot_every=tc.snapshot_every),
                 f"sweep batches ({workers} at once × {K} models of {toy.n_features} features, batch "
                 f"{tc.batch_size})")


def default_out(cfg: SweepConfig) -> Path:
    return Path("runs") / "sweeps" / f"{cfg.name}-{content_hash(cfg)}"


def run_sweep(cfg: SweepConfig, out: str | Path | None = None, log=print) -> pd.DataFrame:
    """Run (or resume) a sweep; returns the results table (also written to OUT/results.csv)."""
    from toymodels.outdir import lock

    check_backend(cfg)
    grid, batches = plan(cfg)  # validates every batch's ToyConfig before any work
    check_batch_memory(cfg, batches)
    out = Path(out or cfg.out or default_out(cfg))
    with lock(out):  # one writer per sweep folder; batches resume as before
        return _run_locked(cfg, out, grid, batches, log)


def _run_locked(cfg: SweepConfig, out: Path, grid, batches, log) -> pd.DataFrame:
    import joblib
    from omegaconf import OmegaConf

    from toymodels.progress import progress
    from toymodels.store import SweepStore

    store = SweepStore(out)
    todo = [b for b in batches if not store.done(b.id)]
    store.claim(content_hash(cfg), OmegaConf.to_yaml(OmegaConf.structured(cfg)),
                {"seed": cfg.train.seed, "points": len(grid), "batches": [b.id for b in batches],
                 "backend": cfg.backend, "device": device_kind(cfg)})
    t0, steps, busy = time.perf_counter(), 0, 0.0
    with progress(total=len(grid), desc=f"sweep {cfg.name}", unit="pt",
                  enabled=None if cfg.progress else False) as bar:
        bar.update(len(grid) - sum(len(b.points) for b in todo))
        if todo:
            with backend(cfg.backend, cfg.n_jobs, cfg.address, gpu=device_kind(cfg) != "cpu") as n_jobs:
                results = ray_unordered(run_batch, todo) if cfg.backend == "ray" else joblib.Parallel(
                    n_jobs=min(n_jobs, len(todo)) if n_jobs > 0 else n_jobs, return_as="generator_unordered")(
                    joblib.delayed(run_batch)(b) for b in todo)
                for batch_id, table, extra in results:
                    store.write_batch(batch_id, table, extra["tensors"])
                    steps, busy = steps + extra["model_steps"], busy + extra["seconds"]
                    bar.update(len(table) // cfg.toy.n_features)
    df = store.assemble([b.id for b in batches], grid)
    seconds = time.perf_counter() - t0
    rate = f", {steps / seconds:,.0f} model-steps/s" if steps else ""
    log(f"sweep {cfg.name}: {len(grid)} points ({len(batches) - len(todo)}/{len(batches)} batches resumed) "
        f"in {seconds:.1f}s{rate}; table: {out / 'results.csv'}")
    return df


def _asdict(cfg) -> dict:
    d = dataclasses.asdict(cfg)
    for k in ("toy", "train"):
        d[k] = to_dict(getattr(cfg, k))
    return d


def load(name: str, overrides=()) -> SweepConfig:
    """Compose sweep experiment `name` with Hydra overrides into a validated SweepConfig."""
    from toymodels.experiments import compose, to_object

    cfg = to_object(compose(name, list(overrides), kind="sweep"))
    if cfg.name == "sweep":
        cfg.name = name
    return cfg


def register(sub) -> None:
    p = sub.add_parser("sweep", help="run (or resume) a named sweep experiment from sweeps/",
                       description="Run a sweep experiment with Hydra overrides; rerunning resumes it.",
                       epilog="examples:\n  toymodels sweep phase_2to1 grid.n=20 train.restarts=5\n"
                              "  toymodels sweep atlas seeds=3 n_jobs=2          # the recoverability atlas\n"
                              "  toymodels sweep phase_2to1 backend=dask address=tcp://127.0.0.1:8786\n",
                       formatter_class=__import__("argparse").RawDescriptionHelpFormatter)
    p.add_argument("name", help="experiment name (see `toymodels experiments`)")
    p.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. grid.n=20 train.restarts=5 out=runs/x")
    p.set_defaults(func=_run_named)
    e = sub.add_parser("experiments", help="list the named experiments in sweeps/",
                       description="List the experiment YAMLs in sweeps/ (or $TOYMODELS_SWEEPS_DIR) with their kind.",
                       epilog="examples:\n  toymodels experiments\n  toymodels sweep phase_2to1 grid.n=20\n"
                              "  toymodels benchmark run --experiment benchmark_tiny\n",
                       formatter_class=__import__("argparse").RawDescriptionHelpFormatter)
    e.set_defaults(func=_list)


def _run_named(args) -> None:
    """`toymodels sweep NAME`: a phase sweep, or the recoverability atlas for an experiment of kind atlas."""
    from toymodels.experiments import list_experiments

    if list_experiments().get(args.name, ("",))[0] == "atlas":
        from toymodels.groundtruth import atlas

        atlas.run_atlas(atlas.load(args.name, args.overrides))
        return
    run_sweep(load(args.name, args.overrides))


def _list(args) -> None:
    from toymodels.experiments import broken_experiments, list_experiments, sweeps_dir

    for name, (kind, desc) in list_experiments().items():
        print(f"{name:<20} {kind:<10} {desc}")
    for file, problem in broken_experiments().items():
        print(f"toymodels: warning: {sweeps_dir() / file}: {problem} (skipped)", file=sys.stderr)
    print(f"({sweeps_dir()}; run one with `toymodels sweep NAME key=value ...`)")


def hydra_main() -> None:
    """`python -m toymodels.sweep --config-name NAME [--multirun] [overrides]` (any Hydra launcher)."""
    import hydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    from toymodels.experiments import register_schemas, sweeps_dir

    register_schemas()

    @hydra.main(version_base="1.3", config_path=str(sweeps_dir()), config_name=None)
    def _main(dcfg) -> None:
        cfg = OmegaConf.to_object(dcfg)
        hc = HydraConfig.get()
        if getattr(cfg, "kind", "") == "atlas":
            from toymodels.groundtruth.atlas import run_atlas

            run_atlas(cfg)
            return
        if cfg.name == "sweep":
            cfg.name = hc.job.config_name or "sweep"
        run_sweep(cfg, out=cfg.out or Path(hc.runtime.output_dir) / "sweep")

    _main()


if __name__ == "__main__":
    sys.exit(hydra_main())

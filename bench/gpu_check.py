"""One command that checks toymodels on a GPU (about 5-8 minutes on one data-centre GPU):

1. toy models (the pentagon grid, 20→5 with decaying importance) trained on the CPU and on the GPU from the
   same seed: losses re-scored on the same CPU samples agree within tolerance; throughput of each;
2. a phase_2to1 sweep on the CPU (all cores) and on the GPU (wide packed batches): phases agree;
3. SAEs (relu, topk, batchtopk, jumprelu, matryoshka) on a synthetic dictionary, CPU and GPU: final MSE and
   ground-truth F1/MCC agree; tf32 and bf16 runs on the GPU;
4. toymodels against SAELens's own trainer (`SAETrainer`, a TopK SAE) on the same GPU and the same data tensor;
5. a reduced synthsaebench16k (`sweeps/synthsaebench16k.yaml`, if this checkout has it; else skipped).

    python bench/gpu_check.py                    # on a machine with CUDA; prints a table, exits 1 if a check fails
    python bench/gpu_check.py --device cuda:1    # another GPU
    python bench/gpu_check.py --dry-run          # the same steps, tiny, on the CPU's device-agnostic torch paths

Without a GPU (and without --dry-run) it says so in one line and exits 0: nothing to check here. --dry-run
compares the CPU fast paths with the torch paths a GPU runs (TOYMODELS_TORCH_PATH=1), in about a minute.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SIZES = {  # full: a GPU run of a few minutes; dry: seconds on the CPU
    "full": dict(toy_steps=5000, toy_points=32, restarts=5, grid=12, sweep_steps=1000, sweep_restarts=10,
                 F=4096, D=256, L=1024, k=16, n_train=400_000, sae_steps=2000, cmp_L=4096, cmp_D=768, cmp_steps=1500,
                 synth=["n_train=2048000", "steps=2000", "n_eval=20000"]),
    "dry": dict(toy_steps=300, toy_points=4, restarts=2, grid=3, sweep_steps=60, sweep_restarts=2,
                F=64, D=16, L=32, k=4, n_train=4000, sae_steps=60, cmp_L=64, cmp_D=32, cmp_steps=20,
                synth=["n_train=20000", "steps=20", "n_eval=2000", "seeds=[0]"]),
}
VARIANTS = {"relu": {}, "topk": {"k": None}, "batchtopk": {"k": None}, "jumprelu": {}, "matryoshka": {"k": None}}


class Report:
    def __init__(self):
        self.rows: list[tuple[str, str, str]] = []

    def add(self, name: str, ok: bool | None, detail: str) -> None:
        status = {True: "ok", False: "FAIL", None: "info"}[ok]
        self.rows.append((name, status, detail))
        print(f"  {status:<5} {name:<34} {detail}", flush=True)

    @property
    def failed(self) -> list[str]:
        return [n for n, s, _ in self.rows if s in ("FAIL", "ERROR")]


@contextlib.contextmanager
def torch_path(on: bool):
    """TOYMODELS_TORCH_PATH=1 inside (the dry run's stand-in for a GPU)."""
    old = os.environ.get("TOYMODELS_TORCH_PATH")
    if on:
        os.environ["TOYMODELS_TORCH_PATH"] = "1"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("TOYMODELS_TORCH_PATH", None)
        else:
            os.environ["TOYMODELS_TORCH_PATH"] = old


def rescored(res, seed: int = 12345) -> list[float]:
    """Per-instance loss of a TrainResult's kept models on the same fresh CPU samples (32 batches)."""
    import torch

    from toymodels.train import evaluate

    cfg, tc = res.config, dataclasses.replace(res.train, eval_batches=32, seed=seed, device="cpu")
    p = torch.tensor(cfg.density_array(), dtype=torch.float32)
    imp = torch.tensor(cfg.importance_array(), dtype=torch.float32)
    return evaluate(res.model, cfg, p, imp, tc, 1).tolist()


def check_toy(dev: str, S: dict, rep: Report, dry: bool) -> None:
    import numpy as np

    from toymodels.config import ToyConfig, TrainConfig
    from toymodels.train import train

    toys = {"pentagon grid 5→2": ToyConfig(n_features=5, n_hidden=2,
                                          density=np.geomspace(1, 0.01, S["toy_points"])[:, None].tolist()),
            "20→5 decay 0.7": ToyConfig(n_features=20, n_hidden=5, importance_decay=0.7,
                                        density=np.geomspace(1, 0.01, S["toy_points"])[:, None].tolist())}
    for name, toy in toys.items():
        tc = TrainConfig(steps=S["toy_steps"], restarts=S["restarts"], progress=False, seed=0, lr=3e-3)
        cpu = train(toy, dataclasses.replace(tc, device="cpu"))
        with torch_path(dry):
            gpu = train(toy, dataclasses.replace(tc, device=dev))
        a, b = np.array(rescored(cpu)), np.array(rescored(gpu))
        rel = np.abs(b - a) / np.maximum(a, 1e-6)
        total = abs(b.sum() - a.sum()) / a.sum()
        ok = bool(np.median(rel) <= 0.15 and total <= 0.1)
        rep.add(f"toy {name}: loss", ok, f"median |Δ|/loss {np.median(rel):.3f} (≤ 0.15), total {total:.3f} "
                f"(≤ 0.10) over {len(a)} instances")
        rep.add(f"toy {name}: speed", None, f"CPU {cpu.meta['model_steps_per_s']:,.0f}, {gpu.meta['device']} "
                f"{gpu.meta['model_steps_per_s']:,.0f} model-steps/s ({gpu.meta['backward']}, "
                f"{gpu.meta['sampler']})")


def check_sweep(dev: str, S: dict, rep: Report, tmp: Path, dry: bool) -> None:
    from toymodels.sweep import load, plan, run_sweep

    args = [f"grid.n={S['grid']}", f"train.steps={S['sweep_steps']}", f"train.restarts={S['sweep_restarts']}",
            "progress=false"]
    t = time.perf_counter()
    cpu = run_sweep(load("phase_2to1", [*args, "train.device=cpu", f"n_jobs={os.cpu_count() or 1}"]),
                    out=tmp / "sweep-cpu", log=lambda *_: None)
    t_cpu, t = time.perf_counter() - t, time.perf_counter()
    with torch_path(dry):
        cfg = load("phase_2to1", [*args, f"train.device={dev}"])
        n_batches = len(plan(cfg)[1])
        gpu = run_sweep(cfg, out=tmp / "sweep-gpu", log=lambda *_: None)
    t_gpu = time.perf_counter() - t
    pc, pg = (d[d.feature == 1].set_index("point")["phase"] for d in (cpu, gpu))
    agree = float((pc == pg.loc[pc.index]).mean())
    need = 0.5 if dry else 0.85  # the dry run's 9 points after 60 steps are mostly noise
    rep.add("sweep phase_2to1: phases", agree >= need, f"{agree:.0%} of {len(pc)} points agree (≥ {need:.0%})")
    rep.add("sweep phase_2to1: time", None, f"CPU {t_cpu:.1f}s ({os.cpu_count()} workers), {dev} {t_gpu:.1f}s "
            f"in {n_batches} packed batch(es)")


def sae_configs(S: dict):
    from toymodels.sae import SAEConfig

    return [SAEConfig(variant=v, d_in=S["D"], d_sae=S["L"], seed=0,
                      **{key: (S["k"] if val is None else val) for key, val in opts.items()})
            for v, opts in VARIANTS.items()]


def check_sae(dev: str, S: dict, rep: Report, dry: bool):
    from toymodels.groundtruth import Dictionary, SyntheticConfig
    from toymodels.groundtruth.metrics import score_sae
    from toymodels.sae import SAETrainConfig, train_saes

    t = time.perf_counter()
    d = Dictionary(SyntheticConfig(n_features=S["F"], d_model=S["D"], p_max=0.4, p_min=5e-4))
    train_ds, eval_ds = d.sample(S["n_train"], seed=0), d.sample(20_000 if not dry else 2000, seed=1)
    rep.add("SAE data", None, f"{S['n_train']:,} samples of {S['F']} features in {S['D']} dims "
            f"({time.perf_counter() - t:.1f}s, mean L0 {d.expected_l0:.1f})")
    cfgs = sae_configs(S)
    tc = SAETrainConfig(steps=S["sae_steps"], batch_size=1024 if not dry else 128, lr=3e-4 if not dry else 1e-3,
                        progress=False)
    cpu = train_saes(cfgs, train_ds.hidden, dataclasses.replace(tc, device="cpu"))
    with torch_path(dry):
        gpu = train_saes(cfgs, train_ds.hidden, dataclasses.replace(tc, device=dev))
        runs = {p: train_saes(cfgs[1:2], train_ds.hidden, dataclasses.replace(tc, device=dev, precision=p))[0]
                for p in ("tf32", "bf16")}
    for a, b in zip(cpu, gpu, strict=True):
        ma, mb = a.history["mse"][-1], b.history["mse"][-1]
        sa = score_sae(a, eval_ds, n_eval=eval_ds.n_samples)
        with torch_path(dry):
            sb = score_sae(b, eval_ds, n_eval=eval_ds.n_samples, device=dev)
        dm, df1, dmcc = abs(mb - ma) / ma, abs(sb["f1"] - sa["f1"]), abs(sb["mcc"] - sa["mcc"])
        tol = 0.05 if not dry else 0.25
        rep.add(f"SAE {a.cfg.variant}", dm <= tol and df1 <= tol and dmcc <= tol,
                f"MSE Δ {dm:.3f}, F1 {sa['f1']:.3f}/{sb['f1']:.3f}, MCC {sa['mcc']:.3f}/{sb['mcc']:.3f} "
                f"(CPU/{dev}; tolerance {tol}); {a.history['seconds']:.1f}s / {b.history['seconds']:.1f}s")
    base = gpu[1].history["mse"][-1]
    for p, r in runs.items():
        rel = abs(r.history["mse"][-1] - base) / base
        rep.add(f"SAE topk {p}", rel <= 0.1, f"final MSE within {rel:.3f} of float32 (≤ 0.10); "
                f"{r.history['seconds']:.1f}s vs {gpu[1].history['seconds'] / len(cfgs):.1f}s per float32 SAE "
                f"(packed)")


def saelens_topk(X, L: int, k: int, steps: int, batch: int, dev: str) -> float:
    """Seconds for SAELens's SAETrainer to train a TopK SAE on `steps` batches of the data tensor X."""
    from sae_lens.config import LoggingConfig, SAETrainerConfig
    from sae_lens.saes.topk_sae import TopKTrainingSAE, TopKTrainingSAEConfig
    from sae_lens.training.sae_trainer import SAETrainer

    sae = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=X.shape[1], d_sae=L, k=k, device=dev))
    g = __import__("torch").Generator().manual_seed(0)

    def provider():
        import torch

        while True:
            for idx in torch.randperm(len(X), generator=g).split(batch):
                if len(idx) == batch:
                    yield X[idx.to(X.device)]

    cfg = SAETrainerConfig(total_training_samples=steps * batch, train_batch_size_samples=batch, lr=3e-4, lr_end=3e-4,
                           device=dev, logger=LoggingConfig(log_to_wandb=False, eval_every_n_wandb_logs=2**31 - 1),
                           n_batches_for_norm_estimate=10)
    t = time.perf_counter()
    SAETrainer(cfg=cfg, sae=sae, data_provider=provider(), save_checkpoint_fn=lambda *_: None).fit()
    from toymodels.device import synchronize

    synchronize(dev)
    return time.perf_counter() - t


def check_saelens(dev: str, S: dict, rep: Report, dry: bool) -> None:
    import importlib.util

    import torch

    from toymodels.sae import SAEConfig, SAETrainConfig, train_saes

    if importlib.util.find_spec("sae_lens") is None:
        rep.add("SAELens comparison", None, "skipped: sae_lens is not installed (pip install 'toymodels[saelens]')")
        return
    D, L, k, steps, B = S["cmp_D"], S["cmp_L"], S["k"], S["cmp_steps"], 1024 if not dry else 64
    X = torch.randn(64 * B, D, generator=torch.Generator().manual_seed(0)).relu().to(dev)
    t_sl = saelens_topk(X, L, k, steps, B, dev)
    with torch_path(dry):
        tc = SAETrainConfig(steps=steps, batch_size=B, lr=3e-4, progress=False, device=dev)
        ours = train_saes([SAEConfig(variant="topk", d_in=D, d_sae=L, k=k)], X, tc)[0].history["seconds"]
        four = train_saes([SAEConfig(variant="topk", d_in=D, d_sae=L, k=k, seed=s) for s in range(4)], X,
                          tc)[0].history["seconds"]
    rate = steps * B
    rep.add("vs SAELens (TopK)", None, f"d_in {D}, width {L}, k {k}, batch {B}, {steps} steps on {dev}: SAELens "
            f"{rate / t_sl:,.0f} samples/s, toymodels {rate / ours:,.0f} ({t_sl / ours:.2f}×), 4 packed "
            f"{4 * rate / four:,.0f} ({4 * t_sl / four:.2f}×)")


def check_synth(dev: str, S: dict, rep: Report, tmp: Path, dry: bool) -> None:
    from toymodels.experiments import sweeps_dir

    if not (sweeps_dir() / "synthsaebench16k.yaml").is_file():
        rep.add("synthsaebench16k (reduced)", None, f"skipped: {sweeps_dir() / 'synthsaebench16k.yaml'} not here")
        return
    if dry:  # building the 16,384 × 768 dictionary alone takes over 10 minutes on one CPU thread
        rep.add("synthsaebench16k (reduced)", None, "skipped in --dry-run: its 16k × 768 dictionary is GPU-sized")
        return
    from toymodels.cli import main as cli

    args = ["benchmark", "run", "--experiment", "synthsaebench16k", *S["synth"], f"device={dev}", "progress=false",
            f"out={tmp / 'synth'}"]
    t = time.perf_counter()
    with torch_path(dry):
        rc = cli(args)
    board = tmp / "synth" / "leaderboard.md"
    rep.add("synthsaebench16k (reduced)", rc == 0 and board.is_file(), f"{' '.join(S['synth'])}: exit {rc} in "
            f"{time.perf_counter() - t:.0f}s")
    if board.is_file():
        print(board.read_text())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda", help="the GPU to check (default cuda)")
    p.add_argument("--dry-run", action="store_true", help="tiny sizes on the CPU's torch paths (no GPU needed)")
    p.add_argument("--only", nargs="+", choices=("toy", "sweep", "sae", "saelens", "synth"),
                   help="run only these steps")
    args = p.parse_args(argv)
    import torch

    from toymodels.device import describe, resolve, unavailable_reason

    if not args.dry_run and args.device != "cpu" and unavailable_reason() is not None:
        print(f"gpu_check: no GPU to check here ({unavailable_reason()}); nothing was run. Run it on a machine "
              "with CUDA, or with --dry-run for a CPU smoke test of the same steps.")
        return 0
    dev = "cpu" if args.dry_run else args.device
    try:
        dev_name = describe(resolve(dev))
    except Exception as e:  # noqa: BLE001 - e.g. cuda:3 on a one-GPU machine: one line
        print(f"gpu_check: {e}")
        return 2
    torch.set_num_threads(os.cpu_count() if not args.dry_run else 1)
    S = SIZES["dry" if args.dry_run else "full"]
    print(f"gpu_check on {dev_name}{' (dry run: CPU torch paths, tiny sizes)' if args.dry_run else ''}; "
          f"torch {torch.__version__}, {os.cpu_count()} CPU threads")
    rep, t0 = Report(), time.perf_counter()
    steps = {"toy": check_toy, "sweep": check_sweep, "sae": check_sae, "saelens": check_saelens,
             "synth": check_synth}
    with tempfile.TemporaryDirectory(prefix="gpu_check-") as tmp:
        for name, fn in steps.items():
            if args.only and name not in args.only:
                continue
            print(f"[{name}] ({time.perf_counter() - t0:.0f}s)", flush=True)
            kw = {"tmp": Path(tmp)} if name in ("sweep", "synth") else {}
            try:
                fn(dev, S, rep, dry=args.dry_run, **kw)
            except Exception as e:  # noqa: BLE001 - report every step, then fail at the end
                traceback.print_exc()
                rep.rows.append((name, "ERROR", f"{type(e).__name__}: {e}"))
    print(f"\ngpu_check: {len(rep.rows)} lines in {time.perf_counter() - t0:.0f}s; "
          + (f"FAILED: {', '.join(rep.failed)}" if rep.failed else "all checks passed"))
    return 1 if rep.failed else 0


if __name__ == "__main__":
    sys.exit(main())

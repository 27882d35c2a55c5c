"""SAE training throughput: samples/s for a 128-d input, 512-latent BatchTopK (k=16), batch 1024, one SAE and
several packed at once, against the machine's matmul peak measured in the same run (a large torch.mm).

Run: python bench/bench_sae.py [--steps 30] [--many 4] [--threads 2] [--baseline DIR]

`--baseline DIR` also times another copy of the package (DIR holds it as `toymodels_before`, e.g. an older
commit exported with its imports renamed) in the same run, interleaved with the current one, for before/after
ratios on this noisy shared machine. The GFLOP/s counts the dense-equivalent encoder and decoder work of a step
(forward x·W_enc, x̂ = f·W_dec; backward ∂W_enc, ∂W_dec, ∂f: 5 products of 2·B·D·L flops). BatchTopK's step
computes only the encoder densely and the other four on the k·B kept entries (sparse), so its fraction of the
matmul reference can exceed 100 %. Time with `--threads 1` when others share the machine."""

from __future__ import annotations

import argparse
import importlib
import sys
import time

import torch


def mm_gflops(n: int = 2048, reps: int = 5) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    t = time.perf_counter()
    for _ in range(reps):
        torch.mm(a, b)
    return 2 * n**3 * reps / (time.perf_counter() - t) / 1e9


def run(pkg: str, n_sae: int, steps: int, variant: str = "batchtopk", D: int = 128, L: int = 512, k: int = 16,
        B: int = 1024) -> tuple[float, float]:
    """(aggregate samples/s over all SAEs, achieved GFLOP/s of the dense work) for one timed run."""
    sae = importlib.import_module(f"{pkg}.sae")
    X = torch.randn(B * 8, D)
    cfgs = [sae.SAEConfig(variant=variant, d_in=D, d_sae=L, k=k, seed=i) for i in range(n_sae)]
    tc = sae.SAETrainConfig(steps=steps, batch_size=B, progress=False, log_every=steps)
    sae.train_saes(cfgs, X, sae.SAETrainConfig(steps=3, batch_size=B, progress=False))  # warm-up
    t = time.perf_counter()
    sae.train_saes(cfgs, X, tc)
    dt = time.perf_counter() - t
    flops = n_sae * steps * 5 * (2 * B * D * L)
    return n_sae * steps * B / dt, flops / dt / 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--many", type=int, default=4)
    ap.add_argument("--variant", default="batchtopk")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--baseline", default=None, help="folder holding an older copy as `toymodels_before`")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    pkgs = ["toymodels"]
    if args.baseline:
        sys.path.insert(0, args.baseline)
        pkgs = ["toymodels_before", "toymodels"]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    peak = mm_gflops()
    print(f"matmul reference (2048² torch.mm): {peak:.1f} GFLOP/s")
    res = {}
    for n in (1, args.many):
        for pkg in pkgs:
            sps, gf = run(pkg, n, args.steps, args.variant)
            res[pkg, n] = sps
            print(f"{pkg:<16} {args.variant} ×{n}: {sps:9,.0f} samples/s aggregate ({sps / n:9,.0f} per SAE), "
                  f"{gf:5.1f} GFLOP/s = {gf / peak:4.0%} of the matmul reference")
    if args.baseline:
        for n in (1, args.many):
            print(f"speed-up ×{n}: {res['toymodels', n] / res['toymodels_before', n]:.2f}")
    print(f"matmul reference again: {mm_gflops():.1f} GFLOP/s (spread shows the machine's noise)")


if __name__ == "__main__":
    main()

"""Matching Pursuit's cost per training step against TopK at the same k (issue 14: MP is sequential in k).

    python bench/bench_mp.py [--ks 4 8 16 32] [--steps 10] [--threads 1] [--D 128] [--L 512] [--B 1024]

For each k, times a full step (loss_terms + backward + Adam) of one SAE, interleaving TopK, MP with the
Gram-tracked picks (training's default) and MP selecting by a fresh r·W_decᵀ product each step (SAELens's
way), and prints median ms/step and the ratios to TopK. Times are CPU time of this process (steadier than the
wall clock on a shared machine)."""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from toymodels.sae import SAEConfig
from toymodels.sae.train import pack


def step_ms(m, X, steps: int) -> float:
    """Median CPU ms of one training step of packed module `m` over `steps` batches of X."""
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)
    times = []
    for i in range(steps + 1):
        x = X[i % len(X)]
        t = time.process_time()
        losses, _ = m.loss_terms(x, 0.5)
        opt.zero_grad(set_to_none=True)
        sum(losses.values()).sum().backward()
        m.pre_step()
        opt.step()
        m.post_step()
        if i:  # the first step warms up allocations
            times.append(time.process_time() - t)
    return 1e3 * statistics.median(times)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ks", type=int, nargs="+", default=[4, 8, 16, 32])
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--D", type=int, default=128)
    ap.add_argument("--L", type=int, default=512)
    ap.add_argument("--B", type=int, default=1024)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    X = torch.randn(4, a.B, a.D)
    print(f"D={a.D} L={a.L} B={a.B}, {a.threads} thread(s); median CPU ms per training step")
    print(f"{'k':>4} {'topk':>8} {'mp gram':>8} {'mp direct':>10} {'gram/topk':>10} {'direct/topk':>12}")
    for k in a.ks:
        topk = pack([SAEConfig(variant="topk", d_in=a.D, d_sae=a.L, k=k)])
        mp = pack([SAEConfig(variant="matching_pursuit", d_in=a.D, d_sae=a.L, k=k)])
        mp_direct = pack([SAEConfig(variant="matching_pursuit", d_in=a.D, d_sae=a.L, k=k)])
        mp_direct.gram_selection = False
        t = {"topk": step_ms(topk, X, a.steps), "gram": step_ms(mp, X, a.steps),
             "direct": step_ms(mp_direct, X, a.steps)}
        print(f"{k:>4} {t['topk']:>8.1f} {t['gram']:>8.1f} {t['direct']:>10.1f} {t['gram'] / t['topk']:>10.2f} "
              f"{t['direct'] / t['topk']:>12.2f}")


if __name__ == "__main__":
    main()

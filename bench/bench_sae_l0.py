"""Cost of the exact-L0 controller: the same packed SAEs trained with a fixed sparsity coefficient and with
`target_l0` (the PI controller on log λ), in alternating rounds in one run; prints samples/s and the ratio.

Run: python bench/bench_sae_l0.py [--variants relu,jumprelu] [--steps 200] [--rounds 3] [--threads 1]

Each round trains K = 4 SAEs 128 → 512 (batch 1024) of each variant twice, once per mode, on the same data; the
ratio of the per-mode median times is the overhead. The controller adds K-element tensor ops per step (and
the dense encoder/decoder work does not depend on L0), so the ratio should be ~1; the issue asks for ≤ 1.05.
On a shared machine the round ratios swing by ±10 %, so the controller's own work (`after_step` and the
coefficient it feeds the loss) is also timed alone, 2000 calls, as a fraction of a training step."""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from toymodels.sae import SAEConfig, SAETrainConfig, get_variant, train_saes
from toymodels.sae.train import pack


def timed(cfgs, X, steps) -> float:
    tc = SAETrainConfig(steps=steps, batch_size=1024, lr=3e-3, progress=False, log_every=steps)
    t = time.perf_counter()
    train_saes(cfgs, X, tc)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variants", default="relu,relu_april,gated,jumprelu")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    V = torch.nn.functional.normalize(torch.randn(1024, 128, generator=g), dim=1)
    X = ((torch.rand(16384, 1024, generator=g) < 0.01) * torch.rand(16384, 1024, generator=g)) @ V
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), {args.steps} steps × 4 SAEs 128→512")
    for v in args.variants.split(","):
        field = get_variant(v).config.sparsity_field
        fixed = [SAEConfig(variant=v, d_in=128, d_sae=512, seed=i, **{field: 1.0}) for i in range(4)]
        steered = [SAEConfig(variant=v, d_in=128, d_sae=512, seed=i, target_l0=8.0 * (i + 1), **{field: 1.0})
                   for i in range(4)]
        timed(fixed[:1], X, 3)  # warm-up
        times = {"fixed": [], "target_l0": []}
        for _ in range(args.rounds):  # alternate so both see the same machine load
            times["fixed"].append(timed(fixed, X, args.steps))
            times["target_l0"].append(timed(steered, X, args.steps))
        med = {k: statistics.median(t) for k, t in times.items()}
        m = pack(steered)
        l0_K, n = torch.full((4,), 10.0), 2000
        t = time.perf_counter()
        for _ in range(n):
            m.after_step(l0_K, 0.5, 1.0)
            m.sparsity_coeff(0.5)
        ctrl = (time.perf_counter() - t) / n
        step = med["target_l0"] / args.steps
        sps = {k: 4 * args.steps * 1024 / t for k, t in med.items()}
        print(f"{v:<11} fixed {sps['fixed']:9,.0f} samples/s  target_l0 {sps['target_l0']:9,.0f} samples/s  "
              f"time ratio {med['target_l0'] / med['fixed']:.3f} (rounds: "
              + ", ".join(f"{a / b:.3f}" for a, b in zip(times["target_l0"], times["fixed"], strict=True)) + ")")
        print(f"{'':<11} controller alone {ctrl * 1e6:.0f} µs per step = {ctrl / step:.2%} of a "
              f"{step * 1e3:.0f} ms step")


if __name__ == "__main__":
    main()

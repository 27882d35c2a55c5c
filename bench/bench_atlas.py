"""SAEs trained per second for the atlas: packed (one `train_saes` call, one data stream per SAE) vs one by one.

    python bench/bench_atlas.py [--streams 9] [--steps 100] [--n 16] [--m 4] [--variants topk relu ...]

The atlas's situation: S toy models of one shape (n features → m dims), each with its own hidden activations,
and every SAE variant (2n latents, exact L0 = the data's true L0) fit to each. Packed: all S × V SAEs in one call,
so each variant's S SAEs are one module. One by one: S × V calls of one SAE each, on that SAE's stream. Both
are timed in CPU seconds of this process, alternating, in the same run (the ratio is what to read on a shared
machine); the packed SAEs are checked to equal the one-by-one ones.
"""

from __future__ import annotations

import argparse
import time

import torch

from toymodels.groundtruth.atlas import l0_fields
from toymodels.sae import SAEConfig, SAETrainConfig, train_saes

VARIANTS = ["relu", "relu_april", "gated", "p_anneal", "jumprelu", "topk", "abstopk", "batchtopk", "matryoshka",
            "matching_pursuit"]


def streams(S: int, n: int, m: int, N: int, density: float = 0.1) -> tuple[torch.Tensor, float]:
    """[S, N, m] hidden activations of S random n → m dictionaries, and their true L0."""
    g = torch.Generator().manual_seed(0)
    W_SnM = torch.nn.functional.normalize(torch.randn(S, n, m, generator=g), dim=-1)
    x_SNn = (torch.rand(S, N, n, generator=g) < density) * torch.rand(S, N, n, generator=g)
    return x_SNn @ W_SnM, n * density


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--streams", type=int, default=9)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--m", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--variants", nargs="+", default=VARIANTS)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    X, l0 = streams(args.streams, args.n, args.m, 8192)
    d_sae = 2 * args.n
    cfgs, owner = [], []
    for v in args.variants:
        for s in range(args.streams):
            cfgs.append(SAEConfig(variant=v, d_in=args.m, d_sae=d_sae, seed=s, **l0_fields(v, l0, d_sae)))
            owner.append(s)
    tc = SAETrainConfig(steps=args.steps, batch_size=512, lr=3e-3, progress=False)
    packed_s, alone_s = [], []
    for _ in range(args.rounds):
        t = time.process_time()
        together = train_saes(cfgs, X, tc, streams=owner)
        packed_s.append(time.process_time() - t)
        t = time.process_time()
        alone = [train_saes([c], X[s], tc)[0] for c, s in zip(cfgs, owner, strict=True)]
        alone_s.append(time.process_time() - t)
    worst = max(float((a.W_dec - b.W_dec).abs().max()) for a, b in zip(together, alone, strict=True))
    k = len(cfgs)
    p, a = min(packed_s), min(alone_s)
    print(f"{k} SAEs ({len(args.variants)} variants × {args.streams} streams of {args.n}→{args.m}), "
          f"{args.steps} steps, batch 512, CPU seconds (best of {args.rounds}):")
    print(f"  packed     {p:7.2f} s  {k / p:7.2f} SAEs/s  ({len(args.variants)} packed modules)")
    print(f"  one by one {a:7.2f} s  {k / a:7.2f} SAEs/s  ({k} calls)")
    print(f"  packed / one-by-one throughput: {a / p:.1f}×; largest |ΔW_dec| packed vs alone {worst:.1e}")


if __name__ == "__main__":
    main()

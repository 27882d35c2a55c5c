"""Where a TopK-family training step's time goes: CPU ms per step of each piece of `train_saes` (thread CPU time,
medians over the steps of one run), at the settings of `bench_saelens.py` (SAELens-generated data, 1024 features
in 128 dims, width 512, k 13, batch 1024, lr 1e-2, one thread).

    PYTHONPATH=. python bench/profile_step.py [--variants topk,batchtopk,matryoshka,abstopk] [--samples 400000]

Pieces are timed by wrapping the methods the loop calls (nested: `SparseStep.forward` includes `pre_acts` and
the selection; `backward (engine)` includes `SparseStep.backward` and the aux-k loss's backward); "rest of the
loop" is the step minus forward, backward, Adam and the decoder-row projection/normalisation (the loss sum and
finite check, dead-latent counters, history, lr schedule, the batch). Steps with dead latents (the aux-k loss
runs) are reported apart."""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from bench.bench_saelens import BATCH, WIDTH, D, make_data, sae_fields

T: dict[str, list[float]] = {}


def wrap(owner, name: str, label: str) -> None:
    f = getattr(owner, name)

    def timed(*a, **kw):
        t0 = time.thread_time()
        out = f(*a, **kw)
        T.setdefault(label, []).append(time.thread_time() - t0)
        return out

    setattr(owner, name, timed)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variants", default="topk,batchtopk,matryoshka,abstopk")
    ap.add_argument("--samples", type=int, default=400_000)
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    from toymodels.sae import base, batchtopk, sparse_step, topk

    for owner, name, label in [(base.PackedSAE, "pre_acts", "encoder x·W_enc (pre_acts)"),
                               (topk.TopKSAE, "select_entries", "selection"),
                               (batchtopk.BatchTopKSAE, "select_entries", "selection"),
                               (sparse_step.SparseStep, "forward", "SparseStep.forward"),
                               (topk.TopKFamily, "_aux", "aux-k forward"),
                               (torch.Tensor, "backward", "backward (engine)"),
                               (sparse_step.SparseStep, "backward", "SparseStep.backward"),
                               (base.PackedSAE, "pre_step", "decoder-grad projection"),
                               (torch.optim.Adam, "step", "Adam"),
                               (base.PackedSAE, "post_step", "decoder-row normalisation")]:
        wrap(owner, name, label)
    _, X, _ = make_data(a.samples)
    for v in a.variants.split(","):
        profile(v, X, a.samples // BATCH)


def profile(v: str, X: torch.Tensor, steps: int) -> None:
    """Train `v` for `steps` batches of X and print the per-step medians of the timed pieces."""
    from toymodels.sae import SAEConfig, SAETrainConfig, topk, train_saes

    cfg = SAEConfig(variant=v, d_in=D, d_sae=WIDTH, **sae_fields(v))
    stamps, dead = [], []  # batch hand-out times; whether each step has dead latents
    orig = topk.TopKFamily._aux

    def batches():
        for x in X.split(BATCH)[:steps]:
            stamps.append(time.thread_time())
            yield x

    def aux(self, *args):
        dead.append(bool(self.dead_KL.any()))
        return orig(self, *args)

    train_saes([cfg], X[:4 * BATCH], SAETrainConfig(steps=4, batch_size=BATCH, lr=1e-2, progress=False))
    T.clear()
    topk.TopKFamily._aux = aux
    try:
        train_saes([cfg], batches(), SAETrainConfig(steps=steps, batch_size=BATCH, lr=1e-2, progress=False,
                                                    log_every=steps))
    finally:
        topk.TopKFamily._aux = orig
    step = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
    for label, pick in (("no dead latent", False), ("dead latents (aux-k runs)", True)):
        rows = [i for i in range(len(step)) if dead[i] == pick]
        if len(rows) < 5:
            continue
        # one call per step (the decoder normalisation also runs once at init: its first call is dropped)
        med = {name: statistics.median(vs[len(vs) - steps + i] for i in rows) * 1e3
               for name, vs in T.items() if len(vs) >= steps}
        total = statistics.median(step[i] for i in rows) * 1e3
        print(f"{v}, {label}: {len(rows)} steps, {total:.2f} ms/step (median)")
        for name, ms in med.items():
            print(f"  {name:<28} {ms:6.2f} ms  {ms / total:5.1%}")
        rest = total - sum(med.get(n, 0) for n in ("SparseStep.forward", "aux-k forward", "backward (engine)", "Adam",
                                                   "decoder-grad projection", "decoder-row normalisation"))
        print(f"  {'rest of the loop':<28} {rest:6.2f} ms  {rest / total:5.1%}", flush=True)

if __name__ == "__main__":
    main()

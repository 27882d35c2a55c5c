"""Our trainer against an earlier version of itself, in lock-step: the two `train_saes` calls run in two threads
that hand over after every step, so both see the same machine load step by step (on a shared machine a whole
run's time varies by ±15 % from run to run); the per-step thread CPU times give medians and sums per version.
Settings of `bench_saelens.py` (SAELens-generated data, 1024 features in 128 dims, width 512, k 13, batch 1024,
lr 1e-2, one thread).

    git worktree add --detach /tmp/base <commit>   (or: git archive <commit> | tar -x -C /tmp/base)
    PYTHONPATH=. python bench/ab_step.py /tmp/base [--variants topk,...] [--rounds 2] [--samples 400000]

The earlier tree's `toymodels` is copied to a temporary folder as `toymodels_base` (imports rewritten), so both
versions load in one process. MCC (SAELens's `mean_correlation_coefficient`) of both is printed: equal code
paths give equal MCC."""

from __future__ import annotations

import argparse
import importlib
import re
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

from bench.bench_saelens import BATCH, WIDTH, D, make_data, sae_fields


def load_base(tree: str):
    """`toymodels.sae` of the package in `tree`, imported as `toymodels_base.sae`."""
    dst = Path(tempfile.mkdtemp()) / "toymodels_base"
    shutil.copytree(Path(tree) / "toymodels", dst)
    for f in dst.rglob("*.py"):
        f.write_text(re.sub(r"\btoymodels(?=[.\s])", "toymodels_base", f.read_text()))
    sys.path.insert(0, str(dst.parent))
    return importlib.import_module("toymodels_base.sae")


def run(mod, v: str, X, stamps: list, turn: list, me: int, out: list) -> None:
    """Train `v` with package `mod`, yielding the thread to the other version after every step."""
    steps = X.shape[0] // BATCH
    tc = mod.SAETrainConfig(steps=steps, batch_size=BATCH, lr=1e-2, progress=False, log_every=steps)

    def batches():
        for x in X.split(BATCH)[:steps]:
            stamps.append(time.thread_time())
            turn[1 - me].release()
            turn[me].acquire()
            stamps.append(time.thread_time())
            yield x

    turn[me].acquire()
    out.append(mod.train_saes([mod.SAEConfig(variant=v, d_in=D, d_sae=WIDTH, **sae_fields(v))], batches(), tc)[0])
    turn[1 - me].release()


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("base", help="a checkout of the earlier version (its toymodels/ is used)")
    ap.add_argument("--variants", default="topk,batchtopk,matryoshka,abstopk")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--samples", type=int, default=400_000)
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    from sae_lens.synthetic.evals import mean_correlation_coefficient

    import toymodels.sae as new

    base = load_base(a.base)
    model, X, _ = make_data(a.samples)
    gt = model.feature_dict.feature_vectors.detach()
    for v in a.variants.split(","):
        for _ in range(a.rounds):
            turn, stamps, out = [threading.Semaphore(0), threading.Semaphore(0)], ([], []), ([], [])
            threads = [threading.Thread(target=run, args=(mod, v, X, stamps[i], turn, i, out[i]))
                       for i, mod in enumerate((base, new))]
            for t in threads:
                t.start()
            turn[0].release()
            for t in threads:
                t.join()
            # a step's CPU time: from getting the thread back (odd stamps) to the next hand-over (even stamps)
            steps = [[b - s for s, b in zip(st[1::2], st[2::2], strict=False)][2:] for st in stamps]
            med = [statistics.median(s) * 1e3 for s in steps]
            mcc = [mean_correlation_coefficient(o[0].W_dec, gt) for o in out]
            print(f"{v:<11} before {med[0]:6.2f} ms/step (sum {sum(steps[0]):.2f} s)  now {med[1]:6.2f} ms/step "
                  f"(sum {sum(steps[1]):.2f} s)  now/before: median {med[1] / med[0]:.3f}, sum "
                  f"{sum(steps[1]) / sum(steps[0]):.3f}  MCC {mcc[0]:.3f} / {mcc[1]:.3f}", flush=True)


if __name__ == "__main__":
    main()

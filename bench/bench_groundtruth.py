"""Ground-truth benchmark speed: sampling 1M samples of the leaderboard's 1024-in-128 dictionary
(sweeps/benchmark.yaml: Zipf firing, 8 trees of 4 levels with mutually exclusive siblings on the most frequent
features, with and without the low-rank copula), against a reference
measured in the same run (one dense matmul of the same true activations, [1M, 1024] @ [1024, 128], in 64k-row
chunks).

    python bench/bench_groundtruth.py [--n 1000000] [--threads 1] [--repeat 3] [--before old/synthetic.py]
                                      [--leaderboard]

`--before` also times another version of synthetic.py in the same run. Freeze one with its sampler first:
`mkdir -p /tmp/gtbase/before && cp toymodels/groundtruth/{synthetic,sampling}.py /tmp/gtbase/before/`, rename
sampling.py to sampling_before.py and point synthetic.py's `from toymodels.groundtruth.sampling import` at
`from sampling_before import` (the folder is put on sys.path). Times are medians of `--repeat` runs.
`--leaderboard` also times the default leaderboard (sweeps/benchmark.yaml). Times are wall clock and CPU time
of this process (CPU time is steadier on a shared machine).

`--synth16k` times `--n` samples of the published SynthSAEBench-16k law (sweeps/synthsaebench16k.yaml: 16,384
features in 768 dims, SAELens law, dense rank-25 copula, 4-level exclusive trees with child scaling, bias) on
`--threads` threads, with random unit vectors (orthogonality_steps=0: the vectors do not change the sampling
cost); `--superposition` also times the superposition statistics of that dictionary and prints ρ_mm.

    python bench/bench_groundtruth.py --synth16k --threads 2 --repeat 1
"""

import argparse
import dataclasses
import importlib.util
import statistics
import sys
import time
from pathlib import Path

import torch

from toymodels.groundtruth import synthetic


def _load(path):
    sys.path.insert(0, str(Path(path).resolve().parent))
    spec = importlib.util.spec_from_file_location("synthetic_before", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["synthetic_before"] = mod
    spec.loader.exec_module(mod)
    return mod


def _leaderboard_dictionary() -> dict:
    """The SyntheticConfig fields of the default leaderboard's dataset."""
    from toymodels.experiments import compose, to_object

    return dataclasses.asdict(to_object(compose("benchmark", [], kind="benchmark")).dataset)


def _time_sampler(mod, label: str, n: int, repeat: int) -> dict:
    out = {}
    known = {f.name for f in dataclasses.fields(mod.SyntheticConfig)}  # an older module may lack new fields
    base = {k: v for k, v in _leaderboard_dictionary().items() if k in known}
    for corr in ("none", "low_rank"):
        d = mod.Dictionary(mod.SyntheticConfig(**(base | {"correlation": corr})))
        walls, cpus = [], []
        for _ in range(repeat):
            t, c = time.perf_counter(), time.process_time()
            ds = d.sample(n)
            walls.append(time.perf_counter() - t)
            cpus.append(time.process_time() - c)
        wall, cpu = statistics.median(walls), statistics.median(cpus)
        emp = torch.bincount(ds.acts_cols, minlength=d.cfg.n_features) / n
        p = d.density.double()
        z = float(((emp - p).abs() / (p * (1 - p) / n).sqrt().clamp_min(1e-12)).max())
        print(f"{label:>6s} sample {n} ({corr:>8s}): {wall:6.2f}s wall, {cpu:6.2f}s cpu (medians of {repeat}), "
              f"mean L0 {ds.mean_l0():.3f} (expected {d.expected_l0:.3f}), worst firing-rate z-score {z:.1f}",
              flush=True)
        out[corr] = (wall, cpu)
        del ds
    return out


def _time_synth16k(n: int, threads: int, repeat: int, superposition: bool) -> None:
    from toymodels.experiments import compose, to_object

    cfg = to_object(compose("synthsaebench16k", ["dataset.orthogonality_steps=0"], kind="benchmark")).dataset
    t = time.perf_counter()
    d = synthetic.Dictionary(cfg)
    print(f"synthsaebench16k dictionary built in {time.perf_counter() - t:.1f}s", flush=True)
    walls, cpus = [], []
    for _ in range(repeat):
        t, c = time.perf_counter(), time.process_time()
        ds = d.sample(n, threads=threads)
        walls.append(time.perf_counter() - t)
        cpus.append(time.process_time() - c)
        l0 = ds.mean_l0()
        del ds
    print(f"synthsaebench16k sample {n} on {threads} thread(s): {statistics.median(walls):.2f}s wall, "
          f"{statistics.median(cpus):.2f}s cpu (medians of {repeat}), mean L0 {l0:.2f} (published: ~34)", flush=True)
    if superposition:
        t = time.perf_counter()
        s = d.superposition()
        print(f"superposition stats: {time.perf_counter() - t:.1f}s, rho_mm {s['rho_mm']:.4f}, mean p95 "
              f"{s['mean_p95']:.4f}, mean p99 {s['mean_p99']:.4f} (random unit vectors)")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--before", default=None, help="path of another synthetic.py to time in the same run")
    ap.add_argument("--leaderboard", action="store_true")
    ap.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (the sampler uses as many)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--synth16k", action="store_true", help="time only the synthsaebench16k law")
    ap.add_argument("--superposition", action="store_true", help="with --synth16k: also its superposition stats")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    if a.synth16k:
        return _time_synth16k(a.n, a.threads, a.repeat, a.superposition)
    t = {"now": _time_sampler(synthetic, "now", a.n, a.repeat)}
    if a.before:
        t["before"] = _time_sampler(_load(a.before), "before", a.n, a.repeat)
        for corr in ("none", "low_rank"):
            (bw, bc), (nw, nc) = t["before"][corr], t["now"][corr]
            print(f"speed-up ({corr}, {a.threads} thread(s), same run): {bw / nw:.1f}x wall, {bc / nc:.1f}x cpu")
    V = torch.randn(1024, 128)
    c = time.process_time()
    for s in range(0, a.n, 1 << 16):
        A = torch.rand(min(1 << 16, a.n - s), 1024)
        A @ V
    ref = time.process_time() - c
    print(f"reference dense realisation: {ref:.2f}s cpu; sampler/reference (low_rank) = "
          f"{t['now']['low_rank'][1] / ref:.2f}")
    if a.leaderboard:
        from toymodels.experiments import compose, to_object
        from toymodels.groundtruth.benchmark import run_benchmark

        w = time.perf_counter()
        run_benchmark(to_object(compose("benchmark", ["progress=false"], kind="benchmark")))
        print(f"default leaderboard: {time.perf_counter() - w:.0f}s wall")


if __name__ == "__main__":
    main()

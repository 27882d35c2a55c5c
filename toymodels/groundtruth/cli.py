"""`toymodels benchmark ...` (the SAE leaderboard) and `toymodels dataset ...` (ground-truth dataset
files)."""

from __future__ import annotations

import argparse
from pathlib import Path

BENCH_EXAMPLES = """examples:
  toymodels benchmark run                                   # sweeps/benchmark.yaml → results/benchmark/
  toymodels benchmark run --experiment benchmark_tiny steps=100 "variants=[topk,matryoshka]"
  toymodels benchmark score path/to/saelens_sae data.safetensors
"""
RUN_EXAMPLES = """examples:
  toymodels benchmark run                                   # sweeps/benchmark.yaml → results/benchmark/
  toymodels benchmark run --experiment benchmark_tiny steps=100 out=runs/tiny
"""
SCORE_EXAMPLES = """examples:
  toymodels benchmark score runs/saes/topk-128-s0 data.safetensors
  toymodels benchmark score runs/saes/topk-128-s0 data.safetensors --n-eval 5000
"""
MAKE_EXAMPLES = """examples:
  toymodels dataset make data.safetensors n_samples=100000
  toymodels dataset make data.safetensors n_samples=100000 saelens=path/to/synth-sae-bench-16k-v2
  toymodels dataset make data.safetensors n_samples=50000 n_features=256 d_model=32 n_roots=8 depth=3
"""
INFO_EXAMPLES = """examples:
  toymodels dataset info data.safetensors
"""
DATA_EXAMPLES = """examples:
  toymodels dataset make data.safetensors n_samples=100000 n_roots=8 depth=4 tree_nodes=frequent
  toymodels dataset info data.safetensors
"""


def register(sub) -> None:
    p = sub.add_parser("benchmark", help="ground-truth SAE leaderboard and scoring",
                       epilog=BENCH_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    s = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    raw = argparse.RawDescriptionHelpFormatter
    r = s.add_parser("run", help="train and score the SAE grid of a benchmark experiment, "
                                 "write the leaderboard", epilog=RUN_EXAMPLES, formatter_class=raw)
    r.add_argument("--experiment", default="benchmark", help="experiment YAML in sweeps/ (kind: benchmark)")
    r.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. steps=500 'widths=[512,1024]'")
    r.set_defaults(func=_run)
    c = s.add_parser("score", help="score one SAE (a SAELens directory) on a dataset file",
                     epilog=SCORE_EXAMPLES, formatter_class=raw)
    c.add_argument("sae", help="SAELens SAE directory")
    c.add_argument("dataset", help="dataset .safetensors file")
    c.add_argument("--n-eval", type=int, default=20_000,
                   help="score on the first N samples (default 20000); dead_frac counts the latents silent on them")
    c.set_defaults(func=_score)
    d = sub.add_parser("dataset", help="make or inspect ground-truth dataset files",
                       epilog=DATA_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    ds = d.add_subparsers(dest="action", metavar="ACTION", required=True)
    m = ds.add_parser("make", help="sample a synthetic dictionary into a .safetensors file",
                      epilog=MAKE_EXAMPLES, formatter_class=raw)
    m.add_argument("path")
    m.add_argument("overrides", nargs="*", help="n_samples=, sample_seed=, and any SyntheticConfig field")
    m.set_defaults(func=_make)
    e = ds.add_parser("saelens", help="write a law=saelens dictionary as a SAELens SyntheticModel folder",
                      epilog="examples:\n  toymodels dataset saelens out/model law=saelens n_features=256 "
                             "d_model=32 bias=0.5\n", formatter_class=raw)
    e.add_argument("path")
    e.add_argument("overrides", nargs="*", help="SyntheticConfig fields (law=saelens required)")
    e.set_defaults(func=_export)
    i = ds.add_parser("info", help="validate a dataset file and print its shapes and metadata",
                      epilog=INFO_EXAMPLES, formatter_class=raw)
    i.add_argument("path")
    i.set_defaults(func=_info)


def _run(args) -> None:
    from toymodels.experiments import compose, to_object
    from toymodels.groundtruth.benchmark import run_benchmark

    cfg = to_object(compose(args.experiment, args.overrides, kind="benchmark"))
    run_benchmark(cfg)
    print(Path(cfg.out, "leaderboard.md").read_text())
    from toymodels.groundtruth.published import print_published

    print_published(args.experiment, cfg.out)
    print(f"wrote {cfg.out}/results.csv, leaderboard.md, leaderboard.csv, figures/pareto.png/.svg, "
          "figures/data/pareto.csv")


def _score(args) -> None:
    from toymodels.groundtruth.metrics import score_sae

    for k, v in score_sae(args.sae, args.dataset, n_eval=args.n_eval).items():
        print(f"{k:>20s}  {v:.4f}")
    print(f"(on the first {args.n_eval} samples, or all if fewer; dead_frac: latents that never fire on them)")


def _make(args) -> None:
    from toymodels.cli import parse_overrides
    from toymodels.config import SEED_RANGE, _is_int, _is_seed, from_dict, to_dict
    from toymodels.errors import check
    from toymodels.groundtruth.files import save_dataset
    from toymodels.groundtruth.synthetic import Dictionary, SyntheticConfig
    from toymodels.outdir import lock

    kw = parse_overrides(args.overrides)
    n, seed = kw.pop("n_samples", 100_000), kw.pop("sample_seed", 0)
    check(_is_int(n) and n >= 1, "n_samples", "an integer ≥ 1", n)
    check(_is_seed(seed), "sample_seed", SEED_RANGE, seed)
    source = kw.pop("saelens", None)
    if source is not None:
        from toymodels.groundtruth.saelens_io import read_saelens

        check(not kw, "saelens", "given alone (the SAELens model defines the dictionary), not with "
              f"{', '.join(sorted(kw))}", source)
        d = read_saelens(str(source))
        cfg = d.cfg
    else:
        cfg = from_dict(SyntheticConfig, kw)
    with lock(args.path, file=True):  # one file, written by atomic rename; one writer at a time
        ds = (d if source is not None else Dictionary(cfg)).sample(n, seed=seed)
        ds.meta["config"] = {"saelens": str(source)} if source is not None else to_dict(cfg)
        save_dataset(args.path, ds)
    print(f"wrote {args.path}: {n} samples, {cfg.n_features} features in {cfg.d_model} dims, "
          f"mean L0 {ds.mean_l0():.2f}")


def _export(args) -> None:
    from toymodels.cli import parse_overrides
    from toymodels.config import from_dict
    from toymodels.groundtruth.saelens_io import write_saelens
    from toymodels.groundtruth.synthetic import Dictionary, SyntheticConfig

    cfg = from_dict(SyntheticConfig, parse_overrides(args.overrides))
    write_saelens(Dictionary(cfg), args.path)
    print(f"wrote {args.path}: a SAELens SyntheticModel folder ({cfg.n_features} features in {cfg.d_model} dims)")


def _info(args) -> None:
    import json

    from toymodels.groundtruth.files import load_dataset

    ds = load_dataset(args.path)
    acts = "yes" if ds.has_acts else "no"
    print(f"hidden {list(ds.hidden.shape)}, features {ds.n_features}, true acts {acts}, "
          f"mean L0 {ds.mean_l0():.2f}")
    print(json.dumps(ds.meta, indent=1, sort_keys=True)[:2000])

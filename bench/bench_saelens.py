"""Our SAE trainer against SAELens's (`sae_lens.SAETrainer`, the class its runners and `train_toy_sae` use) on
the same SAELens-generated data: samples per CPU-second and MCC (SAELens's `mean_correlation_coefficient`, what
its `eval_sae_on_synthetic_data` reports) at equal samples, one torch thread, alternating rounds.

    PYTHONPATH=. python bench/bench_saelens.py [--variants topk,batchtopk,...] [--samples 500000] [--rounds 3]

Data: `sae_lens.synthetic.SyntheticModel`, 1024 features in 128 dims, close to our leaderboard dataset (Zipfian
firing 0.4 → 0.002 with exponent 0.5, magnitudes |N(1, 0.5)|, SAELens's default low-rank correlation (rank 32,
scale 0.1), no bias), generated once; both trainers get the same batches (batch 1024) in the same order. Each
SAE has width 512 and L0 13 (TopK family: k = 13; penalty variants: ours `target_l0=13` (our controller),
SAELens's JumpReLU its quadratic target-L0 loss with target 13, SAELens's standard/gated a fixed coefficient,
`--coeffs`).
Both use the same peak lr (`--lr`, default 1e-2) and each trainer's own defaults otherwise (ours: Adam, lr
decays over the last 20 %, data normalised to E‖x‖² = d_in, unit-norm decoder rows; SAELens: Adam, constant lr,
grad-norm clipping at 1, no normalisation, decoder rows initialised at norm 0.1, as `train_toy_sae`); both
recipes are printed. `--ours-recipe key=value,...` overrides our `SAETrainConfig` / variant-config fields for
every variant (e.g. decay_frac=0,normalize=false,init_scale=0.1). Why 1e-2: at 1e-3 both trainers are far from
converged after a few hundred steps and SAELens's MCC is ahead only because its 0.1-norm init makes each Adam
step ~10× larger relative to its weights (our init_scale=0.1 closes most of that gap at 1e-3); at 1e-2 (the
best of 1e-3, 3e-3, 1e-2, 3e-2 for both on TopK at 300k samples) the MCCs meet.
Held-out L0 (16k samples): each library's inference encoder, so BatchTopK/Matryoshka use their EMA inference
threshold on both sides (SAELens's saved JumpReLU form), not a batch top-k.
With `--seeds`, round r initialises both libraries' SAEs with seed r (same data), so MCC and L0 are medians over
rounds and the MCC ranges show whether a gap is beyond seed noise; without it every round is seed 0.
Timed: CPU time (`time.process_time`) of one whole training call
(trainer construction, all steps, final fold), data already in memory. Rounds alternate ours/theirs per
variant, so both see the same machine load; the table gives per-library medians and the ratio of medians.

Variant map (ours → SAELens architecture): relu → standard (apply_b_dec_to_input; its L1 is weighted by the
decoder row norms, ours are unit norm); relu_april → standard (apply_b_dec_to_input=False); topk → topk;
batchtopk → batchtopk; matryoshka → matryoshka_batchtopk (widths 64, 128, 256, 512 = our default prefixes);
abstopk → abstopk; jumprelu → jumprelu; gated → gated; matching_pursuit → matching_pursuit (max_iterations =
k). p_anneal has no SAELens counterpart (timed alone with `--variants p_anneal`, ratio against standard)."""

from __future__ import annotations

import argparse
import os
import statistics
import time
import warnings

os.environ.setdefault("TQDM_DISABLE", "1")  # SAELens's progress bar

import torch  # noqa: E402

K, WIDTH, BATCH, D, F = 13, 512, 1024, 128, 1024
PREFIXES = [64, 128, 256, 512]
DEFAULT_COEFFS = {"standard": 0.9, "standard_april": 0.9, "gated": 0.9}
"""SAELens L1 coefficients (on its unnormalised data) for the penalty variants without L0 control: near L0 13 at
400k samples, lr 1e-2 (2.0 gave L0 1.9 / 3.3; 0.8 gave standard 16.0, standard_april 15.3; gated 0.9 12.2)."""
SAELENS = {"relu": "standard", "relu_april": "standard_april", "topk": "topk", "batchtopk": "batchtopk",
           "matryoshka": "matryoshka_batchtopk", "abstopk": "abstopk", "jumprelu": "jumprelu", "gated": "gated",
           "matching_pursuit": "matching_pursuit", "p_anneal": "standard"}


def make_data(n: int, seed: int = 0):
    """(SyntheticModel, [n, D] hidden activations, their true L0)."""
    from sae_lens.synthetic import SyntheticModel, ZipfianFiringProbabilityConfig
    from sae_lens.synthetic.synthetic_model import LowRankCorrelationConfig, SyntheticModelConfig

    cfg = SyntheticModelConfig(
        num_features=F, hidden_dim=D, seed=seed, bias=False, std_firing_magnitudes=0.5, mean_firing_magnitudes=1.0,
        firing_probability=ZipfianFiringProbabilityConfig(exponent=0.5, max_prob=0.4, min_prob=0.002),
        correlation=LowRankCorrelationConfig(rank=32, correlation_scale=0.1, seed=seed))
    model = SyntheticModel(cfg)
    torch.manual_seed(seed + 1)
    xs, l0 = [], 0.0
    for i in range(0, n, 65536):
        h, f = model.sample_with_features(min(65536, n - i))
        xs.append(h.float())
        l0 += float((f > 0).sum())
    return model, torch.cat(xs), l0 / n


def parse_recipe(text: str) -> tuple[dict, dict]:
    """`--ours-recipe` "key=value,..." → (SAETrainConfig fields, SAEConfig fields): every key that
    `SAETrainConfig` has goes to the trainer, any other to each variant's config (a key a variant lacks is its
    one-line ConfigError). Values parse as the CLI's overrides (YAML)."""
    import dataclasses

    from toymodels.cli import parse_overrides
    from toymodels.sae import SAETrainConfig

    train_keys = {f.name for f in dataclasses.fields(SAETrainConfig)}
    kv = parse_overrides([p for p in text.split(",") if p])
    return ({k: v for k, v in kv.items() if k in train_keys}, {k: v for k, v in kv.items() if k not in train_keys})


def sae_fields(variant: str) -> dict:
    """Our config fields of `variant` at the bench's settings (k or target L0 = K; Matryoshka's prefixes)."""
    kw = {"k": K} if variant in ("topk", "batchtopk", "matryoshka", "abstopk", "matching_pursuit") else \
        {"target_l0": float(K)}
    if variant == "matryoshka":
        kw["prefixes"] = PREFIXES
    if variant == "jumprelu":
        kw["threshold_lr_scale"] = 3.0  # penalty.py: what the controller needs to reach its target
    return kw


def ours(variant: str, X: torch.Tensor, lr: float, seed: int = 0, recipe: tuple[dict, dict] = ({}, {})):
    """Train our `variant` (with `recipe` = parse_recipe's overrides); return (CPU seconds, W_dec [L, D],
    TrainedSAE)."""
    from toymodels.sae import SAEConfig, SAETrainConfig, train_saes

    cfg = SAEConfig(variant=variant, d_in=D, d_sae=WIDTH, seed=seed, **sae_fields(variant), **recipe[1])
    steps = X.shape[0] // BATCH
    tc = SAETrainConfig(**{"steps": steps, "batch_size": BATCH, "lr": lr, "progress": False,
                           "log_every": max(1, steps), **recipe[0]})
    t = time.process_time()
    (sae,) = train_saes([cfg], iter(X.split(BATCH)), tc)
    return time.process_time() - t, sae.W_dec.detach(), sae


def saelens_sae(arch: str, coeffs: dict):
    import sae_lens.saes as S

    base = {"d_in": D, "d_sae": WIDTH}
    # built on demand: building every config would warn for each (SAELens's matching_pursuit config warns)
    table = {
        "standard": lambda: (S.StandardTrainingSAE, S.StandardTrainingSAEConfig(
            **base, l1_coefficient=coeffs["standard"])),
        "standard_april": lambda: (S.StandardTrainingSAE, S.StandardTrainingSAEConfig(
            **base, l1_coefficient=coeffs["standard_april"], apply_b_dec_to_input=False)),
        "topk": lambda: (S.TopKTrainingSAE, S.TopKTrainingSAEConfig(**base, k=K)),
        "batchtopk": lambda: (S.BatchTopKTrainingSAE, S.BatchTopKTrainingSAEConfig(**base, k=K)),
        "matryoshka_batchtopk": lambda: (S.MatryoshkaBatchTopKTrainingSAE, S.MatryoshkaBatchTopKTrainingSAEConfig(
            **base, k=K, matryoshka_widths=PREFIXES)),
        "abstopk": lambda: (S.AbsTopKTrainingSAE, S.AbsTopKTrainingSAEConfig(**base, k=K)),
        "jumprelu": lambda: (S.JumpReLUTrainingSAE, S.JumpReLUTrainingSAEConfig(
            **base, jumprelu_sparsity_loss_mode="quadratic", target_l0=float(K))),
        "gated": lambda: (S.GatedTrainingSAE, S.GatedTrainingSAEConfig(**base, l1_coefficient=coeffs["gated"])),
        "matching_pursuit": lambda: (S.MatchingPursuitTrainingSAE,
                                     S.MatchingPursuitTrainingSAEConfig(**base, max_iterations=K)),
    }
    cls, cfg = table[arch]()
    return cls(cfg)


def theirs(arch: str, X: torch.Tensor, lr: float, coeffs: dict, seed: int = 0):
    """Train SAELens's `arch` with its SAETrainer; return (CPU seconds, W_dec [L, D], the SAE)."""
    from sae_lens.config import LoggingConfig, SAETrainerConfig
    from sae_lens.training.sae_trainer import SAETrainer

    torch.manual_seed(seed)
    t = time.process_time()
    sae = saelens_sae(arch, coeffs)
    cfg = SAETrainerConfig(total_training_samples=X.shape[0] // BATCH * BATCH, train_batch_size_samples=BATCH,
                           lr=lr, lr_end=lr, logger=LoggingConfig(log_to_wandb=False))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        SAETrainer(cfg=cfg, sae=sae, data_provider=iter(X.split(BATCH))).fit()
    return time.process_time() - t, sae.W_dec.detach(), sae


@torch.no_grad()
def l0_of(encode, X_eval: torch.Tensor) -> float:
    return float((encode(X_eval) != 0).float().sum(-1).mean())


def saelens_inference_encode(sae):
    """SAELens's encoder as its saved inference SAE computes it: BatchTopK/Matryoshka become JumpReLU at the
    EMA `topk_threshold` (its training-mode encode is a batch top-k, whose L0 is k by construction)."""
    if not hasattr(sae, "topk_threshold"):
        return sae.encode

    def encode(x):
        pre = sae.encode_with_hidden_pre(x)[1]  # in units of hidden_pre · ‖W_dec‖, as the threshold
        return pre.relu() * (pre > sae.topk_threshold.to(pre.dtype))
    return encode


def recipes(lr: float, ours_lr: float, tkw: dict, ckw: dict) -> tuple[str, str]:
    """One line per side saying how it trains."""
    from toymodels.sae import SAETrainConfig

    tc = SAETrainConfig(**{"lr": ours_lr, **tkw})
    sched = f"lr decays to 0 over the last {tc.decay_frac:.0%}" if tc.decay_frac else "constant lr"
    norm = "data normalised to E‖x‖² = d_in" if tc.normalize else "raw data"
    init = ckw.get("init_scale", 1.0)
    ours_line = (f"ours: Adam lr {ours_lr:g}, {sched}, {norm}, unit-norm decoder rows (encoder init = decoder "
                 f"rows × {init:g}), b_dec at the batch mean, TopK family: aux-k α=1/32 once a latent is dead for "
                 f"{tc.dead_after:,} samples" + (f"; overrides {tkw | ckw}" if tkw or ckw else ""))
    theirs_line = (f"SAELens: Adam lr {lr:g} constant, grad-norm clip 1, raw data, decoder rows init at norm 0.1 "
                   f"(free afterwards; TopK family rescales activations by ‖W_dec‖), b_dec 0, TopK family: aux-k "
                   f"α=1 once a latent is dead for 1000 steps")
    return ours_line, theirs_line


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variants", default="topk,batchtopk,matryoshka,abstopk,jumprelu,gated,relu,relu_april,"
                                          "matching_pursuit")
    ap.add_argument("--samples", type=int, default=500_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--lr", type=float, default=1e-2, help="peak lr of both (1e-2: the best of 1e-3…3e-2 for both "
                                                           "at 300k samples; at 1e-3 both are far from converged)")
    ap.add_argument("--ours-lr", type=float, default=None, help="our peak lr if not --lr (MCC at equal samples)")
    ap.add_argument("--ours-recipe", default="", help="overrides of our trainer/config for every variant, e.g. "
                                                      "decay_frac=0,normalize=false,init_scale=0.1")
    ap.add_argument("--coeffs", default="", help="SAELens L1 coefficients, e.g. standard=2,gated=2,standard_april=2")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seeds", action="store_true", help="round r inits both libraries' SAEs with seed r (MCC and L0 "
                                                         "are then medians over rounds, with the MCC range)")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    coeffs = dict(DEFAULT_COEFFS, **{k: float(v) for k, v in (p.split("=") for p in a.coeffs.split(",") if p)})
    recipe = parse_recipe(a.ours_recipe)
    import sae_lens
    from sae_lens.synthetic.evals import mean_correlation_coefficient

    model, X, true_l0 = make_data(a.samples + 16384)
    X, X_eval = X[:a.samples], X[a.samples:]
    gt = model.feature_dict.feature_vectors.detach()
    print(f"sae_lens {sae_lens.__version__}, torch {torch.__version__}, {torch.get_num_threads()} thread(s); data "
          f"{F} features in {D} dims, true L0 {true_l0:.2f}; width {WIDTH}, L0/k {K}, batch {BATCH}, "
          f"{a.samples:,} samples, lr {a.lr} (ours {a.ours_lr or a.lr}), {a.rounds} rounds")
    print("\n".join(recipes(a.lr, a.ours_lr or a.lr, *recipe)))
    ours("topk", X[:4 * BATCH], a.lr)  # warm-up (imports, allocator)
    theirs("topk", X[:4 * BATCH], a.lr, coeffs)
    rows = []
    for v in a.variants.split(","):
        arch = SAELENS[v]
        t_ours, t_theirs, mcc_ours, mcc_theirs, l0_ours, l0_theirs = [], [], [], [], [], []
        for r in range(a.rounds):
            seed = r if a.seeds else 0  # the SAEs' init seed (both libraries); the data is the same
            s, W_ours, sae_ours = ours(v, X, a.ours_lr or a.lr, seed=seed, recipe=recipe)
            t_ours.append(s)
            s, W_theirs, sae_theirs = theirs(arch, X, a.lr, coeffs, seed=seed)
            t_theirs.append(s)
            mcc_ours.append(mean_correlation_coefficient(W_ours, gt))
            mcc_theirs.append(mean_correlation_coefficient(W_theirs, gt))
            l0_ours.append(l0_of(sae_ours.encode, X_eval))
            l0_theirs.append(l0_of(saelens_inference_encode(sae_theirs), X_eval))
        so, st = a.samples / statistics.median(t_ours), a.samples / statistics.median(t_theirs)
        med = statistics.median
        row = dict(variant=v, saelens=arch, ours_sps=so, saelens_sps=st, ratio=so / st,
                   ours_mcc=med(mcc_ours), saelens_mcc=med(mcc_theirs), ours_l0=med(l0_ours),
                   saelens_l0=med(l0_theirs),
                   mcc_range=f"{min(mcc_ours):.3f}–{max(mcc_ours):.3f} vs {min(mcc_theirs):.3f}–{max(mcc_theirs):.3f}",
                   rounds=", ".join(f"{b / o:.2f}" for o, b in zip(t_ours, t_theirs, strict=True)))
        rows.append(row)
        print(f"{v:<17} {arch:<21} ours {so:8,.0f}/s  SAELens {st:8,.0f}/s  ×{so / st:5.2f} (rounds {row['rounds']})"
              f"  MCC {row['ours_mcc']:.3f} vs {row['saelens_mcc']:.3f}"
              + (f" (ranges {row['mcc_range']})" if a.seeds else "")
              + f"  L0 {row['ours_l0']:.1f} vs {row['saelens_l0']:.1f}", flush=True)
    print("\n| variant | SAELens arch | ours samples/CPU-s | SAELens samples/CPU-s | ratio | MCC ours | MCC SAELens "
          "| L0 ours | L0 SAELens |\n|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['variant']} | {r['saelens']} | {r['ours_sps']:,.0f} | {r['saelens_sps']:,.0f} | "
              f"{r['ratio']:.2f}× | {r['ours_mcc']:.3f} | {r['saelens_mcc']:.3f} | {r['ours_l0']:.1f} | "
              f"{r['saelens_l0']:.1f} |")


if __name__ == "__main__":
    main()

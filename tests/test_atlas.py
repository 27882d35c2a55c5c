"""The recoverability atlas: streams packing, the ceilings, the sweep kind, and (slow) its acceptance checks on the
gallery's quick cut."""

import math

import pandas as pd
import pytest
import torch

from toymodels.errors import ConfigError
from toymodels.groundtruth.atlas import AtlasConfig, cell_stats
from toymodels.groundtruth.ceilings import cs_boundary_l0, feature_f1, omp


def test_streams_packed_equals_alone(assert_packed_equals_alone):
    """SAEs of one variant on different data streams train as one module and equal each SAE alone on its stream."""
    from toymodels.sae import SAEConfig, SAETrainConfig, train_saes

    g = torch.Generator().manual_seed(0)
    X = torch.rand(3, 1000, 5, generator=g) * (torch.rand(3, 1000, 5, generator=g) < 0.3)
    X = X * torch.tensor([1.0, 3.0, 0.5])[:, None, None]  # each stream is normalised on its own
    tc = SAETrainConfig(steps=10, batch_size=100, lr=3e-3, progress=False, resample_every=5, dead_after=100)
    for v, kw in (("batchtopk", {"k": 1.5}), ("relu", {"target_l0": 1.5})):  # (every variant: bench_atlas.py)
        cfgs = [SAEConfig(variant=v, d_in=5, d_sae=8, seed=s, **kw) for s in range(3)]
        together = train_saes(cfgs, X, tc, streams=[2, 0, 2])
        for c, a, s in zip(cfgs, together, [2, 0, 2], strict=True):
            (b,) = train_saes([c], X[s], tc)
            for name, t in a.tensors().items():
                torch.testing.assert_close(t, b.tensors()[name], rtol=1e-4, atol=1e-5, msg=f"{v} {name}")
            assert a.scale == pytest.approx(b.scale)
    with pytest.raises(ConfigError, match="streams"):
        train_saes(cfgs, X, tc, streams=[0, 3, 1])
    with pytest.raises(ConfigError, match="streams"):
        train_saes(cfgs, X[0], tc, streams=[0, 0, 0])


def test_omp_finds_sparse_codes_and_its_mean_l0_is_the_true_l0():
    g = torch.Generator().manual_seed(0)
    D_LD = torch.nn.functional.normalize(torch.randn(24, 16, generator=g), dim=1)
    x_NL = (torch.rand(800, 24, generator=g) < 0.06) * (0.2 + torch.rand(800, 24, generator=g))
    steps = (x_NL != 0).sum(1)
    a = omp(x_NL @ D_LD, D_LD, steps)
    exact = ((a != 0) == (x_NL != 0)).all(1).float().mean()
    assert exact >= 0.97, exact
    assert float((a != 0).sum(1).float().mean()) == pytest.approx(float(steps.float().mean()), rel=0.02)
    assert feature_f1(a, x_NL) >= 0.98
    # a dictionary rotated away from the truth scores lower with the same solver
    Q, _ = torch.linalg.qr(torch.randn(16, 16, generator=g))
    assert feature_f1(omp(x_NL @ D_LD, D_LD @ Q, steps), x_NL) < 0.7  # measured 0.51


def test_omp_refit_is_least_squares_on_its_support_and_stops_at_a_duplicate_atom():
    """The incremental Cholesky refit equals a fresh least-squares solve on each sample's support; an atom in
    the span of the support (here an exact copy) stops the sample instead of breaking the factor."""
    g = torch.Generator().manual_seed(2)
    D_LD = torch.randn(12, 6, generator=g)
    h_ND = torch.rand(300, 12, generator=g) @ D_LD
    a = omp(h_ND, D_LD, torch.full((300,), 5)).double()
    A = torch.nn.functional.normalize(D_LD.double(), dim=1)
    for i in range(0, 300, 37):
        sup = a[i].nonzero()[:, 0]
        want = torch.linalg.lstsq(A[sup].T, h_ND[i].double()[:, None]).solution[:, 0]
        torch.testing.assert_close(a[i, sup], want, rtol=1e-5, atol=1e-6)
    dup = torch.cat([D_LD[:3], D_LD[:1]])  # atom 3 = atom 0
    b = omp(D_LD[0:1] * 2 + D_LD[1:2], dup, torch.tensor([4]))
    assert bool(torch.isfinite(b).all()) and (b[0, 0] == 0 or b[0, 3] == 0)


def test_cs_boundary_is_the_donoho_tanner_asymptote():
    assert cs_boundary_l0(8, 8) == 8 and cs_boundary_l0(4, 8) == 8
    assert cs_boundary_l0(64, 8) == pytest.approx(8 / (2 * math.log(8)))
    assert cs_boundary_l0(16, 8) == pytest.approx(8 / (2 * math.log(2)))
    assert cs_boundary_l0(9, 8) == 8  # capped at m


@pytest.mark.parametrize("kw,field", [(dict(densities=[0.0]), "densities"), (dict(variants=["nope"]), "variants"),
                                      (dict(n_values=[3], m_values=[]), "set_size"),
                                      (dict(importance_last=[2.0]), "importance_last"),
                                      (dict(model="hidden_relu"), "model"), (dict(seeds=0), "seeds")])
def test_atlas_config_errors_are_one_line(kw, field):
    with pytest.raises(ConfigError, match=field) as e:
        AtlasConfig(**kw)
    assert "\n" not in str(e.value)


def test_tiny_atlas_runs_from_the_cli_and_resumes(tmp_path, capsys):
    """`toymodels sweep atlas` with a tiny grid: the table, summary, maps and run record; a rerun resumes."""
    from toymodels.cli import main

    out = tmp_path / "atlas"
    args = ["sweep", "atlas", "m_fixed=2", "n_values=[4]", "m_values=[]", "densities=[0.3]",
            "importance_last=[1.0]", "structures=[independent,hierarchical]", "seeds=2", "toy_steps=150",
            "sae_steps=20", "n_train=512", "n_eval=256", "variants=[topk,relu]", "n_jobs=1", f"out={out}"]
    assert main(args) == 0
    df = pd.read_csv(out / "results.csv")
    assert len(df) == 2 * 2 * 2  # variants × structures × seeds
    for col in ("mmcs", "mcc", "feature_f1", "f1", "explained_variance", "l0", "dead_frac", "ceiling_f1",
                "ceiling_ev", "dict_f1", "absorption", "cs_boundary_l0", "recovered", "true_l0", "target_l0",
                "l0_trained"):
        assert col in df, col
    assert df.query("structure == 'hierarchical'").absorption.notna().any()
    assert df.query("structure == 'independent'").absorption.isna().all()
    run = pd.read_json(out / "run.json", typ="series")
    assert run["sae_programs"] == 2 and run["toy_programs"] == 2 and run["saes"] == 8
    assert (out / "summary.md").read_text().count("| topk |") == 1
    assert (out / "map_hierarchical_imp1.png").is_file()
    assert main(args) == 0
    assert pd.read_json(out / "run.json", typ="series")["resumed"] == 1
    pd.testing.assert_frame_equal(pd.read_csv(out / "results.csv"), df)


# ---------------------------------------------------------------- acceptance, on the gallery's quick cut (slow)


@pytest.fixture(scope="module")
def quick(tables):
    return tables("sae_recovery")


@pytest.mark.slow
def test_quick_atlas_has_every_variant_and_three_seeds_per_cell(quick):
    from toymodels.paper.sae_recovery import config

    assert set(quick.variant) == set(config().variants)
    assert (cell_stats(quick, "mmcs")["count"] == 3).all()


@pytest.mark.slow
def test_ceiling_is_never_below_an_sae_beyond_seed_noise(quick):
    """True dictionary + per-sample OMP (feature F1) ≥ every SAE's feature F1 in every sparse cell, beyond the seeds'
    range. Density 1 is left out: every feature is on in every sample, so a latent that always fires is a
    perfect detector and F1 says nothing (measured: relu_april at 16→4 reaches F1 1.00 by firing at 2× the
    target L0, against the ceiling's 0.97, OMP being capped at m = 4 atoms per sample)."""
    sparse = quick[quick.density < 1]
    sae, ceil = cell_stats(sparse, "feature_f1"), cell_stats(sparse, "ceiling_f1")
    gap = ceil["median"].to_numpy() - sae["median"].to_numpy()
    noise = sae["spread"].to_numpy() + ceil["spread"].to_numpy()
    assert (gap >= -noise).all(), sae[gap < -noise]


@pytest.mark.slow
def test_without_superposition_topk_and_mp_recover_every_feature_of_sparse_data(quick):
    """m ≥ n (4→4, 8→8) at density 0.1: TopK and Matching Pursuit find every represented feature on every seed
    (measured min MMCS 0.990 and 0.988; the other variants' medians are 0.71–0.99 under this short recipe)."""
    sub = quick[(quick.m >= quick.n) & (quick.density == 0.1) & quick.variant.isin(["topk", "matching_pursuit"])]
    assert len(sub) == 2 * 2 * 3 and (sub.mmcs >= 0.98).all(), sub[["variant", "n", "seed", "mmcs"]]


@pytest.mark.slow
def test_at_density_one_no_variant_identifies_the_features(quick):
    """Density 1 (every feature always on) at the exact true L0 = n: the sparsity constraint is void and any
    invertible mix of the features reconstructs as well, so no variant recovers the features even at m ≥ n
    (measured median MMCS 0.64–0.72). The issue's '≥ 0.99 at density 1 and m ≥ n' cannot hold at exact L0."""
    sub = quick[(quick.m >= quick.n) & (quick.density == 1)]
    assert (sub.groupby("variant").mmcs.median() < 0.9).all()


@pytest.mark.slow
def test_at_density_one_a_fixed_l1_penalty_and_long_training_do_not_identify_the_features_either():
    """Not an artefact of exact L0 or of short runs: at 4 → 8, density 1, 2n latents, a ReLU SAE with a fixed L1
    coefficient (0.1, no L0 target) trained 3000 steps reconstructs almost perfectly yet does not find the
    features (measured EV 0.995, MMCS 0.56–0.63 over 3 seeds, down from 0.70–0.79 at 600 steps; TopK k = n:
    EV 1.000, MMCS 0.66–0.84). Dense U[0,1] magnitudes are sub-Gaussian, and a mix of features is closer to
    Gaussian, so it has a smaller mean |code| at equal variance: L1 pulls the decoder towards mixtures."""
    from toymodels.config import ToyConfig, TrainConfig
    from toymodels.groundtruth.metrics import cos
    from toymodels.groundtruth.toydata import toy_dataset
    from toymodels.sae import SAEConfig, SAETrainConfig, train_saes
    from toymodels.train import train

    n, m = 4, 8
    toy = train(ToyConfig(n_features=n, n_hidden=m, density=[[1.0] * n] * 3),
                TrainConfig(steps=3000, lr=3e-3, progress=False, seed=1))
    data = [toy_dataset(toy, i, n_samples=16384 + 4096, seed=10 + i) for i in range(3)]
    cfgs = [SAEConfig(variant=v, d_in=m, d_sae=2 * n, seed=i, **kw) for i in range(3)
            for v, kw in (("relu", {"l1_coeff": 0.1}), ("topk", {"k": n}))]
    saes = train_saes(cfgs, torch.stack([ds.hidden[:16384] for ds in data]),
                      SAETrainConfig(steps=3000, batch_size=512, lr=3e-3, progress=False),
                      streams=[i for i in range(3) for _ in range(2)])
    for c, sae in zip(cfgs, saes, strict=True):
        ds = data[c.seed]
        h = ds.hidden[16384:]
        ev = 1 - float((sae.decode(sae.encode(h)) - h).pow(2).sum() / (h - h.mean(0)).pow(2).sum())
        mmcs = float(cos(sae.W_dec, ds.feature_vectors).max(1).values.mean())
        assert ev >= 0.98 and mmcs <= (0.75 if c.variant == "relu" else 0.9), (c.variant, c.seed, ev, mmcs)


@pytest.mark.slow
def test_every_variant_is_at_the_exact_true_l0_where_it_can_be(quick):
    """Calibrated variants (all but TopK, AbsTopK, Matching Pursuit, whose k is an integer) that reconstruct at all
    (explained variance > 0.2) sit at the cell's true L0 on held-out samples: median within ±2 % per variant
    (measured +0.2 … +1.2 %), and ≥ 97 % within ±10 % (the held-out samples' own true L0 differs from the training
    samples' by up to ±8 %; measured 166 of 169). SAEs that barely reconstruct are calibrated too, but their
    held-out L0 is looser: over all SAEs the medians are +0.8 … +2.1 % (relu_april's +2.1 % comes from its 17 of 30
    SAEs with EV < 0.2 in this 300-step cut; with the L0 controller of TRAINING_REVISION 1 every all-SAE median
    was within 2 %). Every variant's median is above 1, probably because the calibration is fit on the training
    samples, which the SAEs have seen (~9 epochs), so fresh samples open slightly more gates (not measured).
    Left out: density 1 with n > m, where the true L0 (every represented feature) exceeds what m dimensions let any
    gate open."""
    sub = quick[~quick.variant.isin(["topk", "abstopk", "matching_pursuit"]) & ~((quick.density == 1) &
                                                                               (quick.n > quick.m))]
    sub = sub[sub.explained_variance > 0.2]
    ratio = sub.l0 / sub.true_l0
    assert ((ratio.groupby(sub.variant).median() - 1).abs() <= 0.02).all(), ratio.groupby(sub.variant).median()
    assert sub.variant.nunique() == 7 and ((ratio - 1).abs() <= 0.1).mean() >= 0.97, sub[(ratio - 1).abs() > 0.1]


@pytest.mark.slow
def test_recovery_falls_as_n_over_m_grows_at_fixed_density(quick):
    """At m = 4 and every density below 1, the mean share of represented features recovered (over variants and
    seeds) falls from 4→4 to 8→4 to 16→4."""
    sub = quick[(quick.m == 4) & (quick.density < 1)]
    rec = sub.groupby(["density", "n"]).recovered.mean().unstack("n")
    assert (rec[4] >= rec[8]).all() and (rec[8] >= rec[16]).all(), rec

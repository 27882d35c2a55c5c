"""Ground-truth datasets (sampling law, files, toy-model data) and the leaderboard end to end on a tiny
config."""

import pandas as pd
import pytest
import torch

from toymodels.errors import ConfigError, DataFileError
from toymodels.groundtruth.files import load_dataset, save_dataset
from toymodels.groundtruth.synthetic import Dictionary, SyntheticConfig


def test_config_errors_name_the_field():
    with pytest.raises(ConfigError, match="p_min"):
        SyntheticConfig(p_min=0.9, p_max=0.5)
    with pytest.raises(ConfigError, match="n_roots"):
        SyntheticConfig(n_features=10, n_roots=5, branching=4, depth=2)
    with pytest.raises(ConfigError, match="tree_nodes"):
        SyntheticConfig(tree_nodes="leaves")


@pytest.mark.parametrize(("correlation", "tree_nodes"),
                         [("none", "random"), ("low_rank", "random"), ("low_rank", "frequent")])
def test_sampler_matches_the_law(correlation, tree_nodes):
    d = Dictionary(SyntheticConfig(n_features=64, d_model=16, p_min=0.02, correlation=correlation, n_roots=4,
                                   branching=2, depth=3, mutually_exclusive=True, tree_nodes=tree_nodes))
    ds = d.sample(40_000, seed=1)
    emp = torch.bincount(ds.acts_cols, minlength=64) / 40_000
    sd = (d.density * (1 - d.density) / 40_000).sqrt()
    assert ((emp - d.density).abs() <= 5 * sd + 1e-6).all()  # exact marginals, copula or not
    acts = ds.true_acts()
    assert torch.allclose(acts @ ds.feature_vectors, ds.hidden, atol=1e-4)  # h = Σ a_f v_f exactly
    kids = (d.parent >= 0).nonzero()[:, 0]
    assert ((acts[:, kids] != 0) <= (acts[:, d.parent[kids]] != 0)).all()  # children only fire with parent
    for par in d.parent[kids].unique():  # mutually exclusive siblings
        assert ((acts[:, (d.parent == par).nonzero()[:, 0]] != 0).sum(1) <= 1).all()


def test_frequent_tree_nodes_are_the_most_frequent_features_level_by_level():
    cfg = dict(n_features=64, d_model=16, n_roots=4, branching=2, depth=3)
    d = Dictionary(SyntheticConfig(**cfg, tree_nodes="frequent"))
    par = d.parent
    assert (par[:4] == -1).all()  # Zipf rates fall with the index: the 4 most frequent are the roots
    assert set(par[4:12].tolist()) == {0, 1, 2, 3} and set(par[12:28].tolist()) == set(range(4, 12))
    assert (par[28:] == -1).all()
    assert (d.density[par[4:28]] >= d.density[4:28]).all()  # each child fires no more often than its parent
    r = Dictionary(SyntheticConfig(**cfg))  # random nodes: same vectors, a different layout
    assert torch.equal(r.vectors, d.vectors) and not torch.equal(r.parent, d.parent)


@pytest.mark.parametrize("p_max", [0.3, 1.0])
def test_copula_joint_firing_is_exact(p_max):
    """Two features on one factor fire together with the bivariate-normal probability of their latent
    Gaussians (correlation +ρ for equal signs, −ρ for opposite): the grid-and-thinning sampler adds no
    approximation."""
    from scipy.stats import multivariate_normal

    rho, n = 0.6, 60_000
    d = Dictionary(SyntheticConfig(n_features=12, d_model=8, firing="linear", p_max=p_max, p_min=0.05,
                                   correlation_rank=1, correlation_scale=rho, seed=3))
    ds = d.sample(n, seed=2)
    on = ds.true_acts() != 0
    assert ds.meta["copula_clip_fraction"] < 1e-4
    t = torch.special.ndtri(d.density.double().clamp(max=1 - 1e-12)).numpy()
    s = d.sign.numpy()
    for f, g in [(0, 1), (2, 7), (4, 11), (9, 10)]:
        r = rho * s[f] * s[g]
        p = multivariate_normal(mean=[0, 0], cov=[[1, r], [r, 1]]).cdf([t[f], t[g]])
        emp = float((on[:, f] & on[:, g]).float().mean())
        assert abs(emp - p) <= 5 * (p * (1 - p) / n) ** 0.5 + 1e-4, (f, g, emp, p)


def test_guided_search_matches_searchsorted():
    import numpy as np

    from toymodels.groundtruth.sampling import GuidedSearch

    g = np.random.default_rng(0)
    steps = g.random(5000)
    steps[1000:3000] = 1e-9  # a crowded stretch of tiny intervals
    steps[3000:3010] = 0.0  # and empty ones
    a = np.cumsum(steps)
    x = g.random(20_000) * a[-1]
    x[:5] = a[[0, 1500, 2999, 3005, -1]]  # exactly on boundaries
    for side in ("left", "right"):
        want = np.searchsorted(a, x, side=side).clip(max=len(a) - 1)
        for bins in (None, 7):
            assert np.array_equal(GuidedSearch(a, bins)(x.copy(), right=side == "right"), want)


def test_low_rank_copula_correlates_features():
    kw = dict(n_features=32, d_model=8, firing="constant", p_max=0.1, correlation_rank=1)
    dicts = [Dictionary(SyntheticConfig(correlation=c, correlation_scale=0.8, **kw))
             for c in ("none", "low_rank")]
    on = [(d.sample(20_000).true_acts() != 0).float() for d in dicts]
    corr = [torch.corrcoef(o.T).fill_diagonal_(0).abs().mean() for o in on]
    assert corr[1] > 5 * corr[0]


def test_dataset_file_round_trip_and_errors(tmp_path):
    ds = Dictionary(SyntheticConfig(n_features=32, d_model=8, n_roots=2, branching=2, depth=2)).sample(500)
    for dense in (False, True):
        p = save_dataset(tmp_path / f"d{dense}.safetensors", ds, dense_acts=dense)
        back = load_dataset(p)
        assert torch.equal(back.hidden, ds.hidden) and torch.equal(back.true_acts(), ds.true_acts())
        assert torch.equal(back.parent, ds.parent) and back.meta["source"] == "synthetic"
    from toymodels.io import save_tensors

    save_tensors(tmp_path / "bad.safetensors", {"hidden": torch.zeros(4, 3, dtype=torch.float64)})
    with pytest.raises(DataFileError, match="hidden must be a 2-D float32"):
        load_dataset(tmp_path / "bad.safetensors")
    save_tensors(tmp_path / "bad2.safetensors",
                 {"hidden": torch.zeros(4, 3), "feature_vectors": torch.zeros(5, 2)})
    with pytest.raises(DataFileError, match="feature_vectors has 2 columns"):
        load_dataset(tmp_path / "bad2.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a file")
    with pytest.raises(DataFileError):
        load_dataset(tmp_path / "junk.safetensors")


def test_toy_model_dataset_is_exact():
    from toymodels import ToyConfig, TrainConfig, train
    from toymodels.groundtruth.toydata import toy_dataset

    r = train(ToyConfig(n_features=5, n_hidden=2, density=0.1),
              TrainConfig(steps=200, lr=1e-2, progress=False))
    ds = toy_dataset(r, 0, n_samples=2000)
    keep = ds.meta["feature_index"]
    assert torch.allclose(ds.true_acts() @ ds.feature_vectors, ds.hidden, atol=1e-2)
    assert ds.feature_vectors.shape == (len(keep), 2)


def test_leaderboard_end_to_end(tmp_path):
    from toymodels.experiments import compose, to_object
    from toymodels.groundtruth.benchmark import run_benchmark
    from toymodels.sae.registry import builtin_variants

    overrides = [f"out={tmp_path}", "n_train=2000", "steps=30"]
    cfg = to_object(compose("benchmark_tiny", overrides, kind="benchmark"))
    run_benchmark(cfg)
    table = pd.read_csv(tmp_path / "results.csv")
    board = pd.read_csv(tmp_path / "leaderboard.csv")
    md = (tmp_path / "leaderboard.md").read_text()
    assert set(table["variant"]) == set(builtin_variants()) == set(board["variant"])
    assert all(f"| {v}" in md for v in builtin_variants())
    assert table["mcc"].between(0, 1).all() and table["f1"].between(0, 1).all()
    # width 64 = n_features: the matched L0 is the data's true L0 (the eval set's mean active features)
    assert (table["target_l0"] - table["true_l0"]).abs().max() < 1e-4
    assert (tmp_path / "figures" / "pareto.png").stat().st_size > 10_000

"""SAELens synthetic models in and out, the saelens law's semantics, superposition statistics, and the
synthsaebench16k experiment's plan."""

import json

import numpy as np
import pytest
import torch
from scipy.special import ndtri

from toymodels.errors import ConfigError, DataFileError
from toymodels.groundtruth.saelens_io import read_saelens, write_saelens
from toymodels.groundtruth.synthetic import Dictionary, SyntheticConfig

ALPHA = 1e-3
"""Family-wise false-alarm rate of each statistical comparison (Bonferroni over its tests)."""


def _law(**kw) -> SyntheticConfig:
    base = dict(n_features=64, d_model=12, law="saelens", n_roots=4, branching=2, branching_max=3, depth=3,
                mutually_exclusive_portion=0.6, compensate_probabilities=True, scale_children_by_parent=True,
                correlation="factor", correlation_rank=3, correlation_scale=0.3, bias=0.7, p_min=0.05,
                magnitude_mean="linear", magnitude_max=5.0, magnitude_min=4.0, magnitude_std=0.5,
                magnitude_std_law="folded_normal", magnitude_std_end=0.5, seed=7)
    return SyntheticConfig(**(base | kw))


def _worst_z(a: torch.Tensor, b: torch.Tensor) -> dict:
    """Two-sample z statistics between dense activations a, b [N, F] (same N): per-feature firing rate, mean and
    mean square of the magnitude when active (Welch), pairwise co-firing rate; each with its Bonferroni critical
    value."""
    N = len(a)
    fa, fb = (a > 0).double(), (b > 0).double()
    out = {}

    def rate(x, y, name):
        p = (x + y) / 2
        ok = (p > 0) & (p < 1)
        z = ((x - y) / (2 * p * (1 - p) / N).sqrt())[ok]
        out[name] = (float(z.abs().max()), float(ndtri(1 - ALPHA / (2 * len(z)))))

    rate(fa.mean(0), fb.mean(0), "rate")
    rate(fa.T @ fa / N, fb.T @ fb / N, "cofire")
    na, nb = fa.sum(0), fb.sum(0)
    ok = (na > 30) & (nb > 30)
    for power in (1, 2):  # mean magnitude and mean squared magnitude when active (Welch)
        xa, xb = a.double() ** power, b.double() ** power
        ma, mb = xa.sum(0) / na, xb.sum(0) / nb
        va = (xa.square().sum(0) / na - ma.square()) / na
        vb = (xb.square().sum(0) / nb - mb.square()) / nb
        z = ((ma - mb) / (va + vb).sqrt())[ok]
        out[f"magnitude^{power}"] = (float(z.abs().max()), float(ndtri(1 - ALPHA / (4 * len(z)))))
    return out


def _saelens_model():
    sl = pytest.importorskip("sae_lens.synthetic")
    cfg = sl.SyntheticModelConfig(
        num_features=48, hidden_dim=12,
        firing_probability=sl.ZipfianFiringProbabilityConfig(exponent=0.5, max_prob=0.4, min_prob=0.05),
        hierarchy=sl.HierarchyConfig(total_root_nodes=4, branching_factor=(2, 3), max_depth=2,
                                     mutually_exclusive_portion=0.6, compensate_probabilities=True,
                                     scale_children_by_parent=True),
        correlation=sl.LowRankCorrelationConfig(rank=3, correlation_scale=0.3),
        mean_firing_magnitudes=sl.LinearMagnitudeConfig(start=5.0, end=4.0),
        std_firing_magnitudes=sl.FoldedNormalMagnitudeConfig(mean=0.5, std=0.5), bias=0.7, seed=5)
    return sl, sl.SyntheticModel(cfg)


N = 30_000


def _ours(d, seed=1):
    ds = d.sample(N, seed=seed)
    return ds, ds.true_acts()


def test_saelens_model_round_trips(tmp_path):
    """A SyntheticModel with hierarchy (ranged branching, partial mutual exclusion, compensation, child scaling),
    a low-rank copula and a bias reads in (object and saved folder alike) as the same dictionary, and samples
    the same law: firing rates, magnitudes and co-firing agree within sampling error; and a perturbed law fails
    the same comparison."""
    _, model = _saelens_model()
    d = read_saelens(model)
    model.save(tmp_path / "m")
    d2 = read_saelens(tmp_path / "m")
    assert torch.equal(d.vectors, model.feature_dict.feature_vectors.detach())
    assert torch.equal(d2.vectors, d.vectors) and torch.equal(d2.bias, d.bias)
    assert torch.equal(d2.mag_std, d.mag_std) and torch.allclose(d2.mag_mean, d.mag_mean)
    assert d.exclusive.sum() >= 2 and d.scale.any() and d.factor is not None
    torch.manual_seed(0)
    h, a = model.sample_with_features(N)
    ds, b = _ours(d2)
    for name, (z, crit) in _worst_z(a, b).items():
        assert z < crit, (name, z, crit)
    assert torch.allclose(h.mean(0), ds.hidden.mean(0), atol=0.05)  # the bias is in the samples
    # power: without mutual exclusion co-firing differs, without child scaling the magnitudes do
    for flag in ("exclusive", "scale"):
        bad = read_saelens(tmp_path / "m")
        setattr(bad, flag, np.zeros_like(getattr(bad, flag)))
        z = _worst_z(a, _ours(bad)[1])
        assert max(v / c for v, c in z.values()) > 1.5, (flag, z)


def test_ours_written_as_saelens_loads_and_samples_the_same(tmp_path):
    sl, _ = _saelens_model()
    d = Dictionary(_law())
    write_saelens(d, tmp_path / "ours")
    model = sl.SyntheticModel.load_from_disk(tmp_path / "ours")
    assert torch.equal(model.feature_dict.feature_vectors.detach(), d.vectors)
    assert torch.equal(model.activation_generator.std_firing_magnitudes, d.mag_std)
    torch.manual_seed(1)
    _, a = model.sample_with_features(N)
    for name, (z, crit) in _worst_z(a, _ours(d, seed=2)[1]).items():
        assert z < crit, (name, z, crit)
    back = read_saelens(tmp_path / "ours")  # and it reads back without sae_lens
    assert torch.equal(back.vectors, d.vectors) and np.array_equal(back.exclusive, d.exclusive)


def test_saelens_law_semantics():
    d = Dictionary(_law(correlation="none"))
    ds = d.sample(20_000, seed=3)
    A = ds.true_acts()
    par = d.parent
    kids = (par >= 0).nonzero()[:, 0]
    assert ((A[:, kids] > 0) <= (A[:, par[kids]] > 0)).all()  # children only with their parent
    for p in np.flatnonzero(d.exclusive):
        assert ((A[:, par == int(p)] > 0).sum(1) <= 1).all()  # one sibling at most
    assert any(((A[:, par == int(p)] > 0).sum(1) >= 2).any() for p in np.flatnonzero(~d.exclusive)
               if (par == int(p)).sum() >= 2)
    both = (A[:, kids] > 0) & (A[:, par[kids]] > 0)
    ratio = (A[:, kids] / A[:, par[kids]])[both]  # scaled children follow their parent's magnitude
    assert ratio.std() < 0.5 * A[A > 0].std() / A[A > 0].mean() + 0.2
    assert ds.meta["bias_norm"] == pytest.approx(0.7)


def test_superposition_stats_match_brute_force():
    d = Dictionary(SyntheticConfig(n_features=50, d_model=8, correlation="none"))
    s = d.superposition()
    C = (d.vectors @ d.vectors.T).abs()
    for i in (0, 17, 49):
        row = torch.cat([C[i, :i], C[i, i + 1:]])
        assert s["max"][i] == pytest.approx(float(row.max()), abs=1e-6)
        assert s["p95"][i] == pytest.approx(float(torch.quantile(row, 0.95)), abs=1e-6)
        assert s["p99"][i] == pytest.approx(float(torch.quantile(row, 0.99)), abs=1e-6)
    assert s["rho_mm"] == pytest.approx(float(s["max"].mean()))


def test_saelens_options_need_the_law_and_bad_folders_are_one_line(tmp_path):
    with pytest.raises(ConfigError, match="scale_children_by_parent"):
        SyntheticConfig(scale_children_by_parent=True)
    with pytest.raises(ConfigError, match="correlation"):
        SyntheticConfig(correlation="factor")
    with pytest.raises(ConfigError, match="law"):
        SyntheticConfig(law="nope")
    with pytest.raises(DataFileError, match="only a law=saelens"):
        write_saelens(Dictionary(SyntheticConfig(n_features=16, d_model=4)), tmp_path / "x")
    with pytest.raises(DataFileError, match="not a folder"):
        read_saelens(tmp_path / "missing")
    good = tmp_path / "good"
    write_saelens(Dictionary(_law()), good)
    cfg = json.loads((good / "synthetic_model_config.json").read_text())
    for name, change in (("hierarchy.json", '{"roots": [{"feature_index": 999}]}'),
                         ("synthetic_model_config.json", json.dumps(cfg | {"hidden_dim": 13})),
                         ("synthetic_model_config.json", json.dumps(cfg | {"std_firing_magnitudes": {
                             "generator_name": "weird"}})),
                         ("synthetic_model_config.json", "[1, 2")):
        bad = tmp_path / f"bad{len(list(tmp_path.iterdir()))}"
        write_saelens(Dictionary(_law()), bad)
        (bad / name).write_text(change)
        with pytest.raises(DataFileError) as e:
            read_saelens(bad)
        assert "\n" not in str(e.value)


def test_toymodels_law_new_options_and_old_samples():
    """Defaults keep old datasets; a bias and per-feature spreads work under the toymodels law too."""
    c = SyntheticConfig(n_features=64, d_model=8, n_roots=2, depth=3)
    a = Dictionary(c).sample(500, seed=4)
    b = Dictionary(SyntheticConfig(**(vars(c) | {"bias": 0.0, "magnitude_std_law": "constant"}))).sample(500, seed=4)
    assert torch.equal(a.hidden, b.hidden) and "bias_norm" not in a.meta
    e = Dictionary(SyntheticConfig(**(vars(c) | {"bias": 2.0, "magnitude_std_law": "exponential",
                                                 "magnitude_std_end": 0.1})))
    ds = e.sample(500, seed=4)
    assert float(e.bias.norm()) == pytest.approx(2.0)
    assert torch.allclose(ds.hidden - e.bias, ds.true_acts() @ e.vectors, atol=1e-4)
    assert e.mag_std[0] == pytest.approx(0.5) and e.mag_std[-1] == pytest.approx(0.1)


def test_copula_thinning_is_exact():
    """Many rare top-level features under a dense copula take the thinning path: each keeps its marginal p_f, and
    co-firing matches a dense draw of the same Gaussian copula (SAELens's algorithm)."""
    d = Dictionary(_law(n_features=512, d_model=8, n_roots=0, p_min=0.002, correlation_rank=5,
                        correlation_scale=0.2, compensate_probabilities=False, scale_children_by_parent=False))
    n = 20_000
    a = d.sample(n, seed=5).true_acts()
    rng = np.random.default_rng(0)
    L = d.factor.numpy()
    z = rng.standard_normal((n, 5)) @ L.T + np.sqrt(1 - (L**2).sum(1)) * rng.standard_normal((n, len(L)))
    b = torch.from_numpy(z > ndtri(1 - d.prob)).float()
    p = torch.from_numpy(d.prob)
    rate = (a > 0).double().mean(0)
    zr = ((rate - p) / (p * (1 - p) / n).sqrt()).abs().max()
    assert zr < ndtri(1 - ALPHA / (2 * len(p)))
    top = slice(0, 40)  # co-firing of the frequent features
    got = _worst_z(a[:, top], b[:, top] * 4.5)["cofire"]
    assert got[0] < got[1], got


def test_synthsaebench16k_plans_small_and_refuses_full(tmp_path):
    from toymodels.errors import ResourceError
    from toymodels.experiments import compose, to_object
    from toymodels.groundtruth.benchmark import sae_grid
    from toymodels.groundtruth.published import compare, markdown, published_table

    cfg = to_object(compose("synthsaebench16k", ["n_train=2000", "n_eval=500", "steps=10",
                                                 "dataset.orthogonality_steps=0"], kind="benchmark"))
    assert (cfg.dataset.n_features, cfg.dataset.d_model, cfg.widths, cfg.target_l0) == (16384, 768, [4096], [20, 25])
    grid = sae_grid(cfg, 768, {4096: [20, 25]})
    assert {c.variant for c, *_ in grid} == {"relu", "batchtopk", "jumprelu", "matryoshka", "matching_pursuit"}
    assert {c.seed for c, *_ in grid} == {0, 1, 2}
    d = Dictionary(cfg.dataset)
    assert 25 < d.expected_l0 < 60  # the published model's true L0 is ~34
    with pytest.raises(ResourceError, match="200000000 samples"):
        d.sample(to_object(compose("synthsaebench16k", [], kind="benchmark")).n_train)
    pub = published_table("synthsaebench16k")
    assert len(pub) == 10 and set(pub["variant"]) == {c.variant for c, *_ in grid}
    board = pub[["variant", "target_l0"]].assign(f1=0.5, mcc=0.6, l0=20.0, n_seeds=3)
    t = compare(board, pub)
    assert t["f1_diff"].tolist() == pytest.approx((0.5 - pub["f1"]).tolist())
    assert "matryoshka" in markdown(t)


def test_dataset_cli_saelens_in_and_out(tmp_path):
    from toymodels.cli import main
    from toymodels.groundtruth.files import load_dataset

    assert main(["dataset", "saelens", str(tmp_path / "m"), "law=saelens", "n_features=32", "d_model=8",
                 "n_roots=2", "depth=2", "bias=0.5"]) == 0
    assert main(["dataset", "make", str(tmp_path / "d.safetensors"), "n_samples=300",
                 f"saelens={tmp_path / 'm'}"]) == 0
    ds = load_dataset(tmp_path / "d.safetensors")
    assert ds.hidden.shape == (300, 8) and ds.meta["config"]["saelens"] == str(tmp_path / "m")
    assert main(["dataset", "make", str(tmp_path / "e.safetensors"), f"saelens={tmp_path / 'nope'}"]) == 2

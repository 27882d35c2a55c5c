"""The follow-up papers' figures (quick mode): each claim as a number that can fail; plus the trainer options they
added (fixed datasets, unit-norm inputs, hidden bias, negative weight decay)."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from toymodels.config import ToyConfig, TrainConfig
from toymodels.errors import ConfigError
from toymodels.paper import capacity, double_descent, engineered_mono, scaling
from toymodels.train import train


def test_followup_modules_declare_section_and_source():
    for mod in (double_descent, capacity, engineered_mono, scaling):
        assert mod.SECTION == "followups" and re.search(r"\b20\d\d, \w", mod.SOURCE), mod.SOURCE
        assert len(mod.CAPTION.strip().splitlines()) == 2


def test_double_descent_test_loss_peaks_in_the_interior(tables):
    loss = tables("double_descent").query("kind == 'loss' and m == 2")
    T_peak, left, right = double_descent.peak_ratio(loss)
    assert loss["T"].min() < T_peak < loss["T"].max()
    assert left >= 1.5 and right >= 1.5, (T_peak, left, right)
    # memorisation at the smallest T, not at the largest
    s = loss.sort_values("T")
    assert s["train_loss"].iloc[0] < 0.05 * s["test_loss"].iloc[0] and s["train_loss"].iloc[-1] > 0.5 * s[
        "test_loss"].iloc[-1]


def test_double_descent_small_T_training_points_form_a_regular_polygon(tables):
    df = tables("double_descent")
    pts = df.query("kind == 'data' and m == 2 and T == 5")
    assert len(pts) == 5  # all five training points are non-zero
    gaps = double_descent.polygon_gaps(pts[["v0", "v1"]].to_numpy())
    assert np.abs(gaps - 72).max() <= 6, gaps
    np.testing.assert_allclose(pts["dimensionality"], 2 / 5, atol=0.05)  # each point holds m/T dims
    big = df.query("kind == 'data' and m == 2 and T == T.max()")
    assert big["dimensionality"].max() < 0.1  # at large T no training point holds a dimension


def test_capacity_is_monotone_in_importance_with_whole_and_zero_ends(tables):
    df = tables("capacity")
    for d, sub in df.groupby("density"):
        D = sub.sort_values("feature")["dimensionality"].to_numpy()  # importance decreasing with feature
        bands = D.reshape(4, -1).mean(1)  # four importance bands of 5 features
        assert (np.diff(bands) <= 0.05).all(), (d, D.round(2))
        assert D[-1] <= 0.05, d  # the least important: nothing
        if d >= 0.3:  # per feature too (at lower density features 0 and 1 can swap: a near-tie)
            assert max(D[j] - D[:j].min() for j in range(1, len(D))) <= 0.15, (d, D.round(2))
    dense = df[df["density"] == 1.0].sort_values("feature")["dimensionality"].to_numpy()
    assert (dense[: capacity.M] >= 0.95).all() and (dense[capacity.M:] <= 0.05).all()
    # higher kurtosis: fewer whole dimensions, more fractions
    alloc = capacity.allocation(df)
    assert alloc.loc[1.0, "full"] == capacity.M and alloc.loc[1.0, "part"] == 0
    assert alloc.loc[min(capacity.DENSITIES), "part"] >= 2 * capacity.M - 1
    assert alloc.loc[min(capacity.DENSITIES), "full"] < capacity.M
    assert capacity.kurtosis(1.0) == pytest.approx(1.8)


def test_more_neurons_or_negative_bias_raise_monosemanticity(tables):
    df = tables("engineered_mono").set_index(["neurons", "bias_init"])["monosemanticity"]
    lo, hi = min(engineered_mono.NEURONS), max(engineered_mono.NEURONS)
    for b in engineered_mono.BIASES:
        assert df[(hi, b)] > df[(lo, b)] + 0.05, b
    b_neg = min(engineered_mono.BIASES)
    for m in engineered_mono.NEURONS[1:]:  # with at least 2 neurons per feature (± pairs for |x|)
        assert df[(m, b_neg)] > df[(m, 0.0)] + 0.1, m


def test_strong_superposition_scales_as_one_over_m(tables):
    df = tables("scaling")
    strong, mid = scaling.exponent(df, "strong"), scaling.exponent(df, "intermediate")
    assert 0.8 <= strong <= 1.2, strong
    assert mid < strong - 0.1, (mid, strong)  # positive weight decay: fewer features, a shallower law
    s, w = (df[df["regime"] == r].set_index("m")["represented"] for r in ("strong", "intermediate"))
    assert (s >= w).all() and s.iloc[-1] >= 0.8 * scaling.N  # strong: (nearly) every feature represented


def test_weak_superposition_keeps_the_top_m_and_follows_the_weak_law(tables):
    df = tables("scaling")
    weak = df[df["regime"] == "weak"].set_index("m")
    m = weak.index.to_numpy()
    assert ((weak["represented"] >= 0.5 * m) & (weak["represented"] <= 2 * m)).all(), weak["represented"]
    assert (weak["top_m_represented"] >= 0.9 * m).all(), weak["top_m_represented"]  # the most frequent ones
    np.testing.assert_allclose(weak["loss"], weak["weak_law"], rtol=0.05)  # loss = the left-out features'
    # the weak law's slope: α − 1 = 0.2 for m ≪ n, steeper as m nears n = 256 (0.43 on m = 6, 12, 24)
    k, k_law = scaling.exponent(df, "weak"), scaling.exponent(df, "weak", "weak_law")
    assert 0.2 <= k <= 0.6 and abs(k - k_law) <= 0.1, (k, k_law)
    strong = df[df["regime"] == "strong"].set_index("m")["loss"]
    assert (strong < 0.8 * weak["loss"]).all()  # superposition lowers the loss at every m


def test_weak_law_is_the_left_out_features_variance():
    assert scaling.weak_law(scaling.N) == 0
    p = np.asarray(scaling.densities())
    assert scaling.weak_law(0) == pytest.approx(float((p / 3 - p**2 / 4).mean()))
    laws = [scaling.weak_law(m) for m in (6, 12, 24, 48)]
    assert all(a > b for a, b in zip(laws, laws[1:], strict=False))


def test_monosemanticity_measure_on_hand_built_weights():
    W_FH = torch.tensor([[1.0, 0.0, 0.5], [0.0, -1.0, 0.5]])
    s = engineered_mono.mono_stats(W_FH, torch.zeros(3))
    assert s["mono_neurons"] == 2 and s["features_covered"] == 2
    assert s["monosemanticity"] == pytest.approx((1 + 1 + 0.5) / 3)
    # a negative bias hides a weak weight: neuron 2's response to each feature is 0.5 − 0.6 < 0
    assert engineered_mono.mono_stats(W_FH, torch.tensor([0.0, 0.0, -0.6]))["live_neurons"] == 2


def test_fixed_dataset_fast_path_equals_autograd():
    cfg = ToyConfig(n_features=12, n_hidden=2, density=0.2, normalize=True, n_instances=3)
    runs = [train(cfg, TrainConfig(steps=40, lr=1e-2, dataset_size=[4, 9, 30], restarts=2, backward=bw,
                                   progress=False)) for bw in ("auto", "autograd")]
    assert runs[0].meta["backward"] == "manual" and runs[1].meta["backward"] == "autograd"
    torch.testing.assert_close(runs[0].W, runs[1].W, atol=1e-4, rtol=1e-3)
    torch.testing.assert_close(runs[0].dataset_loss, runs[1].dataset_loss, atol=1e-6, rtol=1e-3)
    assert [len(x) for x in runs[0].dataset] == [4, 9, 30]
    assert torch.allclose(runs[0].dataset[1].norm(dim=-1)[runs[0].dataset[1].abs().sum(-1) > 0], torch.tensor(1.0))


def test_fixed_dataset_memorises_and_restarts_share_it():
    cfg = ToyConfig(n_features=20, n_hidden=2, density=0.1, n_instances=1)
    res = train(cfg, TrainConfig(steps=300, lr=1e-2, dataset_size=3, restarts=3, weight_decay=0, progress=False))
    assert res.dataset_loss[0] < 0.1 * res.final_loss[0]  # three points are memorised, fresh ones are not
    assert float(res.restart_loss[0].min()) <= float(res.final_loss[0])  # picked on training, not test, loss


def test_hidden_bias_and_negative_weight_decay():
    cfg = ToyConfig(n_features=4, n_hidden=8, model="abs_value", hidden_bias=[0.0, -0.5])
    res = train(cfg, TrainConfig(steps=3, restarts=2, progress=False))
    assert res.model.b_hidden.shape == (2, 8) and res.meta["backward"] == "autograd"
    b_IH = res.model.b_hidden.detach()
    assert float(b_IH[1].mean()) < -0.45 < float(b_IH[0].mean()) - 0.4
    W0 = train(ToyConfig(n_features=3, n_hidden=2), TrainConfig(steps=50, lr=1e-3, weight_decay=0, progress=False))
    Wn = train(ToyConfig(n_features=3, n_hidden=2), TrainConfig(steps=50, lr=1e-3, weight_decay=-5, progress=False))
    assert float(Wn.W.norm()) > float(W0.W.norm())  # negative decay grows the weights


@pytest.mark.parametrize("kw, field", [
    ({"dataset_size": 0}, "dataset_size"), ({"dataset_size": [3, 2.5]}, "dataset_size"),
    ({"weight_decay": float("nan")}, "weight_decay"),
])
def test_train_config_errors_name_the_field(kw, field):
    with pytest.raises(ConfigError, match=f"^{field}:"):
        TrainConfig(**kw)


@pytest.mark.parametrize("kw, field", [
    ({"hidden_bias": -0.1}, "hidden_bias"), ({"model": "hidden_relu", "hidden_bias": "x"}, "hidden_bias"),
    ({"model": "hidden_relu", "hidden_bias": [0, 1], "density": [[1], [0.5], [0.1]]}, "hidden_bias"),
    ({"model": "hidden_relu", "hidden_bias": [[0.0], [0.0, 0.0]]}, "hidden_bias"),  # ragged (found by the fuzz test)
    ({"normalize": 1}, "normalize"),
])
def test_toy_config_errors_name_the_field(kw, field):
    with pytest.raises(ConfigError, match=f"^{field}:"):
        ToyConfig(**kw)


def test_dataset_size_must_match_instances():
    with pytest.raises(ConfigError, match="^dataset_size:"):
        train(ToyConfig(n_features=3, n_instances=2), TrainConfig(steps=2, dataset_size=[2, 3, 4], progress=False))

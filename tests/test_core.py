"""Issue 2 acceptance: the science of the core models, packing, reproducibility, save/load."""

import numpy as np
import pytest
import torch

from toymodels import ToyConfig, TrainConfig, analysis, load_result, save_result, train


@pytest.fixture(scope="module")
def intro_pair():
    """One tensor program, two configurations × 5 restarts: the pentagon and the dense 0.9^i model."""
    cfg = ToyConfig(n_features=5, n_hidden=2, density=[[0.05], [1.0]],
                    importance=[[1.0] * 5, (0.9 ** np.arange(5)).tolist()])
    return train(cfg, TrainConfig(steps=4000, lr=3e-3, restarts=5, seed=0, progress=False))


def test_pentagon_at_low_density(intro_pair):
    W = intro_pair.W[0:1]
    norms = analysis.feature_norms(W)[0]
    dims = analysis.feature_dimensionality(W)[0]
    assert norms.min() > 0.8 and norms.max() < 1.35, norms
    assert torch.allclose(dims, torch.full((5,), 0.4), atol=0.04), dims
    # pentagon geometry: neighbouring directions 72° apart
    angles = torch.atan2(W[0, :, 1], W[0, :, 0]).sort().values
    gaps = torch.diff(torch.cat([angles, angles[:1] + 2 * torch.pi]))
    assert torch.allclose(gaps, torch.full((5,), 2 * torch.pi / 5), atol=0.15), gaps


def test_dense_keeps_two_most_important(intro_pair):
    W = intro_pair.W[1:2]
    norms = analysis.feature_norms(W)[0]
    assert (norms[:2] > 0.9).all() and (norms[2:] < 0.2).all(), norms
    assert torch.allclose(analysis.feature_dimensionality(W)[0, :2], torch.ones(2), atol=0.05)
    assert analysis.phases(W)[0] == ["dedicated"] * 2 + ["not_represented"] * 3


def test_linear_learns_top_principal_directions():
    cfg = ToyConfig(n_features=20, n_hidden=5, model="linear", importance_decay=0.7, density=1.0)
    W = train(cfg, TrainConfig(steps=3000, lr=3e-3, seed=1, progress=False)).W[0]
    norms = W.norm(dim=-1)
    assert (norms[:5] > 0.9).all() and (norms[:5] < 1.1).all(), norms
    assert (norms[5:] < 0.1).all(), norms
    gram5 = W[:5] @ W[:5].T
    assert torch.allclose(gram5, torch.eye(5), atol=0.1), gram5


def test_dense_two_to_one_keeps_important_feature():
    cfg = ToyConfig(n_features=2, n_hidden=1, density=1.0, importance=[1.0, 0.1])
    res = train(cfg, TrainConfig(steps=2000, restarts=3, seed=0, progress=False))
    norms = analysis.feature_norms(res.W)[0]
    assert norms[0] > 0.9 and norms[1] < 0.1, norms


def test_packing_does_not_change_the_science():
    """Four densities packed in one tensor reach the losses of the same configs trained one by one."""
    densities = [1.0, 0.3, 0.1, 0.03]
    tc = TrainConfig(steps=1500, restarts=2, seed=3, progress=False, eval_batches=16)
    packed = train(ToyConfig(n_features=8, n_hidden=3, importance_decay=0.8,
                             density=[[d] for d in densities]), tc).final_loss
    alone = torch.stack([train(ToyConfig(n_features=8, n_hidden=3, importance_decay=0.8, density=d), tc).final_loss[0]
                         for d in densities])
    assert torch.allclose(packed, alone, rtol=0.1, atol=1e-4), (packed, alone)
    assert not torch.equal(packed, alone)  # different random streams, same science


def test_reproducible_bit_for_bit_and_seed_matters():
    cfg = ToyConfig(n_features=6, n_hidden=2, density=[[1.0], [0.05]])
    a = train(cfg, TrainConfig(steps=200, restarts=2, seed=7, progress=False))
    b = train(cfg, TrainConfig(steps=200, restarts=2, seed=7, progress=False))
    c = train(cfg, TrainConfig(steps=200, restarts=2, seed=8, progress=False))
    assert torch.equal(a.W, b.W) and torch.equal(a.restart_loss, b.restart_loss)
    assert not torch.equal(a.W, c.W)


def test_best_restart_is_the_lowest_loss():
    res = train(ToyConfig(n_features=5, n_hidden=2, density=0.1), TrainConfig(steps=300, restarts=4, progress=False))
    assert res.restart_loss.shape == (1, 4)
    assert res.final_loss[0] == res.restart_loss[0].min()
    assert res.loss_history.shape == (3, 1, 4)
    assert res.loss_history[-1].mean() < res.loss_history[0].mean()  # it learns


def test_per_instance_init_scale_does_not_depend_on_packing():
    from toymodels.models import xavier_normal

    gen = torch.Generator().manual_seed(0)
    few, many = xavier_normal(2, 400, 30, gen), xavier_normal(500, 400, 30, gen)
    expected = (2 / 430) ** 0.5
    assert abs(few.std().item() - expected) < 0.05 * expected
    assert abs(many.std().item() - expected) < 0.01 * expected


@pytest.mark.parametrize("structure", ["correlated", "anticorrelated", "hierarchical"])
def test_feature_structures(structure):
    from toymodels.features import sample_dense

    cfg = ToyConfig(n_features=6, n_hidden=2, density=0.2, structure=structure, set_size=3)
    x = sample_dense(cfg, torch.tensor(cfg.density_array(), dtype=torch.float32), 50_000,
                     torch.Generator().manual_seed(0))[0]
    on = (x != 0).float()
    if structure == "correlated":
        assert torch.equal(on[:, 0], on[:, 1]) and torch.equal(on[:, 0], on[:, 2])
        assert abs(on[:, 0].mean() - 0.2) < 0.01
    elif structure == "anticorrelated":
        assert on[:, :3].sum(1).max() == 1  # never two members at once
        assert abs(on[:, :3].sum(1).mean() - 0.2) < 0.01  # the set is active with probability density
        assert abs(on[:, 0].mean() - 0.2 / 3) < 0.01
    else:
        parent, child = on[:, 0], on[:, 1]
        assert (child <= parent).all()
        assert abs(parent.mean() - 0.2) < 0.01 and abs(child.mean() - 0.1) < 0.01
    assert x.min() >= 0 and x.max() <= 1


def test_abs_value_model_uses_symmetric_magnitudes_and_abs_target():
    cfg = ToyConfig(n_features=3, n_hidden=6, model="abs_value", density=1.0)
    res = train(cfg, TrainConfig(steps=3000, lr=3e-3, restarts=4, progress=False))
    assert cfg.magnitude_law == "symmetric"
    assert res.final_loss[0] < 1e-3  # 3 → 6 dense: two neurons per feature compute |x| = ReLU(x) + ReLU(−x)
    assert torch.equal(res.model.target(torch.tensor([[[-0.5, 0.25, 0.0]]])), torch.tensor([[[0.5, 0.25, 0.0]]]))


def test_save_load_roundtrip(tmp_path):
    res = train(ToyConfig(n_features=4, n_hidden=2, density=[[1.0], [0.1]]),
                TrainConfig(steps=50, restarts=2, progress=False))
    save_result(res, tmp_path)
    back = load_result(tmp_path)
    assert torch.equal(back.W, res.W) and torch.equal(back.final_loss, res.final_loss)
    assert back.config == res.config and back.train == res.train
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "manifest.json", "weights.safetensors"]


def test_divergence_is_named():
    from toymodels.errors import DivergenceError

    with pytest.raises(DivergenceError, match="instance 0"):
        train(ToyConfig(n_features=5, n_hidden=2), TrainConfig(steps=200, lr=1e30, progress=False))


def test_divergence_mark_keeps_the_others():
    """A NaN in one instance is reported as NaN without touching the others' training."""
    cfg = ToyConfig(n_features=5, n_hidden=2, density=[[1.0], [0.1]], importance=[[1e38], [1.0]])
    res = train(cfg, TrainConfig(steps=100, on_divergence="mark", progress=False))
    assert torch.isnan(res.final_loss[0]) and torch.isfinite(res.final_loss[1])
    alone = train(ToyConfig(n_features=5, n_hidden=2, density=[[1.0], [0.1]]),
                  TrainConfig(steps=100, progress=False))
    assert torch.equal(res.W[1], alone.W[1])  # same init & data stream, the diverged neighbour changed nothing


@pytest.mark.parametrize("kwargs, field", [
    ({"density": 0.0}, "density"),
    ({"density": -0.1}, "density"),
    ({"density": 1.5}, "density"),
    ({"importance": -1.0}, "importance"),
    ({"n_hidden": 0}, "n_hidden"),
    ({"n_features": 0}, "n_features"),
    ({"density": [0.1, 0.2]}, "density"),  # 2 values for 5 features
    ({"model": "transformer"}, "model"),
    ({"density": [[0.1], [0.2]], "n_instances": 3}, "n_instances"),
    ({"structure": "correlated", "set_size": 2}, "set_size"),  # 5 features are not pairs
])
def test_bad_toy_inputs(kwargs, field):
    from toymodels.errors import ConfigError

    with pytest.raises(ConfigError, match=f"^{field}: "):
        ToyConfig(**{"n_features": 5, "n_hidden": 2, **kwargs})

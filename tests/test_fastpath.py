"""The training fast path: hand-derived gradients, the fast samplers, and the benchmark command."""

import math

import numpy as np
import pytest
import torch

from toymodels import ConfigError, DivergenceError, ToyConfig, TrainConfig, train
from toymodels.bench import cases
from toymodels.cli import main
from toymodels.elementsparse import ActiveGrad, ActiveSampler, use_active
from toymodels.features import FastSampler, nonzero_row_prob, sample_dense
from toymodels.models import TiedGrad, build_model
from toymodels.train import batch_loss

TIED = ["relu_output", "linear", "hidden_relu"]


def _autograd(model, x_IBF, n_zero, imp_KF, batch):
    loss_K = batch_loss(model, x_IBF, n_zero, imp_KF, batch)
    gW, gb = torch.autograd.grad(loss_K.sum(), [model.W, model.b])
    return loss_K.detach(), gW, gb


def _hand(grad, xn_KFB, n_zero, loss_K, sl=slice(None)):
    grad.begin()
    grad(xn_KFB, n_zero, loss_K, sl)
    grad.end()


def _random_model(kind, K=4, F=7, H=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    model = build_model(ToyConfig(n_features=F, n_hidden=H, model=kind), K, gen)
    with torch.no_grad():
        model.b.copy_(torch.randn(K, F, generator=gen) * 0.5)  # both signs, so ReLU(b) matters for zero rows
    return model, gen


@pytest.mark.parametrize("kind", TIED)
@pytest.mark.parametrize("n_zero", [0, 300])
def test_hand_gradients_equal_autograd(kind, n_zero):
    model, gen = _random_model(kind)
    K, F, _ = model.W.shape
    B, batch = 50, 50 + n_zero
    x_IBF = torch.rand(K, B, F, generator=gen) * (torch.rand(K, B, F, generator=gen) < 0.4)
    imp_KF = torch.rand(K, F, generator=gen) + 0.1
    loss_ref, gW_ref, gb_ref = _autograd(model, x_IBF, n_zero, imp_KF, batch)

    grad, loss = TiedGrad(model, imp_KF, batch), torch.empty(K)
    _hand(grad, -x_IBF.transpose(1, 2).contiguous(), n_zero, loss)
    gW, gb = grad.grads
    torch.testing.assert_close(loss, loss_ref, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(gW, gW_ref, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(gb, gb_ref, rtol=1e-4, atol=1e-6)
    # the checks can fail: each gradient term is far above the tolerance
    assert gW.abs().max() > 1e-3 and gb.abs().max() > 1e-3
    if n_zero:  # the closed-form zero rows change ∂b and the loss by much more than the tolerance
        _hand(grad, -x_IBF.transpose(1, 2).contiguous(), 0, loss)
        assert (grad.grads[1] - gb_ref).abs().max() > 1e-3


def test_hand_gradients_on_an_instance_slice():
    """The sparse path trains instance chunks separately: a slice writes only its own loss and gradients."""
    model, gen = _random_model("relu_output", K=5)
    K, F, _ = model.W.shape
    sl = slice(1, 4)
    x_IBF = torch.rand(3, 40, F, generator=gen) * (torch.rand(3, 40, F, generator=gen) < 0.3)
    imp_KF = torch.rand(K, F, generator=gen) + 0.1
    loss_ref, gW_ref, gb_ref = _autograd(model.select(torch.arange(1, 4)), x_IBF, 60, imp_KF[sl], 100)
    grad, loss = TiedGrad(model, imp_KF, 100), torch.full((K,), -1.0)
    _hand(grad, -x_IBF.transpose(1, 2).contiguous(), 60, loss, sl)
    torch.testing.assert_close(loss[sl], loss_ref, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(grad.grads[0][sl], gW_ref, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(grad.grads[1][sl], gb_ref, rtol=1e-4, atol=1e-6)
    assert loss[0] == -1 and loss[4] == -1  # other instances' losses are untouched


def _stats(x_IBF_list, batch):
    """Per (instance, feature) activation rate and mean magnitude; per-draw non-zero-row counts [draws, I];
    rate of rows with ≥ 2 active features [I]."""
    on = torch.stack([(x != 0).sum(1) for x in x_IBF_list]).double()  # [draws, I, F]
    mag = torch.stack([x.sum(1) for x in x_IBF_list]).double()
    rows = torch.stack([(x != 0).any(-1).sum(1) for x in x_IBF_list]).double()  # [draws, I]
    multi = torch.stack([((x != 0).sum(-1) >= 2).sum(1) for x in x_IBF_list]).double()
    n = len(x_IBF_list) * batch
    return on.sum(0) / n, mag.sum(0) / on.sum(0), rows, multi.sum(0) / n


@pytest.mark.parametrize("sparse", [False, True])
def test_fast_sampler_matches_dense_sampler(sparse):
    p = [[0.02, 0.05, 0.01, 0.03, 0.005, 0.04], [0.2, 0.1, 0.3, 0.05, 0.15, 0.25], [0.003] * 6]
    cfg = ToyConfig(n_features=6, n_hidden=2, density=p)
    p_KF, batch, draws = torch.tensor(p, dtype=torch.float32), 1024, 300
    fast = FastSampler(cfg, p_KF, batch, sparse, seed=3, gen=torch.Generator().manual_seed(3))
    if sparse:
        fast.chunks = [slice(0, 1), slice(1, 3)]  # exercise chunking
    xs_fast = []
    for _ in range(draws):
        x_IBF = torch.zeros(3, batch, 6)
        for sl, xn, _n_zero in fast():
            x_IBF[sl, : xn.shape[2]] = -xn.transpose(1, 2)
        xs_fast.append(x_IBF)
    gen = torch.Generator().manual_seed(4)
    xs_dense = [sample_dense(cfg, p_KF, batch, gen) for _ in range(draws)]
    n = draws * batch
    rate_f, mag_f, rows_f, multi_f = _stats(xs_fast, batch)
    rate_d, mag_d, rows_d, multi_d = _stats(xs_dense, batch)
    p64 = p_KF.double()
    se_rate = (p64 * (1 - p64) / n).sqrt()
    assert ((rate_f - p64).abs() < 4 * se_rate + 1e-9).all()
    assert ((rate_f - rate_d).abs() < 4 * math.sqrt(2) * se_rate + 1e-9).all()
    se_mag = (1 / 12 / (rate_f * n)).sqrt()
    assert ((mag_f - 0.5).abs() < 4 * se_mag).all() and ((mag_f - mag_d).abs() < 6 * se_mag).all()
    assert (xs_fast[0] >= 0).all() and (xs_fast[0] < 1).all()
    # non-zero rows per batch: Binomial(batch, q) in mean and variance, like the dense sampler's
    q = nonzero_row_prob(p_KF).double()
    mean, var = batch * q, batch * q * (1 - q)
    assert ((rows_f.mean(0) - mean).abs() < 4 * (var / draws).sqrt()).all()
    assert ((rows_f.var(0) / var - 1).abs() < 0.4).all() and ((rows_d.var(0) / var - 1).abs() < 0.4).all()
    # rows with ≥ 2 active features: independence *within* non-zero rows (the first-active-feature logic)
    off = (1 - p64).prod(-1)
    multi = 1 - off - (p64 / (1 - p64)).sum(-1) * off
    assert ((multi_f - multi).abs() < 4 * (multi * (1 - multi) / n).sqrt() + 1e-9).all()


@pytest.mark.parametrize("kind,density", [("relu_output", [[1.0], [0.3], [0.1], [0.03]]),
                                          ("hidden_relu", [[1.0], [0.1]]), ("linear", [[0.3]]),
                                          ("relu_output", [[0.01], [0.003]])])
def test_fast_path_reaches_autograd_loss(kind, density):
    cfg = ToyConfig(n_features=8, n_hidden=3, model=kind, importance_decay=0.9, density=density)
    runs = {bw: train(cfg, TrainConfig(steps=800, backward=bw, eval_batches=8, progress=False))
            for bw in ("auto", "autograd")}
    assert runs["auto"].meta["backward"] == "manual" and runs["autograd"].meta["backward"] == "autograd"
    fast, slow = runs["auto"].final_loss, runs["autograd"].final_loss
    assert torch.isfinite(fast).all()
    # same init, different data draws: final losses agree to a few percent (training noise)
    assert ((fast - slow).abs() <= 0.06 * slow + 2e-4).all(), (fast, slow)


@pytest.mark.parametrize("density", [0.3, 0.005])
def test_same_seed_bit_identical(density):
    cfg = ToyConfig(n_features=10, n_hidden=3, density=[[density], [density / 2]])
    a, b, c = (train(cfg, TrainConfig(steps=60, seed=s, progress=False)) for s in (5, 5, 6))
    assert a.meta["sampler"] == ("sparse" if density < 0.1 else "dense")
    assert torch.equal(a.W, b.W) and torch.equal(a.model.b, b.model.b)
    assert torch.equal(a.loss_history, b.loss_history)
    assert not torch.equal(a.W, c.W)


def test_fast_path_divergence_names_step_and_instance():
    cfg = ToyConfig(n_features=5, n_hidden=2, density=[[1.0], [0.5]])
    with pytest.raises(DivergenceError, match=r"at step \d+ in instance \d"):
        train(cfg, TrainConfig(steps=200, lr=1e30, progress=False))
    marked = train(cfg, TrainConfig(steps=200, lr=1e30, on_divergence="mark", log_every=50, progress=False))
    assert torch.isnan(marked.final_loss).all() and torch.isnan(marked.loss_history[-1]).all()


def test_backward_field_is_validated():
    with pytest.raises(ConfigError, match="backward"):
        TrainConfig(backward="symbolic")


def test_bench_quick_prints_every_config(capsys):
    assert main(["bench", "--quick"]) == 0
    out = capsys.readouterr().out
    names = [case.name for case in cases()]
    assert len(names) == 6 and any("0.01" in n for n in names)  # dense, row-sparse and wide (element-)sparse
    for name in names:
        line = next(ln for ln in out.splitlines() if ln.startswith(name))
        ref, ours, ratio, _target, ref_loss, our_loss, _ok = line[len(name):].split()
        assert float(ref) > 0 and float(ours) > 0 and float(ratio.rstrip("×")) > 0
        assert 0 < float(ref_loss) < 1 and 0 < float(our_loss) < 1


@pytest.mark.parametrize("structure", ["correlated", "anticorrelated", "hierarchical"])
def test_structured_fast_sampler_matches_dense_sampler(structure):
    """The fast path's structured sets (`FastSampler._structured`) have `sample_dense`'s law: per-feature rates,
    pairwise co-firing and mean magnitudes agree within 5 standard errors (sets of 3, two densities)."""
    cfg = ToyConfig(n_features=6, n_hidden=2, structure=structure, set_size=3, child_prob=0.4,
                    density=[[0.3], [0.05]])
    p_KF, batch, draws = torch.tensor(cfg.density_array(), dtype=torch.float32), 1024, 150
    fast = FastSampler(cfg, p_KF, batch, False, seed=5, gen=torch.Generator().manual_seed(5))
    gen = torch.Generator().manual_seed(6)
    stats = []
    for draw in (lambda: -fast()[0][1].transpose(1, 2), lambda: sample_dense(cfg, p_KF, batch, gen)):
        x = torch.cat([draw() for _ in range(draws)], 1).double()  # [K, N, F]
        on = (x != 0).double()
        stats.append((on.mean(1), torch.einsum("knf,kng->kfg", on, on) / on.shape[1],
                      x.sum(1) / on.sum(1).clamp_min(1)))
    n = draws * batch
    (rate_f, co_f, mag_f), (rate_d, co_d, mag_d) = stats
    assert ((rate_f - rate_d).abs() <= 5 * (2 * rate_d * (1 - rate_d) / n).sqrt() + 1e-9).all()
    assert ((co_f - co_d).abs() <= 5 * (2 * co_d * (1 - co_d) / n).sqrt() + 1e-9).all()
    se_mag = (2 / 12 / (rate_d * n).clamp_min(1)).sqrt()
    assert ((mag_f - mag_d).abs() <= 5 * se_mag).all() and ((mag_f - 0.5).abs() <= 5 * se_mag).all()
    if structure == "anticorrelated":  # members never co-occur
        same_set = (torch.arange(6)[:, None] // 3 == torch.arange(6) // 3) & ~torch.eye(6, dtype=torch.bool)
        assert bool((co_f[:, same_set] == 0).all())


# --- element-sparse kernel (wide sparse models: toymodels/elementsparse.py) ---


def _active_dense(xa, K, F, B):
    """x_KBF from an ActiveBatch."""
    x_KFB = torch.zeros(K, F, B)
    x_KFB.view(-1)[xa.idx_N] = xa.v_N
    return x_KFB.transpose(1, 2).contiguous()


@pytest.mark.parametrize("kind", TIED)
def test_active_gradients_equal_autograd(kind):
    K, F, H, B = 3, 70, 6, 50
    model, gen = _random_model(kind, K=K, F=F, H=H)
    p_KF = torch.rand(K, F, generator=gen) * 0.1  # per-feature densities: the thinning path
    imp_KF = torch.rand(K, F, generator=gen) + 0.1
    (sl, xa, n_zero), = ActiveSampler(p_KF, B, seed=1)()
    x_KBF = _active_dense(xa, K, F, B)
    assert n_zero == 0 and sl == slice(0, K) and 0 < len(xa.v_N) < 0.2 * K * F * B
    # both bag orientations hold the same entries
    rows = torch.repeat_interleave(torch.arange(K * B), torch.diff(xa.row_start_R, append=torch.tensor([len(xa.v_N)])))
    cols = torch.repeat_interleave(torch.arange(K * F), torch.diff(xa.col_start_C, append=torch.tensor([len(xa.v_N)])))
    assert torch.equal((xa.row_T * K * F + cols).sort().values, (rows * K * F + xa.cell_N).sort().values)
    loss_ref, gW_ref, gb_ref = _autograd(model, x_KBF, 0, imp_KF, B)
    grad, loss = ActiveGrad(model, imp_KF, B), torch.empty(K)
    _hand(grad, xa, 0, loss)
    torch.testing.assert_close(loss, loss_ref, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(grad.grads[0], gW_ref, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(grad.grads[1], gb_ref, rtol=1e-4, atol=1e-6)
    assert grad.grads[0].abs().max() > 1e-3 and grad.grads[1].abs().max() > 1e-3


@pytest.mark.parametrize("gaps", [None, 7])  # 7 gaps per draw: the rare extension path on every batch
def test_active_sampler_is_exact(gaps):
    """Per-entry rates and U[0,1) magnitudes, Binomial per-batch counts, and independent pairs of features."""
    K, F, B, draws = 3, 100, 128, 50
    p_KF = torch.tensor([[0.02] * F, torch.linspace(0.0, 0.04, F).tolist(), [0.0] * F])
    sampler = ActiveSampler(p_KF, B, seed=5)
    if gaps:
        sampler.buf_Km, sampler.ramp_m = np.empty((K, gaps)), np.arange(gaps, dtype=np.float64)
    xs = [_active_dense(sampler()[0][1], K, F, B) for _ in range(draws)]
    on = torch.stack([(x != 0).sum(1) for x in xs]).double()  # [draws, K, F]
    n = draws * B
    rate, p64 = on.sum(0) / n, p_KF.double()
    assert ((rate - p64).abs() <= 4 * (p64 * (1 - p64) / n).sqrt() + 1e-12).all()
    assert on[:, 2].sum() == 0  # density 0: never on
    mag = torch.cat([x[x != 0] for x in xs]).double()
    assert (mag > 0).all() and (mag < 1).all() and abs(mag.mean() - 0.5) < 4 * math.sqrt(1 / 12 / len(mag))
    count = on[:, 0].sum(-1)  # entries of instance 0 per batch: Binomial(B·F, 0.02)
    mean, var = B * F * 0.02, B * F * 0.02 * 0.98
    assert abs(count.mean() - mean) < 4 * math.sqrt(var / draws) and abs(count.var() / var - 1) < 0.6
    both = sum(float(((x[0, :, :50] != 0).double().T @ (x[0, :, 50:] != 0).double()).sum()) for x in xs)
    expect = 50 * 50 * 0.02**2 * n  # co-active (f, g) pairs across the two halves, independent features
    assert abs(both - expect) < 4 * math.sqrt(expect)


def test_active_path_trains_like_autograd_and_is_reproducible():
    cfg = ToyConfig(n_features=100, n_hidden=5, importance_decay=0.99, density=[[0.02], [0.01]])
    assert use_active(cfg, torch.tensor(cfg.density_array()), "auto", False)
    assert not use_active(cfg, torch.tensor(cfg.density_array()), "never", False)
    tc = dict(steps=150, batch_size=256, lr=1e-2, eval_batches=8, progress=False)
    runs = {bw: train(cfg, TrainConfig(backward=bw, **tc)) for bw in ("auto", "autograd")}
    assert runs["auto"].meta["sampler"] == "active" and runs["auto"].meta["backward"] == "manual"
    fast, slow = runs["auto"].final_loss, runs["autograd"].final_loss
    start = train(cfg, TrainConfig(**{**tc, "steps": 1})).final_loss
    assert (fast < 0.9 * start).all()  # it learns, and as far as autograd does (training noise: a few percent)
    assert ((fast - slow).abs() <= 0.06 * slow + 2e-5).all(), (fast, slow)
    a, b, c = (train(cfg, TrainConfig(steps=20, seed=s, progress=False)) for s in (5, 5, 6))
    assert torch.equal(a.W, b.W) and torch.equal(a.model.b, b.model.b) and torch.equal(a.loss_history, b.loss_history)
    assert not torch.equal(a.W, c.W)

"""SAE zoo v2 rows: Matching Pursuit, AbsTopK, p-annealing, the JumpReLU sparsity modes and Matryoshka's per-block
aux loss: each formula against a hand computation or SAELens's own function, packing == one by one with the
options on, the SAELens round trip where the option changes the exported function, and config errors."""

import dataclasses

import pytest
import torch

from toymodels.errors import ConfigError
from toymodels.sae import SAEConfig, SAETrainConfig, export_saelens, train_saes
from toymodels.sae.matching_pursuit import pursue
from toymodels.sae.p_anneal import lp_penalty
from toymodels.sae.topk import aux_k_loss
from toymodels.sae.train import pack


def _data(n=2048, d=16, f=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    feats = torch.nn.functional.normalize(torch.randn(f, d, generator=g), dim=1)
    return ((torch.rand(n, f, generator=g) < 0.08) * torch.rand(n, f, generator=g)) @ feats * 3.0


TC = SAETrainConfig(steps=24, batch_size=128, lr=3e-3, dead_after=256, log_every=8, progress=False)


def _unit_rows(L, D, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(L, D, generator=g), dim=1)


@pytest.mark.parametrize("k, thr", [(3, 0.0), (8, 0.0), (8, 1.0)])
def test_matching_pursuit_equals_saelens_encoder(k, thr):
    from sae_lens.saes.matching_pursuit_sae import _encode_matching_pursuit

    W_LD, x_BD = _unit_rows(40, 16), torch.randn(64, 16, generator=torch.Generator().manual_seed(1))
    theirs = _encode_matching_pursuit(x_BD, W_LD, thr, max_iterations=k, stop_on_duplicate_support=True)
    ours = pursue(x_BD[None], W_LD[None], k, thr)[0][0]
    torch.testing.assert_close(ours, theirs)
    assert ((ours > 0).sum(1) < k).any() and ((ours > 0).sum(1) <= k).all()  # some samples stop early
    torch.testing.assert_close(pursue(x_BD[None], W_LD[None], k, thr, gram=True)[0][0], theirs, rtol=1e-5,
                               atol=1e-5)  # training's Gram-tracked picks: the same up to rounding


def test_matching_pursuit_recovers_an_orthogonal_code_and_packs_per_sae_k():
    W_LD = torch.linalg.qr(torch.randn(16, 16, generator=torch.Generator().manual_seed(0)))[0].T  # orthonormal
    code_BL = torch.zeros(8, 16)
    code_BL[:, [2, 5, 11]] = torch.tensor([3.0, 2.0, 1.0])
    acts, vals, _, new = pursue((code_BL @ W_LD)[None], W_LD[None], 6)
    torch.testing.assert_close(acts[0], code_BL, atol=1e-5, rtol=0)  # exact code, largest first
    torch.testing.assert_close(vals[0, 0, :3], torch.tensor([3.0, 2.0, 1.0]))
    assert vals.shape[-1] == 4 and not new[0, :, 3].any()  # the 4th step finds nothing and stops every sample
    x_KBD = torch.randn(2, 32, 16, generator=torch.Generator().manual_seed(2))
    W_KLD = torch.stack([_unit_rows(24, 16, 3), _unit_rows(24, 16, 4)])
    both = pursue(x_KBD, W_KLD, torch.tensor([2, 5]), torch.tensor([0.0, 0.5]), gram=True)[0]
    for i, (k, thr) in enumerate(((2, 0.0), (5, 0.5))):
        torch.testing.assert_close(both[i], pursue(x_KBD[i:i + 1], W_KLD[i:i + 1], k, thr, gram=True)[0][0])
    from toymodels.sae.train import pack_indices  # training packs equal k only (a pack runs its largest k)

    assert pack_indices([SAEConfig(variant="matching_pursuit", d_in=16, d_sae=24, k=k) for k in (2, 5, 2)]) \
        == [[0, 2], [1]]


def test_matching_pursuit_export_folds_the_residual_threshold(tmp_path):
    sae_lens = pytest.importorskip("sae_lens")
    X = _data() * 50.0  # far from E‖x‖² = d_in: the threshold must move to the data's units
    (s,) = train_saes([SAEConfig(variant="matching_pursuit", d_in=16, d_sae=24, k=6, residual_threshold=1.5)], X,
                      TC)
    assert s.residual_threshold == pytest.approx(1.5 / s.scale)
    a = s.encode(X[:256])
    assert 0 < float((a > 0).sum(1).float().mean()) < 6  # the threshold stops some samples before k steps
    theirs = sae_lens.SAE.load_from_disk(str(export_saelens(s, tmp_path / "mp")))
    with torch.no_grad():
        torch.testing.assert_close(theirs.encode(X[:256]), a)
        torch.testing.assert_close(theirs.decode(a), s.decode(a))


def test_abstopk_keeps_the_largest_magnitudes_with_their_sign():
    from sae_lens.saes.abstopk_sae import AbsTopK

    m = pack([SAEConfig(variant="abstopk", d_in=16, d_sae=24, k=k, seed=k) for k in (2, 3)])
    pre_KBL = torch.randn(2, 8, 24, generator=torch.Generator().manual_seed(0)) * 3
    vals, idx = m._topk(pre_KBL)
    for i, k in enumerate((2, 3)):
        dense = torch.zeros(8, 24).scatter_add(-1, idx[i], vals[i])
        torch.testing.assert_close(dense, AbsTopK(k)(pre_KBL[i]))
        assert (dense < 0).any()  # negative pre-activations fire, signed
    dead_KL = torch.zeros(1, 24, dtype=torch.bool)
    dead_KL[0, [1, 2]] = True
    pre = torch.zeros(1, 1, 24)
    pre[0, 0, 1], pre[0, 0, 2] = 0.5, -2.0
    W = _unit_rows(24, 16)[None]
    x = torch.randn(1, 16)
    recon = torch.zeros(1, 1, 16)
    got = aux_k_loss(x, recon, pre, dead_KL, W, 1, by_magnitude=True)  # picks latent 2 (|−2| > 0.5), signed
    want = ((-2.0 * W[0, 2] - x[0]).pow(2).sum() / x.pow(2).sum())
    torch.testing.assert_close(got, want[None])


@pytest.mark.parametrize("ste", [False, True])
def test_jumprelu_straight_through_gradients_equal_saelens(ste):
    from sae_lens.saes.jumprelu_sae import JumpReLU, Step

    from toymodels.sae.jumprelu import _JumpReLU, _Step

    g = torch.Generator().manual_seed(0)
    z0, th0 = torch.rand(64, 24, generator=g), torch.rand(24, generator=g) * 0.5 + 0.2
    for ours_fn, theirs_fn in ((_JumpReLU, JumpReLU), (_Step, Step)):
        z, th = z0.clone().requires_grad_(), th0.clone().requires_grad_()
        theirs_fn.apply(z, th, 0.3, ste).pow(2).sum().backward()
        z2, th2 = z0[None].clone().requires_grad_(), th0[None, None].clone().requires_grad_()
        ours_fn.apply(z2, th2, torch.tensor(0.3), ste).pow(2).sum().backward()
        torch.testing.assert_close(th2.grad[0, 0], th.grad)
        torch.testing.assert_close(z2.grad[0], z.grad if z.grad is not None else torch.zeros_like(z0))


@pytest.mark.parametrize("mode", ["step", "tanh", "quadratic"])
def test_jumprelu_sparsity_modes_and_pre_activation_loss(mode):
    kw = dict(tanh_scale=2.0) if mode == "tanh" else dict(quadratic_l0=3.0) if mode == "quadratic" else {}
    m = pack([SAEConfig(variant="jumprelu", d_in=16, d_sae=24, l0_coeff=0.7, sparsity_loss=mode, threshold_init=0.5,
                        pre_act_coeff=0.2, l1_warmup_frac=0.0, **kw)])
    with torch.no_grad():
        m.W_dec_KLD *= 1.5  # non-unit rows, so the ‖W_dec‖ factors show
    m.dead_KL = torch.zeros(1, 24, dtype=torch.bool)
    m.dead_KL[0, :6] = True
    X = _data()[:128]
    losses, _ = m.loss_terms(X, 0.5)
    z, th = m.pre_acts(X)[0], 0.5
    f, n = z * (z > th), 1.5
    per_B = {"step": (z > th).sum(-1).float(), "tanh": torch.tanh(2.0 * f * n).sum(-1),
             "quadratic": 2 / 3.0 * ((z > th).sum(-1).float() - 3.0).pow(2)}[mode]
    torch.testing.assert_close(losses["l0"], 0.7 * per_B.mean()[None])
    torch.testing.assert_close(losses["pre_act"], 0.2 * ((th - z[:, :6]).relu() * n).sum(-1).mean()[None])


def test_p_anneal_schedule_and_coefficient_adjustment():
    acts = torch.tensor([[[0.0, 0.25, 1.0, 4.0]]])
    torch.testing.assert_close(lp_penalty(acts, 1.0, "Lp^p"), torch.tensor([5.25]))  # p = 1: L1
    torch.testing.assert_close(lp_penalty(acts, 0.5, "Lp^p"), torch.tensor([0.5 + 1 + 2.0]))
    torch.testing.assert_close(lp_penalty(acts, 0.5, "Lp"), torch.tensor([3.5**2]))
    m = pack([SAEConfig(variant="p_anneal", d_in=16, d_sae=24, lp_coeff=c, anneal_start=0.2, anneal_end=0.8,
                        p_updates=4, queue_length=3, seed=i) for i, c in enumerate((0.5, 2.0))])
    X = _data()[:128]
    seen, adjust = [], []
    for step in range(10):  # no optimiser step: every batch gives the same activations
        m.schedule(step / 10)
        m.loss_terms(X, step / 10)
        seen.append(round(m.p, 4))
        adjust.append(m.adjust_K.clone())
    assert seen == [1.0, 1.0, 1.0, 1.0, 0.7333, 0.7333, 0.4667, 0.4667, 0.2, 0.2]
    acts = m.encode(X)
    ratio = lp_penalty(acts, 1.0, "Lp^p") / lp_penalty(acts, 11 / 15, "Lp^p")
    torch.testing.assert_close(adjust[3], torch.ones(2))  # first update (p stays 1): nothing to adjust yet
    torch.testing.assert_close(adjust[4], ratio)  # at 1 → 0.733 the penalty's size is kept
    losses, _ = m.loss_terms(X, 1.0)
    torch.testing.assert_close(losses["lp"], torch.tensor([0.5, 2.0]) * m.adjust_K * lp_penalty(acts, 0.2, "Lp^p"))


def test_matryoshka_aux_loss_per_prefix_block():
    m = pack([SAEConfig(variant="matryoshka", d_in=16, d_sae=24, k=3, prefixes=[6, 12, 24], aux_k=4,
                        use_matryoshka_aux_loss=True)])
    X = _data()[:128]
    m.dead_KL = torch.zeros(1, 24, dtype=torch.bool)
    m.dead_KL[0, [1, 8, 9, 20]] = True  # dead latents in every block
    losses, _ = m.loss_terms(X, 0.5)
    pre = m.pre_acts(X)
    recons = m._prefix_recons
    want = sum(aux_k_loss(X, r, pre[..., a:b], m.dead_KL[:, a:b], m.W_dec_KLD[:, a:b], 4)
               for r, (a, b) in zip(recons, ((0, 6), (6, 12), (12, 24)), strict=True)) / 32
    torch.testing.assert_close(losses["aux"], want)
    plain = aux_k_loss(X, recons[-1], pre, m.dead_KL, m.W_dec_KLD, 4) / 32
    assert float((losses["aux"] - plain).abs().detach()) > 1e-3  # not the whole-SAE aux loss


def test_packed_equals_one_by_one_with_the_v2_options(assert_packed_equals_alone):
    X = _data()
    tc = dataclasses.replace(TC, dead_after=128)  # latents die within the run, so the dead-latent losses act
    cfgs = [SAEConfig(variant="jumprelu", d_in=16, d_sae=24, sparsity_loss="tanh", tanh_scale=c, pre_act_coeff=p,
                      seed=i) for i, (c, p) in enumerate(((2.0, 0.0), (4.0, 0.3)))]
    cfgs += [SAEConfig(variant="jumprelu", d_in=16, d_sae=24, sparsity_loss="quadratic", quadratic_l0=t,
                       ste_to_input=True, seed=i) for i, t in enumerate((2.0, 5.0))]
    cfgs += [SAEConfig(variant="matryoshka", d_in=16, d_sae=24, k=k, use_matryoshka_aux_loss=True, seed=k)
             for k in (2, 4)]
    cfgs += [SAEConfig(variant="p_anneal", d_in=16, d_sae=24, lp_coeff=c, anneal_start=0.3, seed=i)
             for i, c in enumerate((0.5, 2.0))]
    cfgs += [SAEConfig(variant="matching_pursuit", d_in=16, d_sae=24, k=k, residual_threshold=t, seed=k)
             for k, t in ((2, 0.0), (5, 1.0))]
    cfgs += [SAEConfig(variant=v, d_in=16, d_sae=24, target_l0=t, start=st, seed=i)  # start: per SAE in a pack
             for v in ("relu", "gated") for i, (t, st) in enumerate(((3.0, "target"), (5.0, "dense")))]
    assert_packed_equals_alone(cfgs, X, tc)


@pytest.mark.parametrize("kw, field", [
    (dict(variant="jumprelu", sparsity_loss="cubic"), "sparsity_loss"),
    (dict(variant="jumprelu", sparsity_loss="quadratic"), "quadratic_l0"),
    (dict(variant="jumprelu", quadratic_l0=3.0), "quadratic_l0"),
    (dict(variant="jumprelu", d_sae=8, sparsity_loss="quadratic", quadratic_l0=9.0), "quadratic_l0"),
    (dict(variant="jumprelu", tanh_scale=0), "tanh_scale"),
    (dict(variant="jumprelu", pre_act_coeff=-1), "pre_act_coeff"),
    (dict(variant="p_anneal", p_end=1.5), "p_end"), (dict(variant="p_anneal", p_start=0), "p_start"),
    (dict(variant="p_anneal", anneal_start=0.6, anneal_end=0.5), "anneal_end"),
    (dict(variant="p_anneal", sparsity_function="L0"), "sparsity_function"),
    (dict(variant="p_anneal", lp_coeff=-1), "lp_coeff"), (dict(variant="p_anneal", p_updates=1), "p_updates"),
    (dict(variant="matching_pursuit", d_sae=8, k=9), "k"),
    (dict(variant="matching_pursuit", residual_threshold=-1), "residual_threshold"),
    (dict(variant="abstopk", d_sae=8, k=9), "k"),
    (dict(variant="matryoshka", use_matryoshka_aux_loss="yes"), "use_matryoshka_aux_loss")])
def test_v2_config_errors_name_the_field(kw, field):
    with pytest.raises(ConfigError, match=rf"^{field}:"):
        SAEConfig(**kw)

"""The TopK family's hand-written sparse step (BatchTopK, TopK, AbsTopK, Matryoshka) equals autograd through
the dense reference path."""

import pytest
import torch

from toymodels.sae import SAEConfig
from toymodels.sae.batchtopk import select_entries
from toymodels.sae.train import pack


def _x(n=256, d=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g) * (torch.rand(n, d, generator=g) < 0.5) * 2 + 0.3


def _step(fast, ks, running, dead, x, variant="batchtopk", **kw):
    m = pack([SAEConfig(variant=variant, d_in=16, d_sae=24, k=k, seed=i, **kw) for i, k in enumerate(ks)])
    m.fast_path, m.sparse_max_density = fast, 0.0  # reference: masks + dense bmm under autograd
    with torch.no_grad():
        m.b_enc_KL.normal_(0, 0.3, generator=torch.Generator().manual_seed(1))
        m.b_dec_KD.normal_(0, 0.3, generator=torch.Generator().manual_seed(2))
        if hasattr(m, "threshold_K"):
            m.threshold_K.fill_(running)
    if dead:
        m.dead_KL = torch.rand(m.K, m.L, generator=torch.Generator().manual_seed(3)) < 0.3
    losses, fired = m.loss_terms(x, 0.5)
    sum(losses.values()).sum().backward()
    return losses, fired, m


@pytest.mark.parametrize("dead", [False, True])
@pytest.mark.parametrize("running", [-1.0, 0.5, 50.0])
def test_sparse_step_gradients_equal_autograd(dead, running):
    """Mixed k per pack; no running threshold / a usable one / one so high the pre-filter falls back; with
    and without dead latents (the aux-k loss sends a dense gradient into the pre-activations)."""
    x, ks = _x(), (2, 5, 24)  # k = d_sae: fewer positives than k·B, all positive entries kept
    (lf, ff, mf), (lr, fr, mr) = _step(True, ks, running, dead, x), _step(False, ks, running, dead, x)
    assert set(lf) == set(lr) == ({"mse", "aux"} if dead else {"mse"})
    for name in lf:
        torch.testing.assert_close(lf[name], lr[name], rtol=1e-5, atol=1e-6)
    assert torch.equal(ff, fr) and int(ff[0].sum()) == 2 * 256
    torch.testing.assert_close(mf.threshold_K, mr.threshold_K)
    for (name, pf), pr in zip(mf.named_parameters(), mr.parameters(), strict=True):
        assert pf.grad.abs().max() > 0, name
        torch.testing.assert_close(pf.grad, pr.grad, rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.parametrize("variant,kw", [("topk", {}), ("abstopk", {}), ("matryoshka", {}),
                                        ("matryoshka", {"prefixes": [3, 10, 24], "prefix_weights": [0.5, 2, 1]})])
@pytest.mark.parametrize("dead", [False, True])
def test_sparse_step_of_topk_abstopk_matryoshka_equals_autograd(variant, kw, dead):
    """Per-sample top-k (signed for AbsTopK) and Matryoshka's nested-prefix loss through the same sparse step;
    mixed k per pack (TopK's ranks ≥ k_i and non-positive picks are dropped from the kept entries)."""
    x, ks = _x(), (2, 5, 24)
    (lf, ff, mf), (lr, fr, mr) = (_step(f, ks, 0.5, dead, x, variant, **kw) for f in (True, False))
    assert set(lf) == set(lr) == ({"mse", "aux"} if dead else {"mse"})
    for name in lf:
        torch.testing.assert_close(lf[name], lr[name], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ff.float(), fr.float())
    for (name, pf), pr in zip(mf.named_parameters(), mr.parameters(), strict=True):
        assert pf.grad.abs().max() > 0, name
        torch.testing.assert_close(pf.grad, pr.grad, rtol=1e-4, atol=1e-5, msg=name)


def _aux_step(columns, variant, n_dead, monkeypatch, fast=True):
    """One loss + backward with n_dead[i] dead latents in SAE i, the aux-k loss over the dead columns
    (`columns`) or ranked (the reference); returns (losses, model with `aux_grad_KDL` (the aux loss's ∂W_enc),
    whether a gradient reached the sparse step's dense pre)."""
    from toymodels.sae import topk
    from toymodels.sae.sparse_step import SparseStep

    monkeypatch.setattr(topk, "AUX_DEAD_COLUMNS", columns)
    seen, backward = [], SparseStep.backward

    def spy(ctx, g_mse, g_pre, *rest):
        seen.append(g_pre is not None)
        return backward(ctx, g_mse, g_pre, *rest)

    monkeypatch.setattr(SparseStep, "backward", staticmethod(spy))
    m = pack([SAEConfig(variant=variant, d_in=16, d_sae=24, k=3, seed=i) for i in range(len(n_dead))])
    m.fast_path = fast
    with torch.no_grad():
        m.b_enc_KL.normal_(0, 0.3, generator=torch.Generator().manual_seed(1))
        m.b_dec_KD.normal_(0, 0.3, generator=torch.Generator().manual_seed(2))
    g = torch.Generator().manual_seed(3)
    m.dead_KL = torch.zeros(m.K, m.L, dtype=torch.bool)
    for i, n in enumerate(n_dead):
        m.dead_KL[i, torch.randperm(m.L, generator=g)[:n]] = True
    losses, _ = m.loss_terms(_x(), 0.5)
    m.aux_grad_KDL = torch.autograd.grad(losses["aux"].sum(), m.W_enc_KDL, retain_graph=True)[0]
    sum(losses.values()).sum().backward()
    return losses, m, any(seen)


@pytest.mark.parametrize("variant", ["topk", "abstopk", "batchtopk", "matryoshka"])
@pytest.mark.parametrize("n_dead", [(1,), (8,), (0, 1, 5), (3, 8, 0, 2), (9, 2), (0, 24, 1)])
@pytest.mark.parametrize("fast", [True, False])
def test_aux_loss_over_dead_columns_equals_ranked_aux_loss(variant, n_dead, fast, monkeypatch):
    """n_dead ≤ k_aux (8 here) in every SAE: the aux-k loss over the dead columns (padded to the pack's max) has
    the ranked path's value and gradients (AbsTopK: signed, ranked by |pre|), and in the sparse step no gradient
    reaches the dense pre-activations; more dead than k_aux anywhere: the ranked path for the whole pack."""
    with monkeypatch.context() as mp:
        lc, mc, dense_c = _aux_step(True, variant, n_dead, mp, fast)
    with monkeypatch.context() as mp:
        lr, mr, dense_r = _aux_step(False, variant, n_dead, mp, fast)
    assert mc.cfgs[0].k_aux == 8 and set(lc) == set(lr) == {"mse", "aux"}
    torch.testing.assert_close(lc["aux"], lr["aux"], rtol=1e-5, atol=1e-7)
    assert all((float(a) > 0) == (n > 0) for a, n in zip(lc["aux"].detach(), n_dead, strict=True))
    for (name, pc), pr in zip(mc.named_parameters(), mr.parameters(), strict=True):
        torch.testing.assert_close(pc.grad, pr.grad, rtol=1e-4, atol=1e-6, msg=name)
    if fast:
        assert dense_r and dense_c == (max(n_dead) > 8)
    # the aux gradient reaches exactly the dead columns of W_enc
    assert torch.equal(mc.aux_grad_KDL.abs().sum(1) > 0, mc.dead_KL)


@pytest.mark.parametrize("variant", ["topk", "abstopk", "batchtopk"])
@pytest.mark.parametrize("streams", [False, True])
def test_hand_written_dead_columns_aux_equals_autograd(variant, streams, monkeypatch):
    """The dead-columns aux-k loss by `_DeadColumnsAux` (dead pre-activations gathered from the step's pre,
    gradients by hand) has the autograd version's value and gradients, on one batch and on [K, B, D] streams."""
    from toymodels.sae import topk

    x = torch.stack([_x(seed=s) for s in range(3)]) if streams else _x()
    calls, apply = [], topk._DeadColumnsAux.apply
    monkeypatch.setattr(topk._DeadColumnsAux, "apply", lambda *a: calls.append(1) or apply(*a))
    got = []
    for hand in (True, False):
        monkeypatch.setattr(topk, "AUX_HAND_BACKWARD", hand)
        m = pack([SAEConfig(variant=variant, d_in=16, d_sae=24, k=3, seed=i) for i in range(3)])
        with torch.no_grad():
            m.b_enc_KL.normal_(0, 0.3, generator=torch.Generator().manual_seed(1))
            m.b_dec_KD.normal_(0, 0.3, generator=torch.Generator().manual_seed(2))
        m.dead_KL = torch.zeros(3, 24, dtype=torch.bool)
        m.dead_KL[1, [0, 7]] = m.dead_KL[2, [3, 4, 9, 20, 23]] = True  # SAE 0: none dead
        losses, _ = m.loss_terms(x, 0.5)
        sum(losses.values()).sum().backward()
        got.append((losses, m))
    assert len(calls) == 1
    (lh, mh), (la, ma) = got
    torch.testing.assert_close(lh["aux"], la["aux"], rtol=1e-5, atol=1e-7)
    aux = lh["aux"].detach()
    assert float(aux[0]) == 0 and bool((aux[1:] > 0).all())
    for (name, ph), pa in zip(mh.named_parameters(), ma.parameters(), strict=True):
        torch.testing.assert_close(ph.grad, pa.grad, rtol=1e-4, atol=1e-6, msg=name)


def test_selection_is_exact_top_k_b_with_prefilter_and_fallback():
    g = torch.Generator().manual_seed(0)
    pre = torch.randn(3, 64, 40, generator=g)
    pre[2] = -pre[2].abs()  # nothing positive: nothing kept, t = 0
    k_K = torch.tensor([3, 7, 2])
    for ref in (-1.0, 0.1, 1.5, 100.0):
        idx, vals, t_K = select_entries(pre, k_K, torch.full((3,), ref))
        for i in range(2):
            top = pre[i].flatten().topk(int(k_K[i]) * 64)
            kept = torch.from_numpy(idx[i])
            assert torch.equal(kept, top.indices.sort().values)
            assert float(t_K[i]) == float(top.values.min())
            assert torch.equal(torch.from_numpy(vals[i]), pre[i].flatten()[kept])
        assert idx[2].size == 0 and float(t_K[2]) == 0.0


def test_row_top_k_is_each_rows_top_k(monkeypatch):
    """Short rows (no pre-filter): the value partition alone handles rows without ties; a tie at a row's k-th
    value falls back to an index partition, still exactly k per row."""
    from toymodels.sae import sparse_step
    from toymodels.sae.sparse_step import row_top_k

    g = torch.Generator().manual_seed(0)
    key = torch.randn(50, 30, generator=g)
    with monkeypatch.context() as mp:
        mp.setattr(sparse_step.np, "argpartition", None)
        for k in (1, 7, 29):
            want = (key.topk(k, dim=-1).indices + torch.arange(50)[:, None] * 30).flatten().sort().values
            assert torch.equal(torch.from_numpy(row_top_k(key.numpy(), k)), want)
    assert row_top_k(key.numpy(), 30).size == 50 * 30
    ties = key.round()
    for k in (1, 7):
        got = torch.from_numpy(row_top_k(ties.numpy(), k))
        rows, cols = got // 30, got % 30
        assert torch.equal(torch.bincount(rows, minlength=50), torch.full((50,), k))
        assert torch.equal(ties[rows, cols].view(50, k).sort(-1).values, ties.topk(k, -1).values.sort(-1).values)


def test_row_top_k_prefilter_keeps_each_rows_top_k(monkeypatch):
    """Rows wide enough for the pre-filter (L ≥ 2·64, k ≤ 32), including rows it cannot thin (a large block of
    high values), rows with ties at the k-th value (then values, not indices, are compared) and all-equal rows."""
    from toymodels.sae import sparse_step
    from toymodels.sae.sparse_step import row_top_k

    g = torch.Generator().manual_seed(1)
    plain = torch.randn(256, 512, generator=g)
    with monkeypatch.context() as mp:  # the pre-filtered path alone handles plain rows
        mp.setattr(sparse_step.np, "argpartition", None)
        for k in (1, 13, 32):
            want = (plain.topk(k, dim=-1).indices + torch.arange(256)[:, None] * 512).flatten().sort().values
            assert torch.equal(torch.from_numpy(row_top_k(plain.numpy(), k)), want)
    key = torch.randn(300, 512, generator=g)
    key[:20, :300] += 10.0  # many candidates above the bound
    key[20:40] = key[20:40].round()  # ties
    key[40:45] = 1.0  # all equal
    key[45:60] *= 1e-30
    for k in (1, 13, 32, 40):
        got = torch.from_numpy(row_top_k(key.numpy(), k))
        assert got.numel() == 300 * k and bool((got.diff() > 0).all())
        rows, cols = got // 512, got % 512
        assert torch.equal(torch.bincount(rows, minlength=300), torch.full((300,), k))
        assert torch.equal(key[rows, cols].view(300, k).sort(-1).values, key.topk(k, dim=-1).values.sort(-1).values)
        exact = torch.arange(300) >= 60
        want = (key.topk(k, dim=-1).indices + torch.arange(300)[:, None] * 512)[exact].flatten().sort().values
        assert torch.equal(got.view(300, k)[exact].flatten(), want)


def test_a_subclass_with_its_own_topk_takes_the_autograd_path():
    from toymodels.sae.topk import TopKSAE

    m = pack([SAEConfig(variant="topk", d_in=16, d_sae=24, k=3)])
    x = _x()
    assert m.fast_step_ok(x) and pack([SAEConfig(variant="abstopk", d_in=16, d_sae=24, k=3)]).fast_step_ok(x)

    class Mine(TopKSAE):
        def _topk(self, pre_KBL):
            return super()._topk(pre_KBL)

    m.__class__ = Mine
    assert not m.fast_step_ok(x)


PENALTY_CASES = [("relu", {}), ("relu_april", {}), ("p_anneal", {}), ("p_anneal", {"sparsity_function": "Lp"}),
                 ("gated", {}), ("gated", {"aux_decoder": "live"}), ("jumprelu", {}),
                 ("jumprelu", {"sparsity_loss": "tanh", "ste_to_input": True}),
                 ("jumprelu", {"sparsity_loss": "quadratic", "quadratic_l0": 3.0})]


def _penalty_step(fast, variant, kw, K, shift, x):
    """One loss + backward of K SAEs with per-SAE coefficients; `shift` moves the encoder biases (sparse: most
    pre-activations negative; dense: most positive)."""
    field = SAEConfig(variant=variant).sparsity_field
    m = pack([SAEConfig(variant=variant, d_in=16, d_sae=24, seed=i, **{field: 0.3 + 0.2 * i}, **kw)
              for i in range(K)])
    m.fast_path, m.sparse_max_density = fast, 1.0  # the sparse step whatever the support's share
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if name.endswith("_KL") and name != "log_threshold_KL":
                p.normal_(shift if name in ("b_enc_KL", "b_gate_KL") else 0.0, 0.3, generator=g)
            if name == "b_dec_KD":
                p.normal_(0, 0.3, generator=g)
            if name == "W_dec_KLD" and (variant == "relu_april" or kw.get("aux_decoder") == "live"):
                p.mul_(torch.rand(p.shape[:2], generator=g)[..., None] + 0.5)  # decoder norms matter
    if variant == "p_anneal":
        m.schedule(0.8)  # p < 1: the queue records the penalty at the next p as well
    losses, fired = m.loss_terms(x, 0.8)
    sum(losses.values()).sum().backward()
    return losses, fired, m


@pytest.mark.parametrize("variant,kw", PENALTY_CASES)
@pytest.mark.parametrize("K", [1, 3])
@pytest.mark.parametrize("shift", [-2.0, 0.8])
def test_penalty_sparse_step_equals_autograd(variant, kw, K, shift):
    """Losses, firing counts and every parameter's gradient of the sparse step (`EncodeAt`/`DecodeAt` on the
    support) equal autograd through dense activations, for sparse and dense activations and mixed packs."""
    x = _x()
    (lf, ff, mf), (lr, fr, mr) = (_penalty_step(f, variant, kw, K, shift, x) for f in (True, False))
    assert set(lf) == set(lr)
    for name in lf:
        torch.testing.assert_close(lf[name], lr[name], rtol=1e-5, atol=1e-6, msg=name)
    assert torch.equal(ff, fr)
    share = float(fr.sum()) / (K * 256 * 24)
    assert (share < 0.2) if shift < 0 else (share > 0.4), share  # the two regimes are what they claim
    for (name, pf), pr in zip(mf.named_parameters(), mr.parameters(), strict=True):
        assert pf.grad is not None and pf.grad.abs().max() > 0, name
        torch.testing.assert_close(pf.grad, pr.grad, rtol=1e-4, atol=1e-5, msg=name)
    if variant == "p_anneal":
        torch.testing.assert_close(torch.stack(mf.queue), torch.stack(mr.queue))


@pytest.mark.parametrize("variant,kw", [("relu_april", {}), ("gated", {}), ("gated", {"aux_decoder": "live"}),
                                        ("jumprelu", {"ste_to_input": True})])
def test_penalty_sparse_step_with_one_stream_per_sae(variant, kw):
    """[K, B, D] batches (each SAE its own stream) through the sparse step equal autograd."""
    x = torch.stack([_x(seed=s) for s in range(3)])
    (lf, ff, mf), (lr, fr, mr) = (_penalty_step(f, variant, kw, 3, -2.0, x) for f in (True, False))
    for name in lf:
        torch.testing.assert_close(lf[name], lr[name], rtol=1e-5, atol=1e-6, msg=name)
    assert torch.equal(ff, fr)
    for (name, pf), pr in zip(mf.named_parameters(), mr.parameters(), strict=True):
        torch.testing.assert_close(pf.grad, pr.grad, rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.parametrize("variant", ["relu", "gated", "jumprelu"])
def test_penalty_sparse_step_runs_only_below_its_density(variant, monkeypatch):
    """Above `sparse_max_density` (and off CPU, or with the pre-activation loss on) the dense path runs."""
    from toymodels.sae import penalty, sparse_step

    calls = []

    class Spy(sparse_step.Support):
        def __init__(self, *a):
            calls.append(1)
            super().__init__(*a)

    monkeypatch.setattr(penalty, "Support", Spy)
    x = _x()
    m = pack([SAEConfig(variant=variant, d_in=16, d_sae=24)])
    with torch.no_grad():
        (m.b_gate_KL if variant == "gated" else m.b_enc_KL).fill_(-5.0)  # nothing near firing
    m.loss_terms(x, 0.5)
    assert calls == [1]
    m.sparse_max_density = 0.0
    m.loss_terms(x, 0.5)
    assert calls == [1]
    if variant == "jumprelu":
        m.sparse_max_density, m.dead_KL = 1.0, torch.ones(1, 24, dtype=torch.bool)
        m.cfgs[0].pre_act_coeff = 0.1
        m.coeff.clear()
        losses, _ = m.loss_terms(x, 0.5)
        assert "pre_act" in losses and calls == [1]


@pytest.mark.parametrize("thr, stop_dup", [(0.0, False), (0.0, True), (1.0, True)])
@pytest.mark.parametrize("streams", [False, True])
def test_matching_pursuit_hand_backward_equals_autograd(thr, stop_dup, streams):
    """Training's pursuit (`_TrainPursuit`: loss from the final residual, backward by hand through the residual
    chain) against autograd through the recomputed-correlation pursuit and the decode; two SAEs per pack with
    their own thresholds, samples that stop early (duplicates, threshold) and re-picks that add to a latent."""
    cfgs = [SAEConfig(variant="matching_pursuit", d_in=16, d_sae=24, k=5, seed=i, residual_threshold=thr * (i + 1),
                      stop_on_duplicate_support=stop_dup) for i in range(2)]
    x = _x(128)[None].expand(2, -1, -1).clone() if not streams else torch.stack([_x(128, seed=s) for s in (0, 1)])
    out = []
    for gram in (True, False):
        m = pack(cfgs)
        m.gram_selection = gram
        with torch.no_grad():
            m.b_dec_KD.normal_(0, 0.3, generator=torch.Generator().manual_seed(2))
        losses, fired = m.loss_terms(x if streams else x[0], 0.5)
        sum(losses.values()).sum().backward()
        out.append((losses["mse"], fired, [p.grad for p in m.parameters()]))
    (lf, ff, gf), (lr, fr, gr) = out
    torch.testing.assert_close(lf, lr, rtol=1e-5, atol=1e-6)
    assert torch.equal(ff, fr) and 0 < ff.sum() < 2 * 128 * 5  # some samples stop before 5 latents
    for a, b in zip(gf, gr, strict=True):
        assert a.abs().max() > 0
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_rows_mm_and_flatnonzero_match_their_references():
    """`rows_mm` (embedding_bag) equals the CSR product, with empty rows; `flatnonzero` equals numpy's at every
    density, for sizes that are and are not a multiple of 8 and for non-contiguous masks."""
    import numpy as np

    from toymodels.sae.sparse_step import csr, flatnonzero, rows_mm

    rng = np.random.default_rng(0)
    for density in (0.0, 0.003, 0.03, 0.3, 0.7, 1.0):
        for shape in ((64, 40), (3, 5, 7), (8,), (1, 1024, 64)):
            m = rng.random(shape) < density
            assert np.array_equal(flatnonzero(m), np.flatnonzero(m))
            assert np.array_equal(flatnonzero(m.swapaxes(0, -1)), np.flatnonzero(m.swapaxes(0, -1)))
        mask = rng.random((64, 40)) < density
        mask[5] = False  # an empty row
        row, col = np.nonzero(mask)
        ptr = np.concatenate([[0], np.cumsum(mask.sum(1))])
        vals, dense = torch.randn(len(col)), torch.randn(40, 9)
        want = torch.mm(csr(ptr, col, vals, (64, 40)), dense)
        torch.testing.assert_close(rows_mm(ptr, col, vals, dense), want)

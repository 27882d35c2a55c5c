"""SAE zoo: packing equals one-by-one, SAELens round-trip for every architecture, validation, CLI."""

import dataclasses
import json

import pytest
import torch

from toymodels.errors import ConfigError, DataFileError
from toymodels.io import save_tensors
from toymodels.sae import SAEConfig, SAETrainConfig, export_saelens, load_saelens, train_saes
from toymodels.sae.registry import builtin_variants, config_fields
from toymodels.sae.train import pack


def _data(n=2048, d=16, f=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    feats = torch.nn.functional.normalize(torch.randn(f, d, generator=g), dim=1)
    return ((torch.rand(n, f, generator=g) < 0.08) * torch.rand(n, f, generator=g)) @ feats * 3.0


def _kw(variant, **kw):
    """The subset of `kw` that `variant`'s config has (e.g. k only for the TopK family)."""
    return {k: v for k, v in kw.items() if k in config_fields(variant)}


def _cfg(variant, **kw):
    return SAEConfig(variant=variant, d_in=kw.pop("d_in", 16), d_sae=kw.pop("d_sae", 24), **_kw(variant, **kw))


def _cfgs(d=16):
    return [_cfg(v, d_in=d, k=3, seed=i) for i, v in enumerate(builtin_variants())]


TC = SAETrainConfig(steps=30, batch_size=128, lr=3e-3, dead_after=256, log_every=10, progress=False)


@pytest.mark.parametrize("schedules", [False, True])
def test_packed_equals_one_by_one(schedules, assert_packed_equals_alone):
    """Also with the schedules on: k annealing (k_start), dead-latent resampling, per-SAE prefix weights, and the
    L0 controller (target_l0) on one SAE of each penalty-based pack."""
    X = _data()
    extra = dict(k_start=8, prefix_weights=[0.1, 0.2, 0.5, 1.0], target_l0=4) if schedules else {}
    tc = dataclasses.replace(TC, resample_every=5, resample_until=1.0) if schedules else TC

    def opts(v, k, s):
        o = {**extra, "prefix_weights": None} if (k, s) == (3, 1) else dict(extra)
        if v == "matching_pursuit" and extra:
            o["target_l0"] = k - 0.5  # MP's residual threshold can only stop samples before k steps
        return o

    cfgs = [_cfg(v, k=k, seed=s, **opts(v, k, s)) for v in builtin_variants() for k, s in ((3, 1), (5, 2))]
    assert_packed_equals_alone(cfgs, X, tc)


def test_saelens_round_trip_every_architecture(tmp_path):
    sae_lens = pytest.importorskip("sae_lens")
    X = _data()
    saes = train_saes(_cfgs(), X, TC)
    archs = set()
    for s in saes:
        out = export_saelens(s, tmp_path / s.cfg.label)
        cfg = json.loads((out / "cfg.json").read_text())
        theirs = sae_lens.SAE.load_from_disk(str(out))
        ours = load_saelens(out)
        archs.add(cfg["architecture"])
        with torch.no_grad():
            a_ref = s.encode(X[:256])
            assert (a_ref > 0).any(), s.cfg.label
            torch.testing.assert_close(theirs.encode(X[:256]), a_ref, rtol=1e-5, atol=1e-5, msg=s.cfg.label)
            torch.testing.assert_close(ours.encode(X[:256]), a_ref, rtol=1e-6, atol=1e-6)
            torch.testing.assert_close(theirs.decode(a_ref), s.decode(a_ref), rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(ours.decode(a_ref), s.decode(a_ref))
        assert ours.cfg == s.cfg and ours.history["loss"] == s.history["loss"]
        meta = cfg["metadata"]  # provenance: config (with seed) and package versions to rerun it
        assert meta["toymodels_config"]["seed"] == s.cfg.seed and "torch" in meta["toymodels_environment"]
    assert archs == {"standard", "topk", "abstopk", "jumprelu", "gated", "matching_pursuit"}


def test_export_folds_normalisation_and_decoder_norms():
    X = _data() * 50.0  # far from E‖x‖² = d_in, so the folded scale matters
    (raw,) = train_saes([SAEConfig(variant="relu_april", d_in=16, d_sae=24, init_scale=0.1)], X, TC)
    assert raw.scale == pytest.approx((16 / X.pow(2).sum(1).mean()).sqrt().item(), rel=1e-5)
    torch.testing.assert_close(raw.W_dec.norm(dim=1), torch.ones(24))  # April norms folded into the encoder
    fvu = (raw(X) - X).pow(2).sum() / (X - X.mean(0)).pow(2).sum()
    assert fvu < 0.9  # reconstructs in the raw units, not the normalised ones


def test_gated_live_aux_decoder_trains_it_and_exports_unit_rows():
    """aux_decoder: live (SAELens's form): the auxiliary reconstruction's gradient reaches W_dec and b_dec as
    decoder (frozen: b_dec only as the encoder's input shift), rows stay free; the export folds the norms into the
    encoder side (unit rows, same function)."""
    from toymodels.sae.train import fold_scale

    X = _data()[:128]
    grads = {}
    for aux in ("frozen", "live"):
        m = pack([_cfg("gated", seed=0, aux_decoder=aux)])
        losses, _ = m.loss_terms(X, 0.5)
        losses["aux"].sum().backward()
        grads[aux] = (m.W_dec_KLD.grad, m.b_dec_KD.grad)
        assert m.unit_norm_decoder == (aux == "frozen")
    assert grads["frozen"][0] is None or not grads["frozen"][0].any()  # (b_dec: through the encoder input only)
    assert grads["live"][0].abs().max() > 0 and not torch.allclose(grads["live"][1], grads["frozen"][1])
    with pytest.raises(ConfigError, match="^aux_decoder:"):
        _cfg("gated", aux_decoder="thawed")
    m = pack([_cfg("gated", seed=0, aux_decoder="live")])
    with torch.no_grad():
        m.W_dec_KLD.mul_(torch.rand(1, 24, 1) + 0.5)
        m.b_gate_KL.normal_(0.3, 0.3)
        m.b_mag_KL.normal_(0, 0.3)
        m.r_mag_KL.normal_(0, 0.3)
    m.eval()
    arch, t, extra = m.inference(0)
    s = fold_scale(m.cfgs[0], arch, t, extra, 1.0, m.apply_b_dec_to_input, {})
    torch.testing.assert_close(s.W_dec.norm(dim=1), torch.ones(24))
    with torch.no_grad():
        torch.testing.assert_close(s(X), m.decode(m.encode(X))[0], rtol=1e-5, atol=1e-5)


def test_topk_rows_unit_norm_and_l0():
    X = _data()
    (s,) = train_saes([SAEConfig(variant="topk", d_in=16, d_sae=24, k=3)], X, TC)
    torch.testing.assert_close(s.W_dec.norm(dim=1), torch.ones(24))
    assert ((s.encode(X) > 0).sum(1) <= 3).all()
    assert set(s.history) >= {"step", "loss", "mse", "L0", "dead_frac"} and s.history["step"][-1] == 30


def test_iterator_data_and_no_grad():
    X = _data()
    (s,) = train_saes([SAEConfig(variant="batchtopk", d_in=16, d_sae=24, k=3)], iter(X.split(128)), TC)
    assert s.history["steps_done"] == 16  # the iterator ran out first
    with torch.no_grad():
        assert s.encode(X[:8]).shape == (8, 24)


@pytest.mark.parametrize("kw, field", [
    (dict(k=30, d_sae=24), "k"), (dict(variant="bogus"), "variant"), (dict(d_sae=0), "d_sae"),
    (dict(variant="matryoshka", d_sae=24, prefixes=[8, 4, 24]), "prefixes"),
    (dict(variant="jumprelu", bandwidth=0), "bandwidth"), (dict(k=4, k_start=3), "k_start"),
    (dict(variant="matryoshka", d_sae=24, prefix_weights=[1, 1]), "prefix_weights"),
    (dict(variant="jumprelu", threshold_lr_scale=0), "threshold_lr_scale"),
    (dict(variant="relu", l1_coeff=-1), "l1_coeff"), (dict(variant="gated", init_scale=0), "init_scale")])
def test_config_errors_name_the_field(kw, field):
    with pytest.raises(ConfigError, match=rf"^{field}:"):
        SAEConfig(**kw)


@pytest.mark.parametrize("variant, key", [("jumprelu", "k"), ("relu", "l0_coeff"), ("topk", "l1_coeff"),
                                          ("batchtopk", "prefixes")])
def test_key_of_another_variant_is_an_error(variant, key):
    """Today's silent `k=10` for jumprelu: a key the chosen variant lacks names the key and the variant."""
    with pytest.raises(ConfigError, match=rf"^{key}: not a field of variant {variant}; its fields: .*d_sae"):
        SAEConfig(variant=variant, **{key: 3})


def test_data_errors():
    with pytest.raises(ConfigError, match="^d_in:"):
        train_saes([SAEConfig(d_in=8)], _data(), TC)
    with pytest.raises(ConfigError, match="^data:"):
        train_saes([SAEConfig(d_in=16)], torch.zeros(10, 16, dtype=torch.long), TC)
    with pytest.raises(ConfigError, match="^warmup_steps:"):
        SAETrainConfig(steps=10, warmup_steps=10)
    with pytest.raises(ConfigError, match="^resample_until:"):
        SAETrainConfig(resample_until=1.5)
    with pytest.raises(ConfigError, match="^resample_min_rate:"):
        SAETrainConfig(resample_min_rate=-0.1)


@pytest.mark.parametrize("variant", ["relu_april", "topk", "jumprelu", "gated"])
def test_resample_reinitialises_dead_latents(variant):
    """A dead latent gets the unit residual direction of the worst-reconstructed sample as decoder row and
    encoder column, and its Adam moments are cleared; live latents and their moments are untouched."""
    from toymodels.sae.resample import resample_dead

    X = _data()[:128]
    m = pack([_cfg(variant, k=3, seed=s) for s in (0, 1)])
    opt = torch.optim.Adam(m.param_groups(), lr=1e-3)
    losses, _ = m.loss_terms(X, 0.5)
    sum(losses.values()).sum().backward()
    opt.step()
    before = {n: p.detach().clone() for n, p in m.named_parameters()}
    with torch.no_grad():
        m.eval()
        resid_BD = X - m.decode(m.encode(X))[1]
        m.train()
    worst = resid_BD.pow(2).sum(-1).argsort(descending=True)[:2]
    want_2D = torch.nn.functional.normalize(resid_BD[worst], dim=-1)
    dead = torch.zeros(2, 24, dtype=torch.bool)
    dead[1, [4, 7]] = True
    assert resample_dead(m, dead, X, opt) == 2
    W = m.W_dec_KLD[1, [4, 7]].detach()
    torch.testing.assert_close(torch.nn.functional.normalize(W, dim=-1), want_2D)
    torch.testing.assert_close(W.norm(dim=-1), before["W_dec_KLD"][1, [4, 7]].norm(dim=-1))
    enc = torch.nn.functional.normalize(m.W_enc_KDL[1][:, [4, 7]].T.detach(), dim=-1)
    torch.testing.assert_close(enc, want_2D)  # encoder column along the same direction
    for n, p in m.named_parameters():  # SAE 0 and SAE 1's live latents untouched
        torch.testing.assert_close(p[0], before[n][0])
    keep = [i for i in range(24) if i not in (4, 7)]
    torch.testing.assert_close(m.W_dec_KLD[1, keep], before["W_dec_KLD"][1, keep])
    state = opt.state[m.W_dec_KLD]
    assert state["exp_avg_sq"][1, [4, 7]].abs().sum() == 0 and state["exp_avg_sq"][1, keep].abs().sum() > 0
    assert opt.state[m.W_enc_KDL]["exp_avg"][1][:, [4, 7]].abs().sum() == 0
    for n, p in m.named_parameters():  # per-latent vectors (biases, thresholds) back to their init
        if n.endswith("_KL"):
            assert before[n][1, [4, 7]].ne(m.latent_init(n, 1)).all(), n  # the step above had moved them
            torch.testing.assert_close(p[1, [4, 7]], torch.full((2,), m.latent_init(n, 1)))
            torch.testing.assert_close(p[1, keep], before[n][1, keep])


def test_resample_min_rate_revives_rarely_firing_latents(monkeypatch):
    """With resample_min_rate, latents firing at under that fraction of the mean rate are resampled too."""
    import toymodels.sae.train as train_mod

    seen = []
    monkeypatch.setattr(train_mod, "resample_dead", lambda m, dead_KL, x, opt: seen.append(dead_KL.clone()))
    X = _data()
    cfg = SAEConfig(variant="topk", d_in=16, d_sae=24, k=3)
    for rate, expect_more in ((0.0, False), (0.5, True)):
        seen.clear()
        train_saes([cfg], X, dataclasses.replace(TC, resample_every=10, resample_until=1.0, resample_min_rate=rate,
                                                 dead_after=10**9))
        n = sum(int(d.sum()) for d in seen)
        assert (n > 0) == expect_more, (rate, n)  # dead_after is never reached, so only the rate can flag


def test_divergence_names_the_sae():
    from toymodels.errors import DivergenceError

    bad = _data()
    bad[5:300, 0] = 1e30  # overflows the squared error
    with pytest.raises(DivergenceError, match="topk-24-s0"):
        train_saes([SAEConfig(variant="topk", d_in=16, d_sae=24)], bad,
                   SAETrainConfig(steps=5, batch_size=128, normalize=False, progress=False))


def test_load_saelens_rejects_malformed(tmp_path):
    (s,) = train_saes([SAEConfig(variant="jumprelu", d_in=16, d_sae=24)], _data(), TC)
    out = export_saelens(s, tmp_path / "j")
    t = s.tensors()
    t["threshold"] = torch.zeros(5)
    save_tensors(out / "sae_weights.safetensors", t)
    with pytest.raises(DataFileError, match="threshold has shape"):
        load_saelens(out)
    (out / "sae_weights.safetensors").write_bytes(b"junk")
    with pytest.raises(DataFileError, match="not a valid safetensors"):
        load_saelens(out)
    (out / "cfg.json").write_text('{"architecture": "weird", "d_in": 16, "d_sae": 24}')
    with pytest.raises(DataFileError, match="architecture 'weird'"):
        load_saelens(out)


def test_cli_trains_and_exports(tmp_path, capsys):
    from toymodels.cli import main

    save_tensors(tmp_path / "d.safetensors", {"hidden": _data()})
    rc = main(["sae", "train", str(tmp_path / "d.safetensors"), "--out", str(tmp_path / "o"),
               "variant=[topk,jumprelu]", "d_sae=24", "steps=20", "batch_size=128"])
    assert rc == 0
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["jumprelu-24-s0", "topk-24-s0"]
    assert load_saelens(tmp_path / "o" / "topk-24-s0").k == 4
    save_tensors(tmp_path / "bad.safetensors", {"hidden": torch.zeros(4, 3, 2)})
    assert main(["sae", "train", str(tmp_path / "bad.safetensors"), "--out", str(tmp_path / "o2")]) == 2
    assert "hidden must be a 2-D float32" in capsys.readouterr().err
    # a key one of the chosen variants lacks is a one-line error before any training (k was ignored silently)
    assert main(["sae", "train", str(tmp_path / "d.safetensors"), "--out", str(tmp_path / "o3"),
                 "variant=[topk,jumprelu]", "k=10"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("toymodels: error: k: not a field of variant jumprelu") and "\n" not in err
    assert not (tmp_path / "o3").exists()
    assert main(["sae", "train", str(tmp_path / "d.safetensors"), "--out", str(tmp_path / "o3"), "kk=1"]) == 2
    assert "kk: unknown key" in capsys.readouterr().err


@pytest.mark.parametrize("variant", ["topk", "batchtopk", "matryoshka"])
def test_sparse_decode_matches_dense(variant):

    X = _data()[:256]
    grads = []
    for density in (1.0, 0.0):  # always sparse, never sparse
        m = pack([_cfg(variant, k=k, seed=k) for k in (3, 5)])
        m.sparse_max_density = density
        m.fast_path = False  # the autograd path (the hand-written one is tests/test_sae_fastpath.py)
        losses, _ = m.loss_terms(X, 0.5)
        sum(losses.values()).sum().backward()
        grads.append([p.grad.clone() for p in (m.W_dec_KLD, m.W_enc_KDL, m.b_dec_KD)])
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_batchtopk_keeps_exactly_the_batch_top_k():
    """The threshold selection keeps the same k·B entries as a top-k over the flattened batch, before and
    after the running threshold (which enables the pre-filter) exists; mixed k per SAE in one pack."""

    m = pack([_cfg("batchtopk", k=k, seed=k) for k in (2, 5)])
    for threshold in (-1.0, 0.3):
        m.threshold_K.fill_(threshold)
        pre = m.pre_acts(_data()[:128]).detach()
        kept, _ = m.select(pre)
        for i, k in enumerate((2, 5)):
            ref = torch.zeros(128 * 24, dtype=torch.bool)
            ref[pre[i].relu().flatten().topk(k * 128).indices] = True
            assert torch.equal(kept[i].flatten(), ref)


def test_init_never_starts_at_a_same_seed_dictionary():
    """Regression: SAE decoders and synthetic dictionaries once both came from manual_seed(seed), so an SAE with
    the dictionary's seed started *at* the ground truth (MCC 0.99 after 150 steps instead of 0.3)."""
    from toymodels.groundtruth.synthetic import Dictionary, SyntheticConfig

    for seed in (0, 1):
        W_LD = pack([_cfg("topk", seed=seed)]).W_dec_KLD[0].detach()
        plain_LD = torch.nn.functional.normalize(torch.randn(24, 16, generator=torch.Generator().manual_seed(seed)))
        V_FD = Dictionary(SyntheticConfig(n_features=24, d_model=16, n_roots=0, seed=seed)).vectors
        for other in (plain_LD, V_FD):
            assert (W_LD * other).sum(-1).abs().max() < 0.9  # no row starts on its same-index twin


def test_grad_clip_is_per_sae(assert_packed_equals_alone):
    """`grad_clip` scales each SAE's whole gradient to the cap (a small one is untouched), so packing is unchanged."""
    from toymodels.sae.train import clip_grad_per_sae

    m = pack([_cfg("gated", seed=0), _cfg("gated", seed=1)])
    for p in m.parameters():
        p.grad = torch.randn_like(p) * torch.tensor([10.0, 1e-3]).view(-1, *[1] * (p.ndim - 1))
    before_K = torch.stack([p.grad.reshape(2, -1).pow(2).sum(1) for p in m.parameters()]).sum(0).sqrt()
    clip_grad_per_sae(m, 1.0)
    after_K = torch.stack([p.grad.reshape(2, -1).pow(2).sum(1) for p in m.parameters()]).sum(0).sqrt()
    assert before_K[0] > 10 and after_K[0] == pytest.approx(1.0, rel=1e-5)
    assert after_K[1] == pytest.approx(float(before_K[1]), rel=1e-6)
    X = _data()
    cfgs = [_cfg(v, seed=s, target_l0=4) for v in ("relu", "gated") for s in (1, 2)]
    tc = dataclasses.replace(TC, grad_clip=0.05)
    assert_packed_equals_alone(cfgs, X, tc)
    clipped, free = train_saes(cfgs[:1], X, tc)[0], train_saes(cfgs[:1], X, TC)[0]
    assert (clipped.W_dec - free.W_dec).abs().max() > 1e-3  # the cap was active
    with pytest.raises(ConfigError, match="grad_clip"):
        SAETrainConfig(grad_clip=-1)

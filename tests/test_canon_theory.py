"""The theory behind the phase diagrams (exact expected loss, the 2→1 optimum, 3→2 candidates), exact restart
selection, correlated's three pairs, and the gallery's sections."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from toymodels import theory
from toymodels.config import ToyConfig, TrainConfig
from toymodels.errors import ConfigError
from toymodels.features import sample_dense
from toymodels.models import TiedModel


def _mc_loss(W_FH, b_F, imp_F, p, n=200_000, seed=0) -> tuple[float, float]:
    """(mean, standard error) of the trainer's per-sample loss Σ_f I_f (x'_f − x_f)²/F for one relu_output model."""
    F, H = np.shape(W_FH)
    m = TiedModel("relu_output", 1, F, H, torch.Generator().manual_seed(0))
    with torch.no_grad():
        m.W.copy_(torch.tensor(np.asarray(W_FH, np.float32)[None]))
        m.b.copy_(torch.tensor(np.asarray(b_F, np.float32)[None]))
        cfg = ToyConfig(n_features=F, n_hidden=H, density=p)
        x = sample_dense(cfg, torch.full((1, F), p), n, torch.Generator().manual_seed(seed))
        per = ((m(x) - x).square() * torch.tensor(imp_F, dtype=torch.float32)).sum(-1)[0].double() / F
    return float(per.mean()), float(per.std() / np.sqrt(n))


def test_expected_loss_matches_monte_carlo_for_three_features():
    rng = np.random.default_rng(3)
    W, b, imp = rng.normal(size=(3, 2)), rng.normal(size=3) * 0.2, [1.0, 2.0, 0.5]
    mean, se = _mc_loss(W, b, imp, 0.6)
    exact = theory.expected_loss(W[None], b[None], 0.6, np.array([imp]))[0]
    assert abs(exact - mean) < 4 * se, (exact, mean, se)


@pytest.mark.parametrize("p, r", [(0.1, 0.3), (0.5, 1.0), (0.8, 1.0), (0.3, 2.0)])
def test_optimum_beats_every_candidate_and_matches_monte_carlo(p, r):
    opt = theory.optimum_2to1(p, r)
    for name, loss in theory.candidate_losses_2to1(p, r).items():
        assert opt.loss <= float(loss) + 1e-12, name
    mean, se = _mc_loss(opt.W[:, None], opt.b, [1.0, r], p, seed=1)
    assert abs(opt.loss - mean) < 4 * se, (opt.loss, mean, se)
    # no random start finds a lower loss
    rng = np.random.default_rng(0)
    z = rng.uniform([-1.3, -1.3, -0.5, -0.5], [1.3, 1.3, 0.5, 0.5], size=(50, 4))
    assert min(theory.loss_2to1(p, r, zi) for zi in z) >= opt.loss - 1e-12


def test_quoted_example_density_half_beats_equal_norm_antipodal_with_a_positive_bias():
    opt = theory.optimum_2to1(0.5, 1.0)
    # the issue quotes the summed loss Σ_f I_f E[...] (= 2 × the trainer's mean over features)
    assert 2 * opt.loss == pytest.approx(0.0763, abs=2e-4)
    assert 2 * float(theory.candidate_losses_2to1(0.5, 1.0)["antipodal_equal"]) == pytest.approx(0.0813, abs=2e-4)
    assert opt.kind == "antipodal" and (opt.b > 0.05).all(), opt


def test_partial_superposition_at_density_0_8():
    opt = theory.optimum_2to1(0.8, 1.0)
    assert opt.kind == "partial", opt
    np.testing.assert_allclose(np.sort(np.abs(opt.W)), [0.445, 0.93], atol=0.01)
    assert opt.W[0] * opt.W[1] < 0  # opposite signs: superposition, not two dedicated copies
    ignore = float(theory.candidate_losses_2to1(0.8, 1.0)["ignore"])
    assert opt.loss < ignore * 0.995  # beats ignoring (= dedicating at r = 1)


def test_unequal_norms_win_away_from_r_1():
    opt = theory.optimum_2to1(0.3, 0.3)
    assert opt.kind == "antipodal" and abs(opt.W[1]) < abs(opt.W[0]) - 0.1, opt


def test_boundary_at_r_0_3_moves_to_density_0_376():
    below, above = theory.optimum_2to1(0.37, 0.3), theory.optimum_2to1(0.383, 0.3)
    assert below.phase == "superposition" and above.kind == "ignore", (below, above)
    # the equal-norm candidates put the boundary lower (0.347): they already choose ignore at 0.36
    cand = theory.candidate_losses_2to1(0.36, 0.3)
    assert cand["ignore"] < cand["antipodal_equal"]
    assert list(theory.phase_2to1([0.37, 0.383], 0.3)) == ["superposition", "not_represented"]


def test_tabulated_phase_matches_the_polished_optimum():
    p, r = np.array([0.02, 0.6, 0.9]), np.array([3.0, 0.2, 4.0])
    grid = theory.phase_2to1(p, r)
    polished = [theory.optimum_2to1(float(q), float(s)).phase for q, s in zip(p, r, strict=True)]
    assert list(grid) == polished == ["superposition", "not_represented", "dedicated"]


def test_3to2_candidates_at_low_density():
    # the extra feature shares a dimension when it is less important, takes one when it is more important
    assert list(theory.phase_3to2(0.02, [0.5, 2.0])) == ["superposition", "dedicated"]


def test_exact_eval_selects_restarts_on_the_expected_loss():
    from toymodels.train import train

    cfg = ToyConfig(n_features=3, n_hidden=2, density=[[0.05], [0.5]], importance=[1.0, 1.0, 0.7])
    res = train(cfg, TrainConfig(steps=300, batch_size=256, lr=0.01, restarts=3, eval_mode="exact",
                                 progress=False))
    exact = theory.expected_loss(res.W.double().numpy(), res.model.b.detach().double().numpy(),
                                 cfg.density_array(), cfg.importance_array())
    np.testing.assert_allclose(res.final_loss.numpy(), exact, rtol=1e-5)
    assert (res.final_loss <= res.restart_loss.min(1).values + 1e-9).all()
    with pytest.raises(ConfigError, match="eval_mode"):
        train(ToyConfig(n_features=4, n_hidden=2), TrainConfig(steps=1, eval_mode="exact"))
    with pytest.raises(ConfigError, match="eval_mode"):
        TrainConfig(eval_mode="exactly")


def test_phase_sweeps_select_on_the_exact_loss():
    from toymodels.sweep import load

    for name in ("phase_2to1", "phase_3to2"):
        assert load(name).train.eval_mode == "exact", name


def test_phase_3to2_quick_agrees_with_theory():
    """The quick 8×8 grid at the figure's 10 restarts: measured 100 % of the 42 cells away from the lines on
    seeds 0 and 1 (full 12×12: see README). With the quick figure's 4 restarts the low-density cells depend on
    the CPU's float paths (one machine 98 % overall; an AMD EPYC 93 % overall and 21 of 24 low-density cells,
    3 stuck in superposition where the optimum is a dedicated dimension; 6 restarts 96–98 %), so this checks the
    restart count the claim is made at."""
    from toymodels.paper import phase_3to2 as fig

    torch.set_num_threads(1)
    df = fig.compute(quick=True, overrides=("train.restarts=10",))
    agree, n = df.attrs["agreement"], df.attrs["cells_used"]
    assert n >= 30 and agree >= 0.95, (agree, n)
    low = df[(df.density <= 0.09) & ~df.near_boundary]
    assert len(low) >= 20 and (low.phase == low.theory).mean() >= 0.95  # where too few restarts go wrong


@pytest.mark.slow
def test_triangle_never_wins_on_the_grid():
    for p, r in [(0.02, 1.0), (0.1, 0.7), (0.3, 2.0)]:
        L = theory.losses_3to2(p, r)
        assert L["triangle"] > min(L["share"], L["own_dim"]), (p, r, L)


def test_correlated_three_pairs_local_orthogonal_bases():
    from toymodels.paper import correlated

    torch.set_num_threads(1)
    df = correlated.three_pairs(quick=True)
    s3 = correlated.pair_stats(df, 3)
    assert s3["within"] < 0.1, s3  # m = 3: each correlated pair orthogonal ...
    assert s3["cross_min"] < -0.9, s3  # ... while each feature is antipodal to another set's (superposition)
    hexa = df[df.structure == "three pairs, m=2"]
    assert (hexa.norm > 0.5).all() and (hexa.pair_cosine > 0.25).all(), hexa  # m = 2: side by side


def test_gallery_index_groups_figures_by_section(tmp_path, monkeypatch):
    from types import SimpleNamespace

    import toymodels.paper as gallery

    mods = {"intro": SimpleNamespace(TITLE="Intro", CAPTION="a\nb", __name__="intro"),  # no SECTION: paper
            "correlated": SimpleNamespace(TITLE="Corr", CAPTION="a\nb", SECTION="paper", __name__="correlated",
                                          SOURCE="Elhage et al. 2022, Superposition with correlated features"),
            "sae_recovery": SimpleNamespace(TITLE="SAE", CAPTION="a\nb", SECTION="sae", SOURCE="S", __name__="s")}
    monkeypatch.setattr(gallery, "load", mods.__getitem__)
    for name in mods:
        (tmp_path / f"{name}.png").write_bytes(b"png")
    gallery.write_index(tmp_path)
    page = (tmp_path / "index.html").read_text()
    paper, sae = page.index("The 2022 paper</h2>"), page.index("SAEs on ground truth</h2>")
    assert paper < page.index('id="intro"') < page.index('id="correlated"') < sae < page.index('id="sae_recovery"')
    assert "The follow-ups</h2>" not in page  # empty sections are left out
    assert "Reproduces: Elhage et al. 2022, Superposition with correlated features" in page
    mods["intro"].SECTION = "nope"
    with pytest.raises(ConfigError, match="SECTION: intro"):
        gallery.write_index(tmp_path)


def test_every_figure_names_its_section_and_source():
    """Passes once every figure branch is merged; a failure names the module that lacks SECTION or SOURCE."""
    from toymodels.paper import FIGURES, SECTIONS, load

    missing = [n for n in FIGURES if getattr(load(n), "SECTION", None) not in SECTIONS
               or not getattr(load(n), "SOURCE", "")]
    assert not missing, f"figure modules without SECTION/SOURCE: {', '.join(missing)}"

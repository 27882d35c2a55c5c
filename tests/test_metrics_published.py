"""The metrics as the literature defines them (signed MMCS, Chanin et al.'s absorption as in SAEBench, the
per-edge absorption gap) on hand-made cases whose answers are computed by hand in the comments."""

import math

import pandas as pd
import pytest
import torch

from toymodels.groundtruth import absorption as A
from toymodels.groundtruth import metrics as M

R2 = math.sqrt(2)


def test_signed_and_abs_mmcs_differ_on_a_flipped_row():
    V = torch.eye(2)
    # row 0 is −v_0: |cos| finds feature 0, the signed cosine does not (its best row, row 1, has cos 0)
    W = torch.stack([-V[0], V[1]])
    assert M.mmcs_abs(W, V) == pytest.approx(1.0)
    assert M.mmcs(W, V) == pytest.approx(0.5)
    # feature 0: cosines −1 and 0.6 → signed max 0.6, |cos| max 1; feature 1: cosines 0 and 0.8 → 0.8 for both
    W2 = torch.stack([-V[0], 0.6 * V[0] + 0.8 * V[1]])
    assert M.mmcs(W2, V) == pytest.approx((0.6 + 0.8) / 2)
    assert M.mmcs_abs(W2, V) == pytest.approx((1.0 + 0.8) / 2)
    assert M.mmcs(3 * V, V) == M.mmcs_abs(3 * V, V) == pytest.approx(1.0)  # equal when every row points along


def _absorbing_case():
    """Features: 0 parent, 1 and 2 its children, 3 an unrelated top-level feature; 50 samples, all with the
    parent. Latents: l0 = v_0 (the parent's), l1 = (v_0 + v_1)/√2 (child 1, carrying the parent), l2 = v_2,
    l3 = (v_0 + v_3)/√2 (unrelated, carrying the parent)."""
    V = torch.eye(4)
    W = torch.stack([V[0], (V[0] + V[1]) / R2, V[2], (V[0] + V[3]) / R2])
    parent = torch.tensor([-1, 0, 0, -1])
    true, acts = [], []
    true += [[1, 0, 0, 0]] * 38
    acts += [[1, 0, 0, 0]] * 38
    true += [[1, 0, 1, 0]] * 8  # parent + child 2: both own latents fire
    acts += [[1, 0, 1, 0]] * 8
    true += [[1, 1, 0, 0]] * 3
    acts += [[0, R2, 0, 0],  # a1: l1 alone projects √2·(1/√2) = 1 = x·v_0: full absorption, fraction 1
             [0, 0.3 * R2, 0, 0],  # a2: l1 carries 0.3 of x·v_0 < 0.4: neither
             [0.5, 0.5 * R2, 0, 0]]  # a3: main 0.5, absorber 0.5: not full (l0 fires), fraction 0.5/(0.5+0.5)
    true += [[1, 0, 0, 1]]  # a4: an unrelated latent absorbs the parent: full, fraction 1
    acts += [[0, 0, 0, R2]]
    true, acts = torch.tensor(true, dtype=torch.float32), torch.tensor(acts, dtype=torch.float32)
    return true @ V, acts, true, W, V, parent


def test_chanin_absorption_by_hand():
    x, acts, true, W, V, parent = _absorbing_case()
    # main latents of the parent: l0 (F1 2·47/(47+50) = 0.969) ranks first; l2 (F1 0.28) adds no new
    # sample, so the F1 jump rule stops at k = 1 (adding l1 would give 0.990, a jump of 0.021 < 0.03 anyway)
    (main,) = A.main_latents(acts, true, A.parents(parent))
    assert main.tolist() == [0]
    out = A.absorption_chanin(x, acts, true, W, V, parent)
    assert out["parent"].tolist() == [0]
    assert out["absorption"] == pytest.approx(2 / 50)  # a1 and a4
    assert out["absorption_fraction"] == pytest.approx((1 + 0 + 0.5 + 1) / 50)  # a1, a2, a3, a4
    # our matched variant only lets the child's own latent absorb: a1 and a2 of the 3 child-1 events + 0 of
    # the 8 child-2 events
    assert A.absorption_matched(acts, true, W, V, parent) == pytest.approx(2 / 11)
    # the signed cosine: the same unrelated latent pointing away from the parent projects negatively → no
    # absorption (|cos| would have counted it)
    W_neg = W.clone()
    W_neg[3] = (-V[0] + V[3]) / R2
    out_neg = A.absorption_chanin(x, acts, true, W_neg, V, parent)
    assert out_neg["absorption"] == pytest.approx(1 / 50)
    assert out_neg["absorption_fraction"] == pytest.approx(1.5 / 50)


def test_split_parent_latents_are_main_not_absorbers():
    # the parent is split over two latents that each cover half of its samples: F1 0.67 → 1.0 at k = 2, so both
    # are main latents and nothing is absorbed (SAEBench's feature-splitting rule)
    V = torch.eye(2)
    W = torch.stack([V[0], V[0]])
    true = torch.tensor([[1.0, 0]] * 10)
    acts = torch.tensor([[1.0, 0]] * 5 + [[0, 1.0]] * 5)
    parent = torch.tensor([-1, 0])
    assert sorted(A.main_latents(acts, true, A.parents(parent))[0].tolist()) == [0, 1]
    assert A.absorption_chanin(true @ V, acts, true, W, V, parent)["absorption"] == 0.0


def _hierarchy(n=4000, branching=3, n_roots=3, depth=2):
    from toymodels.groundtruth.synthetic import Dictionary, SyntheticConfig

    cfg = SyntheticConfig(n_features=40, d_model=24, n_roots=n_roots, branching=branching, depth=depth,
                          p_max=0.3, p_min=0.05)
    return Dictionary(cfg).sample(n, seed=3)


def test_faithful_sae_has_no_absorption_and_zero_gap():
    ds = _hierarchy()
    true, V = ds.true_acts(), ds.feature_vectors
    s = M.score_tensors(ds.hidden, true, true @ V, V, V, true, ds.parent)
    assert s["absorption"] == 0.0 and s["absorption_fraction"] == 0.0 and s["absorption_matched"] == 0.0
    assert s["absorption_gap"] == 0.0
    assert s["mmcs"] == pytest.approx(1.0, abs=1e-6) and s["mmcs_abs"] == pytest.approx(1.0, abs=1e-6)


def test_absorption_gap_when_the_parent_latent_stops_for_its_children():
    # chains (one child per parent): with siblings, "parent without child c" would include c's siblings
    ds = _hierarchy(branching=1, n_roots=6, depth=3)
    true, V, parent = ds.true_acts(), ds.feature_vectors, ds.parent
    # oracle latents = the true features, except that a parent's latent is silent whenever one of its children
    # is active: P(parent latent | parent, no child) = 1 and P(... | parent, child) = 0 on every edge
    acts = true.clone()
    for p in A.parents(parent).tolist():
        acts[(true[:, parent == p] != 0).any(1), p] = 0
    edges = A.absorption_gap_edges(acts, true, V, V, parent)
    n_edges = int((parent >= 0).sum())
    assert len(edges["gap"]) == n_edges and edges["latent"].tolist() == edges["parent"].tolist()
    ok = ~edges["gap"].isnan()
    assert n_edges == 12 and int(ok.sum()) >= 6  # NaN: the parent never fires without its child
    assert edges["p_without"][ok].tolist() == [1.0] * int(ok.sum())
    assert edges["p_with"][ok].tolist() == [0.0] * int(ok.sum())
    assert A.absorption_gap(acts, true, V, V, parent) == pytest.approx(1.0)


def test_absorption_gap_by_hand():
    V = torch.eye(3)
    parent = torch.tensor([-1, 0, 0])
    # parent alone ×4 (its latent fires in 3), parent + child 1 ×2 (fires in 0), parent + child 2 ×2 (fires in 1)
    true = torch.tensor([[1, 0, 0]] * 4 + [[1, 1, 0]] * 2 + [[1, 0, 1]] * 2, dtype=torch.float32)
    acts = true.clone()
    acts[[3, 4, 5, 6], 0] = 0
    e = A.absorption_gap_edges(acts, true, V, V, parent)
    # edge 0→1: without child 1 the parent latent fires in 3 + 1 of 6 samples, with it in 0 of 2
    # edge 0→2: without child 2 it fires in 3 + 0 of 6, with it in 1 of 2
    assert e["p_without"].tolist() == pytest.approx([4 / 6, 3 / 6])
    assert e["p_with"].tolist() == pytest.approx([0.0, 0.5])
    assert A.absorption_gap(acts, true, V, V, parent) == pytest.approx((4 / 6 + 0.0) / 2)


def test_mismatched_shapes_name_the_tensor():
    from toymodels.errors import ConfigError

    x, acts, true, W, V, parent = _absorbing_case()
    with pytest.raises(ConfigError, match="^parent_F: must be"):
        A.absorption_scores(x, acts, true, W, V, parent[:3])
    with pytest.raises(ConfigError, match="^true_NF: must be"):
        A.absorption_scores(x, acts, true[:10], W, V, parent)
    with pytest.raises(ConfigError, match="^W_dec_LD: must be"):
        A.absorption_scores(x, acts, true, W[:3], V, parent)


def test_pareto_figure_is_saved_with_its_table_and_svg(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    from toymodels.groundtruth import benchmark
    from toymodels.groundtruth.benchmark import save_pareto

    drawn = []

    def small_figure(table):  # the real figure is drawn by the leaderboard's end-to-end test; this checks saving
        drawn.append(table)
        fig, ax = plt.subplots(figsize=(2, 2))
        ax.plot(table["l0"], table["mcc"], "o")
        return fig

    monkeypatch.setattr(benchmark, "pareto_figure", small_figure)

    rows = [{"variant": v, "width": 8, "sparsity_param": "k", "sparsity_value": k, "seed": s, "l0": k + s,
             "mcc": 0.5 + 0.01 * k, "f1": 0.4, "explained_variance": 0.9, "target_l0": 3.0}
            for v in ("topk", "relu") for k in (2, 4) for s in (0, 1)]
    save_pareto(pd.DataFrame(rows), tmp_path)
    table = pd.read_csv(tmp_path / "data" / "pareto.csv")
    assert len(table) == 4 and table["n_seeds"].tolist() == [2] * 4
    assert table["l0"].tolist() == [2.5, 4.5, 2.5, 4.5]  # seed means
    assert (tmp_path / "pareto.svg").read_text().lstrip().startswith("<?xml")
    assert (tmp_path / "pareto.png").stat().st_size > 1000
    pd.testing.assert_frame_equal(drawn[0], table, check_dtype=False)  # the CSV holds what is drawn

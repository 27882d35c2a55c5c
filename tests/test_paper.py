"""The numbers behind the paper figures (quick mode), not their pixels; plus a CLI smoke test."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from toymodels.cli import main
from toymodels.paper import FIGURES, load


def test_registry_modules_have_the_interface():
    for name in FIGURES:
        mod = load(name)
        assert isinstance(mod.TITLE, str) and mod.TITLE
        assert len(mod.CAPTION.strip().splitlines()) == 2, name
        assert callable(mod.compute) and callable(mod.plot)


def test_intro_dense_keeps_exactly_two_features(tables):
    df = tables("intro")
    dense = df[df["density"] == 1.0]
    assert (dense["norm"] >= 0.5).sum() == 2
    assert set(dense.loc[dense["norm"] >= 0.5, "feature"]) == {0, 1}  # the two most important
    assert (dense.loc[dense["norm"] >= 0.5, "interference"] < 0.05).all()  # orthogonal, not superposed


def test_intro_pentagon_at_lowest_density(tables):
    df = tables("intro")
    sparse = df[df["density"] == df["density"].min()]
    assert (sparse["norm"] >= 0.5).all()
    np.testing.assert_allclose(sparse["dimensionality"], 0.4, atol=0.03)


def test_dimensionality_has_sticky_plateaus(tables):
    df = tables("dimensionality")
    rep = df[df["norm"] >= 0.5]
    near = {lvl: int(((rep["dimensionality"] - lvl).abs() <= 0.05).sum()) for lvl in (0.5, 0.4)}
    assert near[0.5] >= 30, near  # digons: many features at exactly 1/2
    assert near[0.4] >= 10, near  # pentagons
    # the plateaus are sticky: far more features sit at 1/2 than in the equally wide band (0.55, 0.65]
    assert near[0.5] > 3 * int(((rep["dimensionality"] - 0.6).abs() <= 0.05).sum())


def test_correlated_orthogonal_anticorrelated_antipodal(tables):
    df = tables("correlated")
    low = df[(df["set_density"] == df["set_density"].min()) & (df["feature"] % 2 == 0)]
    corr = low.loc[low["structure"] == "correlated", "pair_cosine"]
    anti = low.loc[low["structure"] == "anticorrelated", "pair_cosine"]
    assert (corr.abs() < 0.15).all(), corr.tolist()
    assert (anti < -0.9).all(), anti.tolist()


def test_same_seed_same_table(tables):
    pd.testing.assert_frame_equal(tables("intro"), load("intro").compute(quick=True, seed=0))


def test_cli_writes_figure_files(tmp_path):
    assert main(["figures", "--quick", "--only", "intro", "--out", str(tmp_path)]) == 0
    for rel in ("intro.png", "intro.svg", "data/intro.csv", "index.html"):
        assert (tmp_path / rel).stat().st_size > 0, rel
    page = (tmp_path / "index.html").read_text()
    assert 'src="intro.png"' in page and load("intro").TITLE.split(" (")[0] in page
    assert "basic.png" not in page  # only figures that exist in the folder are listed
    svg = (tmp_path / "intro.svg").read_text()
    assert "<dc:date>" not in svg  # deterministic output: no timestamp
    prov = json.loads((tmp_path / "data" / "provenance.json").read_text())["intro"]
    assert prov["seed"] == 0 and prov["quick"] is True and "torch" in prov["environment"]
    assert prov["command"] == "toymodels figures --only intro --quick --seed 0"


def test_jobs_write_the_same_gallery_as_one_job(tmp_path):
    """Figures computed in worker processes (`--jobs 2`) give the same bytes as one after another in this
    process, whatever order they finish in (both on one torch thread, as the CLI runs them)."""
    import torch

    from toymodels.paper import build_gallery

    one, two, before = tmp_path / "one", tmp_path / "two", torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        build_gallery(["intro", "nonuniform"], one, quick=True, jobs=1)
        build_gallery(["intro", "nonuniform"], two, quick=True, jobs=2)
    finally:
        torch.set_num_threads(before)
    files = sorted(p.relative_to(one) for p in one.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(two) for p in two.rglob("*") if p.is_file())
    assert [f for f in files if (one / f).read_bytes() != (two / f).read_bytes()] == []


def test_cli_rejects_unknown_figure(tmp_path, capsys):
    assert main(["figures", "--only", "nope", "--out", str(tmp_path)]) == 2
    assert "only: unknown figure 'nope'" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_privileged_dense_aligned_sparse_polysemantic(tables):
    from toymodels.paper.privileged import best_tables, neuron_stats

    df = tables("privileged")
    W = best_tables(df)  # per density, the lowest-loss restart
    dense, sparse = neuron_stats(W[max(W)]), neuron_stats(W[min(W)])
    assert set(np.flatnonzero(np.linalg.norm(W[max(W)], axis=1) >= 0.5)) == set(range(5))  # the top 5 only
    assert dense["align"] > dense["align_rotated"] + 0.08, dense  # neuron-aligned, unlike a rotation of W
    assert sparse["represented"] >= 8 and sparse["mono"] <= 1, sparse  # more features than neurons, shared
    assert (df["restarts"] > 1).all()  # best-of-N restarts, selected by loss


def test_find_motif_recovers_a_planted_motif():
    from toymodels.paper.computation import find_motif

    rng = np.random.default_rng(0)
    W_in, W_out = rng.normal(0, 0.02, (2, 12, 6))  # [F, H]: feature → neuron and neuron → feature
    for f, (n, m) in enumerate([(0, 1), (2, 3), (4, 5)]):  # plain ±pairs: ReLU(x) and ReLU(−x)
        W_in[f, n], W_in[f, m], W_out[f, n], W_out[f, m] = 1.0, -1.0, 1.0, 1.0
    assert find_motif(W_in, W_out) is None
    a, b, b2, A, B = 7, 8, 9, 2, 4  # A reads a strongly, b weakly negative, writes b amplified; B inhibits
    W_in[a, A], W_in[b, A], W_out[a, A], W_out[b, A] = 1.5, -0.5, 0.25, 1.4
    W_in[a, B], W_in[b2, B], W_out[b, B], W_out[b2, B] = 1.6, -0.3, -1.2, 1.5
    W_out[b2, A] = -1.3
    assert find_motif(W_in, W_out) == {"A": A, "B": B, "a": a, "b": b, "b2": b2}


def test_computation_dense_small_model_uses_a_pair_per_feature(tables):
    df = tables("computation")
    small = df[df["model"] == "3→6"].pivot(index="feature", columns="neuron", values="w_in").to_numpy()
    for f in range(3):  # ReLU(x) and ReLU(−x): one strong positive and one strong negative neuron
        assert small[f].max() > 0.5 and small[f].min() < -0.5, small.round(2)

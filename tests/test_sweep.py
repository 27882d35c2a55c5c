"""Sweeps: experiments/overrides, grid packing, content seeds, resumable store, identical reruns, theory."""

import numpy as np
import pytest
import torch

from toymodels import theory
from toymodels.errors import ConfigError
from toymodels.experiments import compose, list_experiments
from toymodels.store import load_table
from toymodels.sweep import content_hash, load, plan, run_sweep

SMALL = ["grid.n=3", "train.steps=60", "train.restarts=2", "train.batch_size=64", "batch_points=4",
         "backend=sequential", "progress=false"]


def test_experiments_listed_and_overrides_compose():
    assert list_experiments(kind="sweep")["phase_2to1"][0] == "sweep"
    cfg = load("phase_2to1", ["grid.n=20", "train.restarts=5"])
    assert (cfg.grid.n, cfg.train.restarts, cfg.toy.n_features) == (20, 5, 2)
    grid, batches = plan(cfg)
    assert len(grid) == 400 and sorted(p for b in batches for p in b.points) == list(range(400))


@pytest.mark.parametrize("overrides, key", [
    (["grid.nn=3"], "grid.nn"), (["grid.n=abc"], "grid.n"), (["grid.n=1"], "grid.n"),
    (["backend=spark"], "backend"), (["phase_feature=7"], "phase_feature"), (["grid.n=["], "grid.n"),
    (["+foo=1"], "foo"),
])
def test_bad_overrides_are_one_line_errors_naming_the_key(overrides, key):
    with pytest.raises(ConfigError) as e:
        load("phase_2to1", overrides)
    assert "\n" not in str(e.value) and str(e.value).startswith(key), str(e.value)


def test_unknown_experiment():
    with pytest.raises(ConfigError, match="unknown name 'nope'.*phase_2to1"):
        compose("nope")


def test_batches_sorted_by_density_and_seeded_by_content():
    cfg = load("phase_2to1", ["grid.n=6", "batch_points=6"])
    grid, batches = plan(cfg)
    dens = [np.asarray(b.toy.density).max(1) for b in batches]
    assert all(d.max() <= prev.min() + 1e-12 for prev, d in zip(dens, dens[1:], strict=False))
    assert len({b.train.seed for b in batches}) == len(batches)
    # the same content gives the same seed whatever else changes (backend); the sweep seed matters
    other = plan(load("phase_2to1", ["grid.n=6", "batch_points=6", "backend=dask", "n_jobs=1"]))[1]
    assert [b.train.seed for b in other] == [b.train.seed for b in batches]
    assert content_hash(load("phase_2to1", ["grid.n=6", "backend=dask"])) == content_hash(
        load("phase_2to1", ["grid.n=6"]))
    reseeded = plan(load("phase_2to1", ["grid.n=6", "batch_points=6", "train.seed=1"]))[1]
    assert not {b.train.seed for b in reseeded} & {b.train.seed for b in batches}


def test_rerun_is_byte_identical_and_resume_skips_finished(tmp_path):
    cfg = load("phase_2to1", SMALL)
    a = run_sweep(cfg, out=tmp_path / "a", log=lambda *_: None)
    run_sweep(load("phase_2to1", SMALL), out=tmp_path / "b", log=lambda *_: None)
    assert (tmp_path / "a/results.csv").read_bytes() == (tmp_path / "b/results.csv").read_bytes()
    assert len(a) == 9 * 2 and sorted(a.point.unique()) == list(range(9))
    assert {"norm", "dimensionality", "phase", "loss", "density", "importance"} <= set(a.columns)
    assert (tmp_path / "a/config.yaml").is_file() and "torch" in (tmp_path / "a/run.json").read_text()
    # drop one finished batch: the rerun retrains exactly it, leaves the others untouched, same table
    files = sorted((tmp_path / "a/batches").glob("*.csv"))
    assert len(files) == 3
    kept = {f: f.stat().st_mtime_ns for f in files[1:]}
    files[0].unlink()
    logs = []
    run_sweep(cfg, out=tmp_path / "a", log=logs.append)
    assert "2/3 batches resumed" in logs[0]
    assert all(f.stat().st_mtime_ns == t for f, t in kept.items())
    assert (tmp_path / "a/results.csv").read_bytes() == (tmp_path / "b/results.csv").read_bytes()
    assert load_table(tmp_path / "a").equals(a)


def test_out_folder_of_another_sweep_is_refused(tmp_path):
    run_sweep(load("phase_2to1", SMALL), out=tmp_path, log=lambda *_: None)
    with pytest.raises(ConfigError, match="out: .*different sweep"):
        run_sweep(load("phase_2to1", [*SMALL, "train.seed=3"]), out=tmp_path, log=lambda *_: None)


def test_cli_lists_and_runs(tmp_path, capsys):
    from toymodels.cli import main

    assert main(["experiments"]) == 0
    assert "phase_2to1" in capsys.readouterr().out
    assert main(["sweep", "phase_2to1", *SMALL, f"out={tmp_path}"]) == 0
    assert "9 points" in capsys.readouterr().out and (tmp_path / "results.csv").is_file()
    assert main(["sweep", "phase_2to1", "grid.n=0"]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def _model_loss(W_FH, b_F, imp_F, p, n=1_000_000, seed=0):
    """Monte Carlo loss of one 2→1 model through the trainer's own loss function."""
    from toymodels.config import ToyConfig
    from toymodels.features import sample_dense
    from toymodels.models import TiedModel
    from toymodels.train import batch_loss

    cfg = ToyConfig(n_features=2, n_hidden=1, density=p)
    m = TiedModel("relu_output", 1, 2, 1, torch.Generator().manual_seed(0))
    with torch.no_grad():
        m.W.copy_(torch.tensor([W_FH], dtype=torch.float32))
        m.b.copy_(torch.tensor([b_F], dtype=torch.float32))
        x = sample_dense(cfg, torch.full((1, 2), p), n, torch.Generator().manual_seed(seed))
        return float(batch_loss(m, x, 0, torch.tensor([imp_F], dtype=torch.float32), n))


@pytest.mark.parametrize("p, r", [(0.1, 0.3), (0.3, 2.0), (1.0, 1.0)])
def test_closed_form_candidates_match_monte_carlo(p, r):
    L = theory.candidate_losses_2to1(p, r)
    v = theory.variance(p)
    ignore = _model_loss([[1.0], [0.0]], [0.0, p / 2], [1.0, r], p)
    assert ignore == pytest.approx(L["ignore"], rel=0.02)
    assert _model_loss([[0.0], [1.0]], [p / 2, 0.0], [1.0, r], p) == pytest.approx(L["dedicate"], rel=0.02)
    g, s, t = theory.antipodal_equal(p)
    a = float(np.sqrt(s))
    assert _model_loss([[a], [-a]], [-t, -t], [1.0, r], p) == pytest.approx(L["antipodal_equal"], rel=0.05)
    assert L["dedicate"] == pytest.approx(v / 2)
    # the minimised antipodal loss is no worse than unit norms and zero bias
    assert g <= float(theory.feature_error(p, 1.0, -1.0, 0.0)) + 1e-12


def test_theory_phases_have_the_expected_layout():
    ph = theory.phase_2to1(np.array([[1.0], [1.0], [0.01]]), np.array([[0.1], [10.0], [1.0]]))[:, 0]
    assert list(ph) == ["not_represented", "dedicated", "superposition"]
    assert theory.near_boundary(np.array([["a", "a", "b"]])).tolist() == [[False, True, True]]


def test_phase_diagram_agrees_with_theory_on_a_small_grid():
    """Acceptance: ≥ 95 % of cells away from theoretical boundaries have the predicted phase."""
    from toymodels.paper import phase_2to1 as fig

    df = fig.compute(overrides=("grid.n=8", "train.restarts=5", "backend=sequential"))
    agree, n = df.attrs["agreement"], df.attrs["cells_used"]
    assert n >= 30 and agree >= 0.95, (agree, n)
    assert set(df.phase) >= {"not_represented", "dedicated", "superposition"}


def test_boundary_lines_separate_the_theoretical_phases():
    p = np.array([0.05, 0.3, 0.6])
    b = theory.boundaries(theory.phase_2to1, p)
    assert {"not_represented|superposition", "superposition|dedicated"} <= set(b)
    for lo_hi, r in b.items():
        lo, hi = lo_hi.split("|")
        ok = ~np.isnan(r)
        assert list(theory.phase_2to1(p[ok], r[ok] * 0.97)) == [lo] * ok.sum(), lo_hi
        assert list(theory.phase_2to1(p[ok], r[ok] * 1.03)) == [hi] * ok.sum(), lo_hi

"""The committed default leaderboard (`figures/data/leaderboard.csv`, from `toymodels benchmark run`) says what the
README says of it: every variant of the zoo at the exact matched L0, SynthSAEBench's F1 ranking, and where
Matching Pursuit stands. A rerun that changes a finding fails here until the README is rewritten with it."""

from pathlib import Path

import pandas as pd
import pytest

from toymodels.sae.registry import builtin_variants

BOARD = Path(__file__).resolve().parents[1] / "figures" / "data" / "leaderboard.csv"


@pytest.fixture(scope="module")
def board():
    return pd.read_csv(BOARD).set_index("variant")


def test_every_variant_of_the_zoo_is_on_it_at_the_matched_l0(board):
    assert set(builtin_variants()) <= set(board.index)
    assert board["target_l0"].nunique() == 1 and board["n_seeds"].min() == 3
    exact = board[board["method"] == "exact"]
    assert len(exact) >= len(board) - 2  # TopK and AbsTopK between two integer k are interpolated
    assert ((exact["l0"] / exact["target_l0"] - 1).abs() <= 0.02).all()


def test_synthsaebench_f1_ranking_holds(board):
    """Matryoshka > BatchTopK ≈ JumpReLU > L1 on F1 (SynthSAEBench; ≈: closer than either is to its neighbours)."""
    f1 = board["f1"]
    assert f1["matryoshka"] > max(f1["batchtopk"], f1["jumprelu"])
    assert min(f1["batchtopk"], f1["jumprelu"]) > f1["relu"]
    close = abs(f1["batchtopk"] - f1["jumprelu"])
    assert close < f1["matryoshka"] - max(f1["batchtopk"], f1["jumprelu"])
    assert close < min(f1["batchtopk"], f1["jumprelu"]) - f1["relu"]


def test_matching_pursuit_has_the_worst_f1_and_the_best_explained_variance(board):
    """SynthSAEBench's finding for Matching Pursuit, both halves."""
    assert board["f1"].idxmin() == "matching_pursuit"
    assert board["explained_variance"].idxmax() == "matching_pursuit"

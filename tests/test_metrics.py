"""Ground-truth metrics on hand-made cases whose answers are known exactly."""

import math

import pytest
import torch

from toymodels.groundtruth import metrics as M
from toymodels.groundtruth.absorption import absorption_matched
from toymodels.groundtruth.files import GroundTruthDataset


def _identity_case(n=200, F=6, p=0.3, seed=0):
    g = torch.Generator().manual_seed(seed)
    true = (torch.rand(n, F, generator=g) < p) * torch.rand(n, F, generator=g).add(0.5)
    V = torch.eye(F)
    return V, true, true @ V


def test_identity_dictionary_is_perfect():
    V, true, x = _identity_case()
    s = M.score_tensors(x, true, true @ V, V, V, true)
    for key in ("mmcs", "mcc", "uniqueness", "precision", "recall", "f1", "explained_variance", "shrinkage"):
        assert s[key] == pytest.approx(1.0, abs=1e-6), key
    assert s["dead_frac"] == 0.0
    assert s["l0"] == pytest.approx(float((true != 0).sum(1).float().mean()))


def test_permuted_sign_flipped_copy_has_mcc_one_and_rotation_does_not():
    V = torch.linalg.qr(torch.randn(8, 8, generator=torch.Generator().manual_seed(1)))[0]
    perm = torch.randperm(8, generator=torch.Generator().manual_seed(2))
    signs = torch.tensor([1, -1, 1, -1, -1, 1, 1, -1.0])
    W = V[perm] * signs[:, None] * 3.0  # permuted, sign-flipped, rescaled
    assert M.mcc(W, V) == pytest.approx(1.0, abs=1e-6)
    assert M.mmcs_abs(W, V) == pytest.approx(1.0, abs=1e-6)
    assert M.mmcs(W, V) == pytest.approx(0.5, abs=1e-6)  # signed: the 4 flipped rows do not count
    f, l, _ = M.hungarian_match(W, V)
    assert (perm[torch.tensor(l)] == torch.tensor(f)).all()  # the matching recovers the permutation
    # rotating every feature by 45° in pairs: each |cos| is exactly 1/√2
    R = torch.eye(8)
    for i in range(0, 8, 2):
        R[i:i + 2, i:i + 2] = torch.tensor([[1, 1], [-1, 1.0]]) / math.sqrt(2)
    assert M.mcc(R @ V, V) == pytest.approx(1 / math.sqrt(2), abs=1e-6)


def test_duplicated_latent_lowers_uniqueness_and_mcc_counts_missing_features():
    V = torch.eye(4)
    W = torch.stack([V[0], V[1], V[2], V[2]])  # feature 3 missing, feature 2 twice
    assert M.uniqueness(W, V) == pytest.approx(3 / 4)
    assert M.mcc(W, V) == pytest.approx(3 / 4, abs=1e-6)  # Hungarian: the duplicate can only match once
    assert M.mmcs(W, V) == pytest.approx(3 / 4, abs=1e-6)


def test_narrow_sae_mcc_averages_its_matched_pairs_and_mmcs_counts_coverage():
    V = torch.eye(4)
    W = -V[[2, 0]]  # two latents, each exactly (minus) a distinct feature
    assert M.mcc(W, V) == pytest.approx(1.0, abs=1e-6)  # mean over min(L, F) = 2 matched pairs
    assert M.mmcs_abs(W, V) == pytest.approx(0.5, abs=1e-6)  # features 1 and 3 have no latent
    assert M.mmcs(W, V) == pytest.approx(0.0, abs=1e-6)  # signed: both rows point away from their feature
    W2 = torch.stack([V[0], (V[1] + V[2]) / math.sqrt(2)])
    assert M.mcc(W2, V) == pytest.approx((1 + 1 / math.sqrt(2)) / 2, abs=1e-6)


def test_shrunk_reconstruction_and_explained_variance():
    V, true, x = _identity_case()
    s = M.score_tensors(x, true, 0.8 * x, V, V, true)
    assert s["shrinkage"] == pytest.approx(0.8, abs=1e-6)
    xc = x - x.mean(0)
    expected = 1 - (0.2 * x).square().sum() / xc.square().sum()
    assert s["explained_variance"] == pytest.approx(float(expected), abs=1e-5)
    assert M.explained_variance(x, x.mean(0).expand_as(x)) == pytest.approx(0.0, abs=1e-6)


def test_precision_recall_on_a_noisy_detector():
    V = torch.eye(2)
    true = torch.tensor([[1, 0], [1, 0], [0, 0], [0, 1.0]])
    acts = torch.tensor([[1, 0], [0, 0], [1, 0], [0, 1.0]])  # latent 0: 1 TP, 1 FN, 1 FP
    det = M.detection_scores(acts, true, V, V)
    assert det["precision"].tolist() == pytest.approx([0.5, 1.0])
    assert det["recall"].tolist() == pytest.approx([0.5, 1.0])
    assert det["f1"].tolist() == pytest.approx([0.5, 1.0])
    assert M.dead_fraction(torch.tensor([[1.0, 0], [2, 0]])) == 0.5


def test_f1_live_leaves_out_silent_latents_only():
    V = torch.eye(3)
    true = torch.tensor([[1, 0, 0], [1, 0, 0], [0, 0, 1.0], [0, 1.0, 0]])
    acts = torch.tensor([[1, 0, 0], [0, 0, 0], [1, 0, 0], [0, 1.0, 0]])  # latent 2 never fires
    s = M.score_tensors(true, acts, acts, V, V, true)
    assert s["f1"] == pytest.approx((0.5 + 1.0 + 0.0) / 3)
    assert s["f1_live"] == pytest.approx((0.5 + 1.0) / 2)
    assert math.isnan(M.f1_live(torch.zeros(4, 3), torch.zeros(3)))


def test_matched_absorption_on_a_planted_case():
    # feature 0 is the parent of children 1 and 2; when a child fires the parent fires too.
    V = torch.eye(3)
    true = torch.tensor([[1, 0, 0], [1, 1, 0], [1, 0, 1], [1, 1, 0.0]])
    parent = torch.tensor([-1, 0, 0])
    # absorbing SAE: child latents carry the parent direction and the parent latent is silent when a
    # child fires
    W_abs = torch.stack([V[0], (V[0] + V[1]) / math.sqrt(2), (V[0] + V[2]) / math.sqrt(2)])
    acts_abs = torch.tensor([[1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 1, 0.0]])
    assert absorption_matched(acts_abs, true, W_abs, V, parent) == pytest.approx(1.0)
    # half absorbed: in the last sample the parent latent fires as well
    acts_half = acts_abs.clone()
    acts_half[3, 0] = 1
    assert absorption_matched(acts_half, true, W_abs, V, parent) == pytest.approx(2 / 3)
    # the faithful SAE never absorbs
    assert absorption_matched(true, true, V, V, parent) == 0.0


class _Linear:
    """A minimal SAE-like object: encode/decode and W_dec."""

    def __init__(self, W):
        self.W_dec = W

    def encode(self, x):
        return torch.relu(x @ self.W_dec.T)

    def decode(self, a):
        return a @ self.W_dec


def test_score_sae_on_any_object():
    V, true, x = _identity_case(F=5)
    ds = GroundTruthDataset.from_dense(x, V, true, parent=torch.tensor([-1, 0, 0, -1, -1]))
    s = M.score_sae(_Linear(V.clone()), ds)
    assert s["mcc"] == pytest.approx(1.0) and s["f1"] == pytest.approx(1.0)
    assert s["absorption"] == 0.0
    s_half = M.score_sae(_Linear(0.5 * V), ds)  # encode·decode shrinks by 0.25
    assert s_half["shrinkage"] == pytest.approx(0.25, abs=1e-6)


def test_matched_l0_sums_the_most_frequent_rates():
    import numpy as np

    from toymodels.groundtruth.benchmark import matched_l0

    rates = np.array([0.1, 0.5, 0.05, 0.3])
    assert matched_l0(rates, 2) == pytest.approx(0.8)
    assert matched_l0(rates, 10) == matched_l0(rates) == pytest.approx(0.95)
    assert np.isnan(matched_l0(np.zeros(0), 2))

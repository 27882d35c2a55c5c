"""What an ideal method could reach on a toy model's hidden activations: ceilings for the recoverability atlas.

- `omp`: per-sample Orthogonal Matching Pursuit over a dictionary, each sample run for its own number of steps
  (its true count of active features: the per-sample true L0, so the mean L0 equals the data's true L0).
  Atoms are chosen by the largest *positive* correlation with the residual (the features and every SAE latent
  are non-negative), and the coefficients are refit by least squares on the support after every step.
  With the true dictionary (the represented rows of W) it is the *ceiling*; with an SAE's own decoder it
  scores that dictionary with the best encoder we have for it, so an SAE's gap to the ceiling splits into a
  dictionary part (ceiling − own-dictionary OMP) and an encoder, or amortisation, part (own-dictionary OMP − SAE).
- `cs_boundary_l0`: the compressed-sensing limit on active features per sample, from the small-δ asymptote of
  Donoho & Tanner's weak phase transition for ℓ1 recovery (Donoho & Tanner 2009, "Counting faces of randomly
  projected polytopes when the projection radically lowers dimension"): with δ = m/n and ρ = k/m, recovery
  succeeds for ρ < 1/(2 ln(1/δ)), i.e. k < m / (2 ln(n/m)). It is an asymptote for large n (our n is 4–64),
  so it marks where recovery should start to fail, not an exact edge; at n ≤ m it is k < m.
"""

from __future__ import annotations

import math

import torch

TOL = 1e-6
"""OMP stops early for a sample whose residual norm falls below TOL × its input norm (an exact fit)."""


@torch.no_grad()
def omp(h_ND: torch.Tensor, D_LD: torch.Tensor, steps_N: torch.Tensor) -> torch.Tensor:
    """[N, L] coefficients of each sample on the unit-normalised atoms of D_LD after `steps_N[i]` OMP steps
    (at most min(L, D)); a sample stops early once it is fit exactly, no atom correlates positively, or the
    next atom lies in the span of its support (a duplicate atom).

    The least-squares refit keeps each sample's support Gram matrix as a Cholesky factor that grows by one row
    a step (the new atom's overlaps come from the dictionary's own Gram matrix), so a step costs O(t) vector
    operations over the samples instead of a fresh [N, t, t] solve."""
    N, D = h_ND.shape
    L = D_LD.shape[0]
    A_LD = D_LD.double() / D_LD.double().norm(dim=1, keepdim=True).clamp_min(1e-12)
    h = h_ND.double()
    GL_LL, hA_NL = A_LD @ A_LD.T, h @ A_LD.T
    T = int(min(int(steps_N.max()) if N else 0, L, D))
    W = max(T, 1)
    idx_NT = torch.zeros(N, W, dtype=torch.long)
    valid_NT = torch.zeros(N, W, dtype=torch.bool)
    chosen_NL = torch.zeros(N, L, dtype=torch.bool)
    chol_NTT = torch.zeros(N, W, W, dtype=torch.float64)  # support Gram = chol cholᵀ (stopped slot: diag 1)
    z_NT = torch.zeros(N, W, dtype=torch.float64)  # chol z = the support's correlations with h
    coef_NT = torch.zeros(N, W, dtype=torch.float64)
    rows = torch.arange(N)
    resid, h_norm = h.clone(), h.norm(dim=1)
    for t in range(T):
        corr_NL = (resid @ A_LD.T).masked_fill(chosen_NL, -math.inf)
        best, j = corr_NL.max(1)
        go = (steps_N > t) & (best > 0) & (resid.norm(dim=1) > TOL * h_norm)
        g_Nt = GL_LL[idx_NT[:, :t], j[:, None]] * valid_NT[:, :t]  # the new atom against the support
        l_Nt = torch.zeros(N, t, dtype=torch.float64)
        for s in range(t):  # forward substitution chol[:t, :t] l = g
            l_Nt[:, s] = (g_Nt[:, s] - (chol_NTT[:, s, :s] * l_Nt[:, :s]).sum(1)) / chol_NTT[:, s, s]
        d2 = 1.0 - (l_Nt * l_Nt).sum(1)
        go &= d2 > 1e-10
        if not bool(go.any()):
            break
        d = torch.where(go, d2.clamp_min(1e-10).sqrt(), 1.0)
        idx_NT[:, t], valid_NT[:, t] = j, go
        chosen_NL[go, j[go]] = True
        chol_NTT[:, t, :t] = l_Nt * go[:, None]
        chol_NTT[:, t, t] = d
        z_NT[:, t] = torch.where(go, (hA_NL[rows, j] - (l_Nt * z_NT[:, :t]).sum(1)) / d, 0.0)
        for s in range(t, -1, -1):  # back substitution cholᵀ coef = z (a stopped slot keeps coef 0)
            coef_NT[:, s] = (z_NT[:, s] - (chol_NTT[:, s + 1:t + 1, s] * coef_NT[:, s + 1:t + 1]).sum(1)) \
                / chol_NTT[:, s, s]
        resid = h - torch.bmm(coef_NT[:, None, :t + 1], A_LD[idx_NT[:, :t + 1]])[:, 0]
    out = torch.zeros(N, L, dtype=torch.float64)
    out.scatter_add_(1, idx_NT, coef_NT * valid_NT)
    return out.float()


def feature_f1(acts_NL: torch.Tensor, true_NF: torch.Tensor) -> float:
    """Mean over true features of the best F1 any latent reaches as a detector of that feature (firing = the
    latent is non-zero). Unlike the per-latent `f1` it does not charge an SAE for spare latents, so SAEs wider
    than the dictionary and the ceilings (one atom per feature) are compared on the same footing."""
    fire, truth = (acts_NL != 0).double(), (true_NF != 0).double()
    tp_LF = fire.T @ truth
    prec = tp_LF / fire.sum(0)[:, None].clamp_min(1)
    rec = tp_LF / truth.sum(0)[None, :].clamp_min(1)
    f1 = torch.where(prec + rec > 0, 2 * prec * rec / (prec + rec).clamp_min(1e-12), 0.0)
    return float(f1.max(0).values.mean()) if f1.numel() else float("nan")


def scores(h_ND, acts_NL, xhat_ND, W_dec_LD, V_FD, true_NF, parent_F=None) -> dict[str, float]:
    """`score_tensors` plus `feature_f1`."""
    from toymodels.groundtruth.metrics import score_tensors

    out = score_tensors(h_ND, acts_NL, xhat_ND, W_dec_LD, V_FD, true_NF, parent_F)
    return out | {"feature_f1": feature_f1(acts_NL, true_NF)}


def omp_scores(h_ND, D_LD, steps_N, V_FD, true_NF, parent_F=None, b_D=None) -> dict[str, float]:
    """`scores` of OMP over dictionary D_LD (after taking off the bias b_D, e.g. an SAE's b_dec) on h_ND."""
    target = h_ND if b_D is None else h_ND - b_D
    acts = omp(target, D_LD, steps_N)
    A = D_LD / D_LD.norm(dim=1, keepdim=True).clamp_min(1e-12)
    xhat = acts @ A + (0 if b_D is None else b_D)
    return scores(h_ND, acts, xhat, A, V_FD, true_NF, parent_F)


def cs_boundary_l0(n: float, m: float) -> float:
    """Active features per sample above which ℓ1 sparse recovery of n features from m measurements is expected
    to fail (Donoho–Tanner small-δ asymptote): m / (2 ln(n/m)) for n > m, capped at m."""
    if n <= m:
        return float(m)
    return float(min(m, m / (2 * math.log(n / m))))

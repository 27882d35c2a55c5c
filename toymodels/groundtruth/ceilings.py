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
    (at most min(L, D)); a sample stops early once it is fit exactly or no atom correlates positively."""
    N, D = h_ND.shape
    L = D_LD.shape[0]
    A_LD = D_LD.double() / D_LD.double().norm(dim=1, keepdim=True).clamp_min(1e-12)
    h = h_ND.double()
    T = int(min(int(steps_N.max()) if N else 0, L, D))
    idx_NT = torch.zeros(N, max(T, 1), dtype=torch.long)
    valid_NT = torch.zeros(N, max(T, 1), dtype=torch.bool)
    chosen_NL = torch.zeros(N, L, dtype=torch.bool)
    coef_NT = torch.zeros(N, max(T, 1), dtype=torch.float64)
    resid, h_norm = h.clone(), h.norm(dim=1)
    for t in range(T):
        corr_NL = (resid @ A_LD.T).masked_fill(chosen_NL, -math.inf)
        best, j = corr_NL.max(1)
        go = (steps_N > t) & (best > 0) & (resid.norm(dim=1) > TOL * h_norm)
        if not bool(go.any()):
            break
        idx_NT[:, t], valid_NT[:, t] = j, go
        chosen_NL[go, j[go]] = True
        S_NtD = A_LD[idx_NT[:, :t + 1]] * valid_NT[:, :t + 1, None]  # invalid slots are zero atoms
        G = S_NtD @ S_NtD.transpose(1, 2) + torch.diag_embed((~valid_NT[:, :t + 1]).double())
        coef_NT[:, :t + 1] = torch.linalg.solve(G, (S_NtD @ h[:, :, None]))[..., 0]
        resid = h - (coef_NT[:, :t + 1, None] * S_NtD).sum(1)
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

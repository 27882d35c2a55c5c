"""Feature absorption on hierarchical ground truth: Chanin et al.'s metric as SAEBench implements it, the
per-edge absorption gap, and our own matched-latent variant.

Shapes as in metrics.py: x_ND inputs, acts_NL latent activations, true_NF true feature activations, W_dec_LD
decoder rows, V_FD true feature vectors; parent_F [F] is each feature's parent (−1 for none), P the parents
(features with at least one child), E the parent→child edges. A latent *fires* when its activation is ≠ 0.

Chanin et al. (2024), "A is for Absorption", in SAEBench (`evals/absorption`), per concept (there: a first
letter, with a logistic-regression probe on the residual stream):
1. *main latents*: k-sparse probes on the SAE latents for k = 1..10; the main latents are the top-k latents of
   the last k, counting up from 1, whose probe F1 beats the best so far by more than 0.03 (feature splitting);
2. over the inputs where the concept is present (probe true positives), each latent l *projects*
   a_l · cos(w_l, probe) onto the unit probe direction, and the input itself projects x · probe;
3. *full absorption*: every main latent is silent (|a| < 1e-8), the top-projecting latent (any latent) has
   cos(w_l, probe) ≥ 0.025, x · probe ≥ 0, and the top latent carries ≥ 0.4 of x · probe;
4. *absorption fraction* (Demian Till's addition): the up-to-3 largest positive projections of non-main latents
   with cos ≥ 0.1 are the absorbers; 0 if the main latents already account for x · probe or the absorbers carry
   under 0.4 of it, 1 if the main latents project ≤ 0, else absorbed / (absorbed + main) with absorbed =
   min(absorbers, x · probe − main);
5. rates per concept over its true positives, then the mean over concepts.

Adapted to ground truth (every change from SAEBench):
- the concepts are the hierarchy's parents, and the probe direction is the parent's true feature vector;
- the true positives are the samples where the parent's true activation is non-zero (the truth is exact);
- the input's projection on the probe is the parent's own part of it, a_p · ‖v_p‖, not x · v̂_p: x · v̂_p also
  holds the other active features' overlap with v_p, which a faithful SAE's other latents then "absorb" (on
  the test hierarchy, random features in 24 dims, the true features as SAE score absorption_fraction 0.069 with
  x · v̂_p and exactly 0 with a_p · ‖v_p‖); `input_probe=True` uses x · v̂_p as SAEBench does;
- the k-sparse probe is "any of the top-k latents fires" with latents ranked by their F1 as single detectors of
  the parent, in place of SAEBench's L1-probe ranking plus a logistic regression per k (same k range and F1
  jump rule; no probe is trained, so the score is deterministic and costs one matmul);
- a latent projects a_l · (w_l · v̂_p), i.e. a_l · cos · ‖w_l‖, which is SAEBench's a_l · cos when decoder rows
  have unit norm (SAELens's) and stays the latent's true share of x̂ · v̂_p when they do not;
- an input with x · v̂_p ≤ 0 is never absorbed (SAEBench divides by it; it never occurs for its probe positives).
"""

from __future__ import annotations

import torch

from toymodels.errors import check
from toymodels.groundtruth.metrics import EPS, abs_cos, cos

MAX_K = 10
"""SAEBench `max_k_value`: the largest k-sparse probe tried for the main latents."""
F1_JUMP = 0.03
"""SAEBench `f1_jump_threshold`: a larger k joins the main latents if it raises F1 by more than this."""
FULL_COS = 0.025
"""SAEBench `full_absorption_probe_cos_sim_threshold`: the absorbing latent's minimum signed cos to the probe."""
FRACTION_COS = 0.1
"""SAEBench `absorption_fraction_probe_cos_sim_threshold`: minimum signed cos of a partial absorber."""
SHARE = 0.4
"""SAEBench `probe_projection_proportion_threshold`: the absorbers' minimum share of x · probe."""
MAX_ABSORBERS = 3
"""SAEBench `absorption_fraction_max_absorbing_latents`."""
SILENT = 1e-8
"""SAEBench's EPS: a main latent with |activation| below this is silent."""


def parents(parent_F: torch.Tensor) -> torch.Tensor:
    """[P] the features that have at least one child, ascending."""
    return torch.unique(parent_F[parent_F >= 0])


def _on_T(X_NF: torch.Tensor) -> torch.Tensor:
    """[F, N] X ≠ 0, transposed so that picking features is a fast row gather (column gathers are slow)."""
    return (X_NF != 0).T.contiguous()


def _masks(acts_NL, true_NF, masks=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(fire_LN, on_FN): which latents fire and which true features are active, as `_on_T`; reused if given."""
    return masks if masks is not None else (_on_T(acts_NL), _on_T(true_NF))


def check_shapes(acts_NL, true_NF, W_dec_LD, V_FD, parent_F) -> None:
    """One-line errors naming the tensor whose shape does not fit the others."""
    N, L = acts_NL.shape
    F = V_FD.shape[0]
    check(tuple(true_NF.shape) == (N, F), "true_NF", f"of shape [{N}, {F}] (samples, features)",
          list(true_NF.shape))
    check(W_dec_LD.shape[0] == L and W_dec_LD.shape[1] == V_FD.shape[1], "W_dec_LD",
          f"of shape [{L}, {V_FD.shape[1]}] (latents, d)", list(W_dec_LD.shape))
    check(tuple(parent_F.shape) == (F,) and bool(((parent_F >= -1) & (parent_F < F)).all()), "parent_F",
          f"a [{F}] tensor of feature indices or -1", list(parent_F.shape))


def _count(*masks_EN) -> torch.Tensor:
    """[E] float, per row the samples where every (broadcast) bool mask holds."""
    both = masks_EN[0]
    for m in masks_EN[1:]:
        both = both & m
    return both.view(torch.uint8).sum(1, dtype=torch.int32).float()  # several times faster than a bool sum


def _f1(tp, n_fire, n_true):
    return 2 * tp / (n_fire + n_true).clamp_min(EPS)


def main_latents(acts_NL, true_NF, parents_P, max_k: int = MAX_K, f1_jump: float = F1_JUMP,
                 masks=None) -> list[torch.Tensor]:
    """Per parent, its main latents by SAEBench's feature-split rule on the detector "any of the top-k latents
    fires" (latents ranked by their own F1 as detectors of the parent): the top k of the last k = 1, 2, ...
    whose F1 exceeds the best so far by more than `f1_jump`. Always at least one latent."""
    fire_LN, on_FN = _masks(acts_NL, true_NF, masks)
    truth_PN = on_FN[parents_P].float()
    n_true_P1 = truth_PN.sum(1, keepdim=True)
    fire_NL = (acts_NL != 0).float()
    f1_PL = _f1(truth_PN @ fire_NL, fire_NL.sum(0), n_true_P1)
    rank_PK = f1_PL.topk(min(max_k, fire_NL.shape[1]), dim=1).indices
    P, K = rank_PK.shape
    # rank of the first top latent that fires (K if none): the detector with the top k fires iff it is < k
    first_PN = torch.full(truth_PN.shape, K)
    for k in reversed(range(K)):
        first_PN = torch.where(fire_LN[rank_PK[:, k]], k, first_PN)
    tp_PK = torch.zeros(P, K + 1).scatter_add_(1, first_PN, truth_PN).cumsum(1)[:, :K]
    n_fire_PK = torch.zeros(P, K + 1).scatter_add_(1, first_PN, torch.ones_like(truth_PN)).cumsum(1)[:, :K]
    f1_PK = _f1(tp_PK, n_fire_PK, n_true_P1)
    out = []
    for i in range(P):
        k, best = 1, float(f1_PK[i, 0])
        while k < K and float(f1_PK[i, k]) > best + f1_jump:
            best, k = float(f1_PK[i, k]), k + 1
        out.append(rank_PK[i, :k])
    return out


@torch.no_grad()
def absorption_chanin(x_ND, acts_NL, true_NF, W_dec_LD, V_FD, parent_F, input_probe: bool = False,
                      chunk: int = 8192, masks=None) -> dict:
    """Chanin et al.'s absorption as SAEBench computes it, on ground truth (module docstring). Returns
    'absorption' (mean over parents of the full-absorption rate), 'absorption_fraction' (mean over parents of
    the mean absorption fraction), and per parent: 'parent' [P], 'full' [P], 'fraction' [P] (NaN for a parent
    never active) and 'main' (list of latent index tensors). Works on `chunk` (sample, active parent) pairs at
    a time."""
    par = parents(parent_F)
    masks = _masks(acts_NL, true_NF, masks)
    main = main_latents(acts_NL, true_NF, par, masks=masks)
    W, V = W_dec_LD.float(), V_FD[par].float()
    norm_P = V.norm(dim=1)
    vhat_PD = V / norm_P[:, None].clamp_min(EPS)
    cos_PL = cos(W, V)
    along_PL = vhat_PD @ W.T  # w_l · v̂_p
    main_PL = torch.zeros_like(cos_PL, dtype=torch.bool)
    for i, m in enumerate(main):
        main_PL[i, m] = True
    absorber_PL = (cos_PL >= FRACTION_COS) & ~main_PL  # may absorb partially
    i_J, n_J = masks[1][par].nonzero(as_tuple=True)  # every (active parent, sample) pair
    full_J, frac_J = torch.zeros(len(n_J)), torch.zeros(len(n_J))
    for s in range(0, len(n_J), chunk):
        n, i = n_J[s:s + chunk], i_J[s:s + chunk]
        a_JL = acts_NL[n].float()
        # the input's projection on the probe (module docstring)
        probe_J = (x_ND[n].float() * vhat_PD[i]).sum(1) if input_probe else true_NF[n, par[i]].float() * norm_P[i]
        proj_JL = a_JL * along_PL[i]  # each latent's projection
        top_proj_J, top_J = proj_JL.max(1)
        silent_J = ~((a_JL.abs() >= SILENT) & main_PL[i]).any(1)
        full_J[s:s + chunk] = (silent_J & (cos_PL[i, top_J] >= FULL_COS) & (probe_J > 0)
                               & (top_proj_J >= SHARE * probe_J)).float()
        main_J = (proj_JL * main_PL[i]).sum(1)
        cand_JL = proj_JL.clamp_min(0) * absorber_PL[i]
        absorbers_J = cand_JL.topk(min(MAX_ABSORBERS, cand_JL.shape[1]), dim=1).values.sum(1)
        absorbed_J = torch.minimum(absorbers_J, probe_J - main_J)
        frac = torch.where(main_J <= 0, 1.0, (absorbed_J / (absorbed_J + main_J).clamp_min(EPS)).clamp(0, 1))
        frac_J[s:s + chunk] = torch.where((probe_J <= 0) | (main_J >= probe_J * (1 - 1e-6))
                                          | (absorbers_J < SHARE * probe_J),
                                          0.0, frac)
    n_P = torch.bincount(i_J, minlength=len(par)).float()  # 0 → NaN below
    full_P = torch.zeros(len(par)).index_add_(0, i_J, full_J) / n_P
    frac_P = torch.zeros(len(par)).index_add_(0, i_J, frac_J) / n_P
    return {"absorption": float(full_P.nanmean()), "absorption_fraction": float(frac_P.nanmean()),
            "parent": par, "full": full_P, "fraction": frac_P, "main": main}


@torch.no_grad()
def absorption_gap_edges(acts_NL, true_NF, W_dec_LD, V_FD, parent_F, masks=None) -> dict[str, torch.Tensor]:
    """Per parent→child edge, with the parent's latent its best-|cos| decoder row: 'p_without' =
    P(parent latent fires | parent active, child not), 'p_with' = P(... | parent and child active) and 'gap' =
    p_without − p_with (> 0: the child's presence silences the parent latent; NaN where a condition never
    occurs). Also 'parent', 'child', 'latent', each [E]."""
    kids = (parent_F >= 0).nonzero()[:, 0]
    par = parent_F[kids]
    lat = abs_cos(W_dec_LD, V_FD).argmax(1)[par]
    fire_LN, on_FN = _masks(acts_NL, true_NF, masks)
    fire_EN, p_on, c_on = fire_LN[lat], on_FN[par], on_FN[kids]
    p_with = _count(fire_EN, p_on, c_on) / _count(p_on, c_on)  # 0/0 → NaN
    p_without = _count(fire_EN, p_on, ~c_on) / _count(p_on, ~c_on)
    return {"parent": par, "child": kids, "latent": lat, "p_without": p_without, "p_with": p_with,
            "gap": p_without - p_with}


def absorption_gap(acts_NL, true_NF, W_dec_LD, V_FD, parent_F, masks=None) -> float:
    """The mean absorption gap over the edges where both conditions occur (NaN if none)."""
    return float(absorption_gap_edges(acts_NL, true_NF, W_dec_LD, V_FD, parent_F, masks)["gap"].nanmean())


def absorption_matched(acts_NL, true_NF, W_dec_LD, V_FD, parent_F, threshold: float = 0.1, masks=None) -> float:
    """Our earlier absorption (not Chanin et al.'s). For every child c with parent p: the parent's latent l_p is
    its best-|cos| decoder row, the child's latent l_c likewise. Over all (sample, child) events where the
    child is active, the fraction where l_p does not fire while l_c fires and carries the parent direction
    (|cos(w_{l_c}, v_p)| ≥ threshold). NaN when there are no child-active events."""
    kids = (parent_F >= 0).nonzero()[:, 0]
    if len(kids) == 0:
        return float("nan")
    par = parent_F[kids]
    C = abs_cos(W_dec_LD, V_FD)  # [F, L]
    lat = C.argmax(1)  # each feature's best latent
    l_p, l_c = lat[par], lat[kids]
    carries = C[par, l_c] >= threshold  # [E]
    fire_LN, on_FN = _masks(acts_NL, true_NF, masks)
    child_on = on_FN[kids]  # [E, N]
    n = float(_count(child_on).sum())
    events = float(_count(child_on, ~fire_LN[l_p], fire_LN[l_c], carries[:, None]).sum())
    return events / n if n else float("nan")


def absorption_scores(x_ND, acts_NL, true_NF, W_dec_LD, V_FD, parent_F) -> dict[str, float]:
    """absorption (Chanin et al., full), absorption_fraction, absorption_gap and absorption_matched."""
    check_shapes(acts_NL, true_NF, W_dec_LD, V_FD, parent_F)
    masks = _masks(acts_NL, true_NF)
    ch = absorption_chanin(x_ND, acts_NL, true_NF, W_dec_LD, V_FD, parent_F, masks=masks)
    return {"absorption": ch["absorption"], "absorption_fraction": ch["absorption_fraction"],
            "absorption_gap": absorption_gap(acts_NL, true_NF, W_dec_LD, V_FD, parent_F, masks),
            "absorption_matched": absorption_matched(acts_NL, true_NF, W_dec_LD, V_FD, parent_F, masks=masks)}

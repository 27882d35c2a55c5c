"""Ground-truth SAE metrics on plain tensors, so any SAE can be scored.

Shapes: W_dec_LD decoder rows (one per latent), V_FD true feature vectors, acts_NL latent activations,
true_NF true feature activations, x_ND inputs, xhat_ND reconstructions. A latent "fires" when its act is > 0
(non-zero for signed SAEs); a true feature is "active" when its activation is non-zero. The absorption metrics
are in absorption.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from toymodels.errors import DataFileError

EPS = 1e-12


def cos(W_dec_LD: torch.Tensor, V_FD: torch.Tensor) -> torch.Tensor:
    """[F, L] signed cos(v_f, w_l) between every true feature and every decoder row (zero rows give 0)."""
    V = V_FD.float() / V_FD.float().norm(dim=1, keepdim=True).clamp_min(EPS)
    W = W_dec_LD.float() / W_dec_LD.float().norm(dim=1, keepdim=True).clamp_min(EPS)
    return V @ W.T


def abs_cos(W_dec_LD: torch.Tensor, V_FD: torch.Tensor) -> torch.Tensor:
    """[F, L] |cos(v_f, w_l)|."""
    return cos(W_dec_LD, V_FD).abs()


def mmcs(W_dec_LD, V_FD) -> float:
    """Mean max cosine similarity as Sharkey et al. (2022) define it: the mean over true features f of
    max_l cos(v_f, w_l), **signed**, so a decoder row pointing opposite to a feature does not count as finding
    it. The leaderboard shows this one."""
    return float(cos(W_dec_LD, V_FD).max(1).values.mean())


def mmcs_abs(W_dec_LD, V_FD) -> float:
    """Sign-blind MMCS: the mean over true features of max_l |cos(v_f, w_l)| (≥ `mmcs`; equal when every
    best row points along its feature, as for ReLU SAEs on non-negative features)."""
    return float(abs_cos(W_dec_LD, V_FD).max(1).values.mean())


def hungarian_match(W_dec_LD, V_FD) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One-to-one matching of true features to latents maximising Σ|cos| of **decoder rows** (not
    activations), by `scipy.optimize.linear_sum_assignment`. Returns (feature idx, latent idx, |cos| of each
    pair)."""
    C = abs_cos(W_dec_LD, V_FD).double().numpy()
    f, l = linear_sum_assignment(C, maximize=True)
    return f, l, C[f, l]


def mcc(W_dec_LD, V_FD) -> float:
    """Hungarian-matched mean correlation coefficient on decoder |cos|: the mean over the min(L, F) matched
    pairs (SAELens / SynthSAEBench's definition; permutation and sign invariant). With L ≥ F it is 1 iff every
    feature has its own latent whose decoder row is ± its direction; with fewer latents than features, 1 iff
    every latent is ± a distinct feature (how many features are covered is MMCS's job)."""
    _, _, c = hungarian_match(W_dec_LD, V_FD)
    return float(c.mean())


def uniqueness(W_dec_LD, V_FD) -> float:
    """Distinct argmax matches / latents: each latent l is assigned argmax_f |cos(v_f, w_l)|; uniqueness is
    the number of distinct features assigned divided by the number of latents (1 = no two latents share a
    feature)."""
    best_f = abs_cos(W_dec_LD, V_FD).argmax(0)
    return float(len(torch.unique(best_f)) / W_dec_LD.shape[0])


def detection_scores(acts_NL, true_NF, W_dec_LD, V_FD) -> dict[str, torch.Tensor]:
    """Per latent, as a detector of its matched feature (argmax_f |cos(v_f, w_l)| of its decoder row):
    precision = P(feature active | latent fires), recall = P(latent fires | feature active), F1 their harmonic
    mean (0 where undefined). Returns {'feature', 'precision', 'recall', 'f1'}, each [L]."""
    best_f = abs_cos(W_dec_LD, V_FD).argmax(0)  # [L]
    fire = (acts_NL != 0).float()
    truth = (true_NF[:, best_f] != 0).float()  # [N, L]
    tp = (fire * truth).sum(0)
    prec = tp / fire.sum(0).clamp_min(1)
    rec = tp / truth.sum(0).clamp_min(1)
    f1 = torch.where(prec + rec > 0, 2 * prec * rec / (prec + rec).clamp_min(EPS), 0.0)
    return {"feature": best_f, "precision": prec, "recall": rec, "f1": f1}


def f1_live(acts_NL, f1_L) -> float:
    """Mean F1 over the latents that fire at least once on these samples (NaN if none does). Beside the mean
    over all latents (`f1`, where a silent latent scores 0) it separates what the live latents learned from
    how much of the dictionary is unused."""
    live = (acts_NL != 0).any(0)
    return float(f1_L[live].mean()) if bool(live.any()) else float("nan")


def explained_variance(x_ND, xhat_ND) -> float:
    """1 − Σ‖x − x̂‖² / Σ‖x − mean(x)‖² (the variance about the per-dimension mean)."""
    resid = (x_ND - xhat_ND).square().sum()
    total = (x_ND - x_ND.mean(0)).square().sum().clamp_min(EPS)
    return float(1 - resid / total)


def l0(acts_NL) -> float:
    """Mean number of non-zero latents per sample."""
    return float((acts_NL != 0).sum(1).float().mean())


def dead_fraction(acts_NL) -> float:
    """Fraction of latents that never fire on these samples."""
    return float(((acts_NL != 0).sum(0) == 0).float().mean())


def shrinkage(x_ND, xhat_ND) -> float:
    """Mean over samples with x ≠ 0 of ‖x̂‖ / ‖x‖ (< 1: the SAE shrinks its reconstructions, e.g. an L1
    penalty)."""
    nx = x_ND.norm(dim=1)
    ok = nx > EPS
    return float((xhat_ND.norm(dim=1)[ok] / nx[ok]).mean())


def score_tensors(x_ND, acts_NL, xhat_ND, W_dec_LD, V_FD=None, true_NF=None,
                  parent_F=None) -> dict[str, float]:
    """Every metric that the given tensors allow, as a flat dict of floats."""
    out = {"l0": l0(acts_NL), "dead_frac": dead_fraction(acts_NL),
           "explained_variance": explained_variance(x_ND, xhat_ND), "shrinkage": shrinkage(x_ND, xhat_ND)}
    if V_FD is not None:
        out.update(mmcs=mmcs(W_dec_LD, V_FD), mmcs_abs=mmcs_abs(W_dec_LD, V_FD), mcc=mcc(W_dec_LD, V_FD),
                   uniqueness=uniqueness(W_dec_LD, V_FD))
        if true_NF is not None:
            det = detection_scores(acts_NL, true_NF, W_dec_LD, V_FD)
            out.update(precision=float(det["precision"].mean()), recall=float(det["recall"].mean()),
                       f1=float(det["f1"].mean()), f1_live=f1_live(acts_NL, det["f1"]), true_l0=l0(true_NF))
            if parent_F is not None and bool((parent_F >= 0).any()):
                from toymodels.groundtruth.absorption import absorption_scores

                out.update(absorption_scores(x_ND, acts_NL, true_NF, W_dec_LD, V_FD, parent_F))
    return out


def load_sae_like(sae_like):
    """A path to a SAELens directory is loaded (toymodels.sae.load_saelens); other objects are returned as
    is."""
    if isinstance(sae_like, (str, Path)):
        if not Path(sae_like).is_dir():
            raise DataFileError(f"{sae_like}: not a directory (expected a SAELens SAE folder)")
        from toymodels.sae import load_saelens

        return load_saelens(sae_like)
    return sae_like


@torch.no_grad()
def score_sae(sae_like, dataset, n_eval: int = 20_000, batch: int = 4096,
              device: str | None = None) -> dict[str, float]:
    """Score any SAE (an object with encode/decode and W_dec [L, D], or a SAELens directory) on the first
    `n_eval` samples of a GroundTruthDataset (or a dataset file path). `device` (auto, cpu, cuda, ...): where a
    toymodels SAE encodes and decodes (None: where it is; a torch module always runs where its parameters are);
    the metrics are computed on the CPU."""
    from toymodels.budget import check_memory, score_bytes
    from toymodels.config import _is_int
    from toymodels.errors import check
    from toymodels.groundtruth.files import load_dataset

    check(_is_int(n_eval) and n_eval >= 1, "n_eval", "an integer ≥ 1", n_eval)
    check(_is_int(batch) and batch >= 1, "batch", "an integer ≥ 1", batch)
    sae = load_sae_like(sae_like)
    dev = None
    if device is not None:
        from toymodels.device import resolve
        from toymodels.sae.base import TrainedSAE

        dev = resolve(device)
        if isinstance(sae, TrainedSAE) and dev.type != "cpu":
            import dataclasses

            sae = dataclasses.replace(sae, **{k: v.to(dev) for k, v in sae.tensors().items()})
        dev = dev if isinstance(sae, TrainedSAE) else None
    ds = load_dataset(dataset) if isinstance(dataset, (str, Path)) else dataset
    n = min(n_eval, ds.n_samples)
    x = ds.hidden[:n]
    W_dec = _w_dec(sae, None, x.shape[1])
    check_memory(score_bytes(n, (ds.n_features or 0) if ds.has_acts else 0, W_dec.shape[0], x.shape[1]),
                 f"scoring ({n} samples, {ds.n_features} true features, {W_dec.shape[0]} latents)")
    p = next(iter(sae.parameters()), None) if hasattr(sae, "parameters") else None
    acts, xhat = [], []
    for i in range(0, n, batch):
        xb = x[i:i + batch] if p is None else x[i:i + batch].to(p.device, p.dtype)
        xb = xb if dev is None else xb.to(dev)
        a = sae.encode(xb)
        acts.append(a.float().cpu())
        xhat.append(sae.decode(a).float().cpu())
    acts_NL, xhat_ND = torch.cat(acts), torch.cat(xhat)
    if acts_NL.shape[1] != W_dec.shape[0]:
        raise DataFileError(f"the SAE's encode gives {acts_NL.shape[1]} latents but its W_dec has "
                            f"{W_dec.shape[0]} rows")
    true = ds.true_acts(n) if ds.has_acts else None
    return score_tensors(x, acts_NL, xhat_ND, W_dec, ds.feature_vectors, true, ds.parent)


def _w_dec(sae, n_latents: int | None, d: int) -> torch.Tensor:
    """Decoder rows [L, D] from `sae.W_dec` (either orientation), checked against the data's width d (and the
    number of latents, if given) before anything is encoded."""
    W = getattr(sae, "W_dec", None)
    if not isinstance(W, torch.Tensor):
        raise DataFileError("the SAE has no W_dec tensor; pass an object with encode/decode and W_dec [latents, d]")
    W = W.detach().float().cpu()
    if W.ndim != 2 or d not in W.shape or (n_latents is not None and n_latents not in W.shape):
        raise DataFileError(f"the SAE does not fit the dataset: its W_dec has shape {list(W.shape)} but the dataset's "
                            f"hidden width (d_in) is {d}" + (f" and {n_latents} latents" if n_latents else ""))
    d_in = getattr(sae, "W_enc", None)
    if isinstance(d_in, torch.Tensor) and d_in.ndim == 2 and d not in d_in.shape:
        raise DataFileError(f"the SAE does not fit the dataset: its W_enc has shape {list(d_in.shape)} but the "
                            f"dataset's hidden width (d_in) is {d}")
    return W if W.shape[1] == d else W.T

"""BatchTopK SAE (Bussmann et al. 2024): in training keep the k·B largest activations of the whole batch;
for inference a learned global threshold θ (EMA of the smallest kept activation) makes it a JumpReLU SAE.

Selection (`select_entries`): per SAE the (k·B)-th largest positive pre-activation t is found exactly on a
pre-filtered candidate set (entries above ~90 % of the previous batch's t), and the kept entries are those
≥ t (exact up to float ties). The training step is the TopK family's hand-written forward/backward on the
kept entries only (`sparse_step.SparseStep`): the decoder, ∂W_dec, ∂W_enc and ∂f at the kept entries are
sparse (CSR) products, so the only dense product is the encoder's x·W_enc. The autograd path
(`_recon_losses`, `decode_prefixes`) is the reference, and what runs off CPU."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from toymodels.config import _is_num
from toymodels.errors import check
from toymodels.sae.base import mse_K
from toymodels.sae.registry import register_variant
from toymodels.sae.sparse_step import SparseStep, flatnonzero
from toymodels.sae.topk import SPARSE_MAX_DENSITY, TopKFamily, TopKFamilyConfig, _SparseDecode

PREFILTER_MARGINS = (0.1, 0.4)
"""Candidate lower bounds (1 − margin)·reference tried in turn before all positive entries."""


@torch.no_grad()
def select_entries(pre_KBL: torch.Tensor, k_K: torch.Tensor, ref_K: torch.Tensor):
    """Per SAE i the flat indices (ascending, into its [B·L]) and values of the kept entries, and [K] t: the
    (k_i·B)-th largest positive pre-activation (the smallest positive one if fewer are > 0; 0 if none).
    Only entries above (1 − margin)·ref_i are ranked when at least k_i·B of them pass (then every true top-k·B
    entry passes too), else a wider margin, else all positive entries: usually one pass over [B, L], and the
    ranking touches ~k·B entries when ref (the previous batch's t) is close. Index work runs in numpy, whose
    scans and gathers are several times torch's on CPU; the results are numpy arrays."""
    K, B, _ = pre_KBL.shape
    pre = pre_KBL.detach().cpu().numpy()
    idx, vals, t_K = [], [], torch.zeros(K, dtype=pre_KBL.dtype)
    for i, (k, ref) in enumerate(zip(k_K.tolist(), ref_K.tolist(), strict=True)):
        a, n = pre[i].reshape(-1), int(round(k * B))
        for lo in [(1 - m) * ref for m in PREFILTER_MARGINS if ref > 0] + [0.0]:
            cand = flatnonzero(a > lo)
            if cand.size >= n:
                break
        v = a[cand]
        if v.size > n:
            t = np.partition(v, v.size - n)[v.size - n]  # the n-th largest
            keep = np.flatnonzero(v >= t)
            cand, v = cand[keep], v[keep]
            t_K[i] = float(t)
        elif v.size:
            t_K[i] = float(v.min())
        idx.append(cand)
        vals.append(v)
    return idx, vals, t_K


@dataclass
class BatchTopKConfig(TopKFamilyConfig):
    """BatchTopK SAE: the TopK family's fields and the inference threshold's EMA momentum."""

    fractional_k = True

    threshold_momentum: float = 0.99
    """EMA momentum (in [0, 1)) of the inference threshold (min kept activation)."""

    def __post_init__(self):
        super().__post_init__()
        check(_is_num(self.threshold_momentum) and 0 <= self.threshold_momentum < 1, "threshold_momentum",
              "in [0, 1)", self.threshold_momentum)


@register_variant("batchtopk", BatchTopKConfig)
class BatchTopKSAE(TopKFamily):
    sparse_max_density = SPARSE_MAX_DENSITY
    """Autograd path (`decode_prefixes`): decode through only the kept rows when at most this fraction of
    [B, L] is kept; else a dense bmm (on CPU the gathers of n·D floats lose to one dense product)."""
    last_t_K: torch.Tensor | None = None
    """The previous batch's t (not saved): the reference of the selection's candidate pre-filter."""
    fast_path = True
    """Use the hand-written sparse step (`SparseStep`) on CPU (`fast_step_ok`)."""

    def __init__(self, cfgs):
        super().__init__(cfgs)
        self.register_buffer("threshold_K", torch.full((self.K,), -1.0))  # < 0: not yet estimated

    @torch.no_grad()
    def batch_threshold(self, pre_KBL: torch.Tensor) -> torch.Tensor:
        """[K] value of each SAE's (k·B)-th largest positive pre-activation in the batch (see select_entries)."""
        return self.select_entries(pre_KBL)[2]

    @torch.no_grad()
    def select_entries(self, pre_KBL: torch.Tensor):
        """`select_entries` pre-filtered around the previous batch's t (else the running threshold)."""
        ref_K = self.last_t_K if self.last_t_K is not None else self.threshold_K
        out = select_entries(pre_KBL, self.k_K, ref_K)
        self.last_t_K = out[2]
        return out

    def select(self, pre_KBL: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(kept [K, B, L] bool mask, [K] threshold of this batch)."""
        t_K = self.batch_threshold(pre_KBL)
        floor_K = torch.where(t_K > 0, t_K, torch.full_like(t_K, torch.finfo(t_K.dtype).tiny))  # 0: all > 0
        return pre_KBL.detach() >= floor_K[:, None, None], t_K

    def decode_prefixes(self, pre_KBL, kept_KBL, sizes):
        """Yield the [K, B, D] reconstructions b_dec + Σ over kept entries with latent < m, for each m in the
        increasing `sizes` (cumulative: each prefix adds only its new latents)."""
        K, B, L = pre_KBL.shape
        recon, prev = self.b_dec_KD[:, None, :].expand(K, B, -1), 0
        if float(self.k_K.max()) <= self.sparse_max_density * L:  # k·B of B·L kept
            k_i, b_i, l_i = kept_KBL.nonzero(as_tuple=True)
            vals = pre_KBL[k_i, b_i, l_i]
            W_RD = self.W_dec_KLD.reshape(K * L, -1)
            for m in sizes:
                sel = (l_i >= prev) & (l_i < m) if (prev, m) != (0, L) else slice(None)
                part = _SparseDecode.apply(vals[sel], W_RD, (k_i * L + l_i)[sel], (k_i * B + b_i)[sel], K * B)
                recon, prev = recon + part.view(K, B, -1), m
                yield recon
            return
        acts_KBL = torch.where(kept_KBL, pre_KBL, 0.0)
        for m in sizes:
            recon, prev = recon + torch.bmm(acts_KBL[:, :, prev:m], self.W_dec_KLD[:, prev:m]), m
            yield recon

    def encode(self, x_BD):
        pre = self.pre_acts(x_BD)
        return pre.relu() * (pre > self.threshold_K.clamp_min(0)[:, None, None])

    def _recon_losses(self, x_BD, pre_KBL, kept_KBL):
        (recon,) = self.decode_prefixes(pre_KBL, kept_KBL, [self.L])
        return {"mse": mse_K(x_BD, recon)}, recon

    def fast_step_ok(self, x_BD) -> bool:
        """Whether this step can take the hand-written path (CPU: its index work runs in numpy; a subclass
        that overrides `_recon_losses` says so itself)."""
        return (self.fast_path and x_BD.device.type == "cpu"
                and type(self)._recon_losses is BatchTopKSAE._recon_losses)

    def loss_terms(self, x_BD, frac):
        if self.fast_step_ok(x_BD):
            mse, pre, recon, t_K, fired = SparseStep.apply(
                x_BD, self.W_enc_KDL, self.b_enc_KL, self.W_dec_KLD, self.b_dec_KD, self)
            losses = {"mse": mse, **self._aux(x_BD, recon, pre)}
            if self.training:
                self._update_threshold(t_K)
            return losses, fired
        pre = self.pre_acts(x_BD)
        kept, t_K = self.select(pre)
        losses, recon = self._recon_losses(x_BD, pre, kept)
        losses.update(self._aux(x_BD, recon, pre))
        if self.training:
            self._update_threshold(t_K)
        return losses, kept.sum(1)

    @torch.no_grad()
    def _update_threshold(self, t_K):
        """EMA of the smallest kept activation t (kept where nothing fired: t = 0)."""
        batch_min = torch.where(t_K > 0, t_K, self.threshold_K.clamp_min(0))
        m = self.per_sae("threshold_momentum")
        ema = m * self.threshold_K + (1 - m) * batch_min
        self.threshold_K.copy_(torch.where(self.threshold_K < 0, batch_min, ema))

    def inference(self, i):
        t = self._base_tensors(i)
        t["threshold"] = torch.full((self.L,), float(self.threshold_K[i].clamp_min(0)))
        return "jumprelu", t, {}

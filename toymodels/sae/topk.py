"""TopK SAE (Gao et al. 2024): keep each sample's k largest pre-activations, plus the aux-k dead-latent loss.

On CPU the training step is the family's hand-written sparse step (`sparse_step.SparseStep`: the decoder and
every gradient but the encoder's dense x·W_enc touch only the k·B kept entries); the autograd path (decoding
through only the k active rows with `sparse_decode`, a gather + sum whose backward is an index-add) is the
reference and what runs off CPU."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from toymodels.config import _is_int, _is_num
from toymodels.errors import check
from toymodels.sae.base import PackedSAE, SAEConfig, mse_K
from toymodels.sae.registry import register_variant
from toymodels.sae.sparse_step import SparseStep, row_top_k

K_ANNEAL_FRAC = 0.5
"""Fraction of training over which k falls from `k_start` to `k`."""

SPARSE_MAX_DENSITY = 0.02
"""Decode through only the active rows when at most this fraction of the latents is active per sample; above it
one dense product is faster on CPU than the gathers and index-adds."""

AUX_DEAD_COLUMNS = True
"""aux-k loss: a product over the dead columns only when no SAE has more than k_aux dead latents (False: always
the ranked top-k_aux path; the tests compare the two)."""
AUX_HAND_BACKWARD = True
"""The dead-columns aux-k loss on CPU as one hand-written forward/backward (`_DeadColumnsAux`) instead of ~40
small autograd ops (False: autograd; the tests compare the two)."""


class _SparseDecode(torch.autograd.Function):
    """out[dest[j]] += vals[j] · W[rows[j]] for a flat list of n active (value, row, destination) entries.
    Forward and both gradients touch only the n active rows (index_add / gather), never the dense [B, L]."""

    @staticmethod
    def forward(ctx, vals_n, W_RD, rows_n, dest_n, n_out: int):
        ctx.save_for_backward(vals_n, W_RD, rows_n, dest_n)
        out = torch.zeros(n_out, W_RD.shape[1], dtype=W_RD.dtype)
        return out.index_add_(0, dest_n, W_RD[rows_n] * vals_n[:, None])

    @staticmethod
    def backward(ctx, g_OD):
        vals_n, W_RD, rows_n, dest_n = ctx.saved_tensors
        g_nD = g_OD[dest_n]
        g_vals = (g_nD * W_RD[rows_n]).sum(-1) if ctx.needs_input_grad[0] else None
        g_W = None
        if ctx.needs_input_grad[1]:
            g_W = torch.zeros_like(W_RD).index_add_(0, rows_n, g_nD * vals_n[:, None])
        return g_vals, g_W, None, None, None


def decode_entries(vals_Kn, latent_Kn, sample_Kn, W_dec_KLD, B: int, b_KD=None):
    """Σ over entries (k, j) of vals · W_dec[k, latent] into sample's row → [K, B, D] (+ b_KD), sparse."""
    K, L, D = W_dec_KLD.shape
    inst = torch.arange(K)[:, None]
    out = _SparseDecode.apply(vals_Kn.reshape(-1), W_dec_KLD.reshape(K * L, D),
                              (latent_Kn + inst * L).reshape(-1),
                              (sample_Kn + inst * B).reshape(-1), K * B).view(K, B, D)
    return out if b_KD is None else out + b_KD[:, None, :]


def sparse_decode(vals_KBk, idx_KBk, W_dec_KLD, b_KD=None):
    """Σ_j vals[k,b,j] · W_dec[k, idx[k,b,j]] (+ b) → [K, B, D], touching only the active rows."""
    K, B, k = idx_KBk.shape
    sample = torch.arange(B)[None, :, None].expand(K, B, k).reshape(K, -1)
    return decode_entries(vals_KBk.reshape(K, -1), idx_KBk.reshape(K, -1), sample, W_dec_KLD, B, b_KD)


class _DeadColumnsAux(torch.autograd.Function):
    """`aux_k_loss` over each SAE's N dead columns idx_KN (live_KN False: padding) with the gradients by hand:
    the dead latents' pre-activations (gathered from the step's detached pre_KBL = s·W_enc + b_enc, s = x − b_dec
    if `sub_b_dec`, else x) reconstruct the detached residual through W_dec[idx]; every product is [B, N]-sized
    and the gradients reach those N columns of W_enc/b_enc and rows of W_dec (and b_dec) only."""

    @staticmethod
    def forward(ctx, W_enc_KDL, b_enc_KL, W_dec_KLD, b_dec_KD, x_BD, pre_KBL, resid_KBD, idx_KN, live_KN,
                sub_b_dec):
        K, D, _ = W_enc_KDL.shape
        B, N = resid_KBD.shape[1], idx_KN.shape[1]
        s_KBD = x_BD - b_dec_KD[:, None, :] if sub_b_dec else x_BD.expand(K, B, D)
        Wd_KND = W_dec_KLD.gather(1, idx_KN[:, :, None].expand(K, N, D))
        v_KBN = pre_KBL.detach().gather(2, idx_KN[:, None, :].expand(K, B, N))
        v_KBN.masked_fill_(~live_KN[:, None, :], 0.0)
        e_KBD = torch.bmm(v_KBN, Wd_KND).sub_(resid_KBD)
        base_K = resid_KBD.pow(2).sum(-1).mean(-1).clamp_min(1e-12)
        any_K = live_KN.any(-1)
        scale_K = torch.where(any_K, 2.0 / (B * base_K), torch.zeros_like(base_K))  # ∂loss/∂e = scale · e
        ctx.save_for_backward(W_enc_KDL, s_KBD, Wd_KND, v_KBN, e_KBD, idx_KN, live_KN, scale_K)
        ctx.sub_b_dec = sub_b_dec
        out_K = e_KBD.pow(2).sum(-1).mean(-1) / base_K
        return torch.where(any_K, out_K, torch.zeros_like(out_K))

    @staticmethod
    def backward(ctx, g_K):
        W_enc, s_KBD, Wd_KND, v_KBN, e_KBD, idx_KN, live_KN, scale_K = ctx.saved_tensors
        K, D, L = W_enc.shape
        N = idx_KN.shape[1]
        ge_KBD = e_KBD * (g_K * scale_K)[:, None, None]
        gv_KBN = torch.bmm(ge_KBD, Wd_KND.transpose(1, 2)).masked_fill_(~live_KN[:, None, :], 0.0)
        db_KN = gv_KBN.sum(1)
        dW_enc = torch.zeros_like(W_enc).scatter_(2, idx_KN[:, None, :].expand(K, D, N),
                                                  torch.bmm(s_KBD.transpose(1, 2), gv_KBN))
        db_enc = torch.zeros(K, L, dtype=W_enc.dtype, device=W_enc.device).scatter_(1, idx_KN, db_KN)
        dW_dec = torch.zeros(K, L, D, dtype=W_enc.dtype, device=W_enc.device).scatter_(
            1, idx_KN[:, :, None].expand(K, N, D), torch.bmm(v_KBN.transpose(1, 2), ge_KBD))
        db_dec = None
        if ctx.sub_b_dec:
            Wg_KDN = W_enc.gather(2, idx_KN[:, None, :].expand(K, D, N))
            db_dec = -torch.bmm(Wg_KDN, db_KN[:, :, None]).squeeze(-1)
        return dW_enc, db_enc, dW_dec, db_dec, None, None, None, None, None, None


def aux_k_loss(x_BD, recon_KBD, pre_KBL, dead_KL, W_dec_KLD, k_aux: int, by_magnitude: bool = False,
               pre_at=None, enc=None):
    """[K] aux-k loss: the top-k_aux *dead* latents reconstruct the detached residual x − x̂ (no decoder bias,
    which is already inside x̂), normalised by the residual's own squared norm. Zero where nothing is dead.
    `by_magnitude` (AbsTopK): rank the dead latents by |pre-activation| and keep their signed values.

    When no SAE has more than k_aux dead latents (the usual case) every dead latent is used, so no ranking is
    needed: the loss is a [B, n_dead] × [n_dead, D] product over each SAE's dead columns (padded to the pack's
    max n_dead, padding masked to 0), their pre-activations from `pre_at(idx_KN)` → [K, B, N] if given (e.g.
    `sae.pre_acts(x, idx_KN)`: then no gradient reaches the dense pre_KBL), else gathered from pre_KBL; with
    `enc` = (W_enc_KDL, b_enc_KL, b_dec_KD, apply_b_dec_to_input) on CPU, the same loss by `_DeadColumnsAux`."""
    resid_KBD = (x_BD - recon_KBD).detach()
    K, B, L = pre_KBL.shape
    k_aux = min(k_aux, L)
    n_max = int(dead_KL.sum(-1).max())
    if AUX_DEAD_COLUMNS and n_max <= k_aux:
        idx_KN = torch.argsort((~dead_KL).to(torch.uint8), dim=-1, stable=True)[:, :n_max]  # dead first
        live_KN = dead_KL.gather(1, idx_KN)
        if enc is not None and AUX_HAND_BACKWARD and x_BD.device.type == "cpu":
            W_enc_KDL, b_enc_KL, b_dec_KD, sub_b_dec = enc
            return _DeadColumnsAux.apply(W_enc_KDL, b_enc_KL, W_dec_KLD, b_dec_KD, x_BD, pre_KBL, resid_KBD, idx_KN,
                                         live_KN, sub_b_dec)
        pre_KBN = pre_at(idx_KN) if pre_at is not None else pre_KBL.gather(2, idx_KN[:, None, :].expand(K, B, -1))
        vals_KBN = torch.where(live_KN[:, None, :], pre_KBN, torch.zeros_like(pre_KBN))
        aux_recon = torch.bmm(vals_KBN, W_dec_KLD.gather(1, idx_KN[:, :, None].expand(-1, -1, W_dec_KLD.shape[2])))
    else:
        key_KBL = pre_KBL.abs() if by_magnitude else pre_KBL
        masked = torch.where(dead_KL[:, None, :], key_KBL, torch.full_like(pre_KBL, -torch.inf))
        vals, idx = masked.topk(k_aux, dim=-1, sorted=False)
        if by_magnitude:
            vals = torch.where(torch.isfinite(vals), pre_KBL.gather(-1, idx), vals)
        # no ReLU here: dead latents usually have negative pre-activations and must still get a gradient
        vals = torch.where(torch.isfinite(vals), vals, torch.zeros_like(vals))
        if k_aux <= SPARSE_MAX_DENSITY * L:
            aux_recon = sparse_decode(vals, idx, W_dec_KLD)
        else:  # k_aux = d_in/2 is often several % of the latents: one dense product beats 64 gathers per sample
            aux_recon = torch.bmm(torch.zeros_like(pre_KBL).scatter(-1, idx, vals), W_dec_KLD)
    err = (aux_recon - resid_KBD).pow(2).sum(-1).mean(-1)
    base = resid_KBD.pow(2).sum(-1).mean(-1).clamp_min(1e-12)
    return torch.where(dead_KL.any(-1), err / base, torch.zeros_like(err))


@dataclass
class TopKFamilyConfig(SAEConfig):
    """Shared fields of the TopK family (TopK, BatchTopK, Matryoshka): a k budget, optional k annealing and the
    aux-k dead-latent loss."""

    sparsity_field = "k"
    pack_fields = ("k_aux",)
    fractional_k: ClassVar[bool] = False
    """Whether k may be fractional (a batch-level budget: BatchTopK keeps round(k·batch) entries)."""
    k: float = 4
    """Active latents per sample, in [1, d_sae]: an integer for TopK; BatchTopK/Matryoshka keep round(k·batch)
    per batch, so any number works there."""
    target_l0: float | None = None
    """If set (in (0, d_sae]), the L0 to train at: sets k = target_l0 (TopK: must be an integer)."""
    k_start: int | None = None
    """If set (k ≤ k_start ≤ d_sae), training starts at this k and lowers it linearly to k over the first
    `K_ANNEAL_FRAC` of training: the slack early lets latents find their features, the exact budget late keeps
    decoder rows from absorbing interference."""
    aux_k: int | None = None
    """Latents in the dead-latent aux loss; None → d_in // 2 (in [1, d_sae] if given)."""
    aux_coeff: float = 1 / 32
    """Weight (≥ 0) of the aux-k loss (Gao et al. use 1/32)."""

    def __post_init__(self):
        super().__post_init__()
        kind = "a number" if self.fractional_k else "an integer"
        if self.target_l0 is not None:
            check(_is_num(self.target_l0) and 0 < self.target_l0 <= self.d_sae, "target_l0",
                  f"null or a number in (0, d_sae={self.d_sae}]", self.target_l0)
            check(self.fractional_k or float(self.target_l0).is_integer(), "target_l0",
                  f"an integer for {self.variant} (k = target_l0 latents per sample)", self.target_l0)
            self.k = int(self.target_l0) if float(self.target_l0).is_integer() else float(self.target_l0)
        check((_is_num(self.k) if self.fractional_k else _is_int(self.k)) and 1 <= self.k <= self.d_sae, "k",
              f"{kind} in [1, d_sae={self.d_sae}]", self.k)
        check(self.k_start is None or (_is_int(self.k_start) and self.k <= self.k_start <= self.d_sae), "k_start",
              f"null or an integer in [k={self.k}, d_sae={self.d_sae}]", self.k_start)
        check(self.aux_k is None or (_is_int(self.aux_k) and 1 <= self.aux_k <= self.d_sae), "aux_k",
              f"null or an integer in [1, d_sae={self.d_sae}]", self.aux_k)
        check(_is_num(self.aux_coeff) and self.aux_coeff >= 0, "aux_coeff", "a number ≥ 0", self.aux_coeff)

    @classmethod
    def l0_settings(cls, target: float) -> list[dict]:
        """k = target; a TopK target between integers is bracketed by k = ⌊t⌋ … ⌈t⌉ + 1 (to interpolate in the
        measured L0, which is below k where ReLU zeroes a selected negative pre-activation)."""
        if cls.fractional_k or float(target).is_integer():
            return [{"target_l0": target}]
        return [{"k": k} for k in range(max(1, math.floor(target)), math.ceil(target) + 2)]

    @property
    def k_aux(self) -> int:
        return self.aux_k if self.aux_k is not None else max(1, min(self.d_sae, self.d_in // 2))


class TopKFamily(PackedSAE):
    """Mixin of the TopK family: the per-SAE k buffer `k_K` with its annealing, and the aux-k loss."""

    dead_KL: torch.Tensor | None = None  # [K, L], set by the training loop each step
    aux_by_magnitude = False
    """Aux-k ranks dead latents by |pre-activation| and keeps signs (AbsTopK)."""

    def __init__(self, cfgs):
        super().__init__(cfgs)
        self.register_buffer("k_K", torch.tensor([float(c.k) for c in cfgs], dtype=torch.float64))

    @torch.no_grad()
    def schedule(self, frac):
        """k annealing (`k_start` → k over the first K_ANNEAL_FRAC of training)."""
        if any(c.k_start is not None for c in self.cfgs):
            left = max(0.0, 1.0 - frac / K_ANNEAL_FRAC)
            k = [(c, c.k + ((c.k_start or c.k) - c.k) * left) for c in self.cfgs]
            self.k_K.copy_(torch.tensor([float(round(v)) if _is_int(c.k) else v for c, v in k]))

    def step_prefixes(self):
        """(prefix sizes, [K, P] weights) of a nested-prefix loss for `SparseStep`; None: the plain MSE."""
        return None

    def _aux(self, x_BD, recon_KBD, pre_KBL) -> dict:
        """{"aux": [K] weighted aux-k loss} where some latent is dead, else {}."""
        if self.dead_KL is not None and bool(self.dead_KL.any()) and self.per_sae("aux_coeff").any():
            aux = aux_k_loss(x_BD, recon_KBD, pre_KBL, self.dead_KL, self.W_dec_KLD, self.cfgs[0].k_aux,
                             self.aux_by_magnitude, lambda idx_KN: self.pre_acts(x_BD, idx_KN),
                             (self.W_enc_KDL, self.b_enc_KL, self.b_dec_KD, self.apply_b_dec_to_input))
            return {"aux": self.per_sae("aux_coeff") * aux}
        return {}


@dataclass
class TopKConfig(TopKFamilyConfig):
    """TopK SAE (no fields beyond `TopKFamilyConfig`)."""


@register_variant("topk", TopKConfig)
class TopKSAE(TopKFamily):
    """f = TopK_k(ReLU((x − b_dec) W_enc + b_enc)); loss = ‖x − x̂‖² + α · aux-k."""

    sparse_max_density = SPARSE_MAX_DENSITY
    """Autograd path: decode through only the k active rows when k/L is at most this; else a dense bmm."""
    fast_path = True
    """Use the hand-written sparse step (`SparseStep`) on CPU."""

    def _topk(self, pre_KBL):
        """Per-sample top-k (k may differ per SAE: take max k, zero the ranks ≥ k_i)."""
        kmax = int(self.k_K.max())
        vals, idx = pre_KBL.topk(kmax, dim=-1, sorted=bool((self.k_K != kmax).any()))
        if (self.k_K != kmax).any():
            keep = torch.arange(kmax) < self.k_K[:, None, None]
            vals = vals * keep
        return vals.relu(), idx

    def encode(self, x_BD):
        pre = self.pre_acts(x_BD)
        vals, idx = self._topk(pre)
        return torch.zeros_like(pre).scatter_(-1, idx, vals)

    @torch.no_grad()
    def select_entries(self, pre_KBL):
        """`SparseStep`'s selection: per SAE the flat indices (ascending, into its [B·L]) and values of the
        nonzero top-k entries, and an unused [K] tensor."""
        pre = pre_KBL.detach().numpy()
        key = np.abs(pre) if self.aux_by_magnitude else pre
        idx, vals = [], []
        for i, k in enumerate(self.k_K.tolist()):
            flat = row_top_k(key[i], int(k))
            v = pre[i].reshape(-1)[flat]
            keep = (v != 0) if self.aux_by_magnitude else (v > 0)  # TopK: ReLU of the picks
            idx.append(flat[keep])
            vals.append(v[keep])
        return idx, vals, torch.zeros(len(pre))

    def fast_step_ok(self, x_BD) -> bool:
        """The hand-written step on CPU (its index work runs in numpy), when `select_entries` computes this
        class's `_topk` (a subclass with its own `_topk` takes the autograd path)."""
        return self.fast_path and x_BD.device.type == "cpu" and type(self)._topk in FAST_TOPK

    def loss_terms(self, x_BD, frac):
        if self.fast_step_ok(x_BD):
            mse, pre, recon, _, fired = SparseStep.apply(
                x_BD, self.W_enc_KDL, self.b_enc_KL, self.W_dec_KLD, self.b_dec_KD, self)
            return {"mse": mse, **self._aux(x_BD, recon, pre)}, fired
        pre = self.pre_acts(x_BD)
        vals, idx = self._topk(pre)
        if vals.shape[-1] <= self.sparse_max_density * self.L:
            recon = sparse_decode(vals, idx, self.W_dec_KLD, self.b_dec_KD)
        else:  # dense product is faster on CPU above a few percent active
            recon = self.decode(torch.zeros_like(pre).scatter(-1, idx, vals))
        losses = {"mse": mse_K(x_BD, recon), **self._aux(x_BD, recon, pre)}
        fired = torch.zeros_like(pre[:, 0, :]).scatter_add_(-1, idx.flatten(1), (vals != 0).flatten(1).float())
        return losses, fired

    def inference(self, i):
        return "topk", self._base_tensors(i), {"k": self.cfgs[i].k, "rescale_acts_by_decoder_norm": False}


FAST_TOPK = {TopKSAE._topk}
"""`_topk` methods that `TopKSAE.select_entries` reproduces (AbsTopK adds its own)."""

"""TopK SAE (Gao et al. 2024): keep each sample's k largest pre-activations, plus the aux-k dead-latent loss.

The decoder uses only the k active rows (`sparse_decode`: a gather + sum, whose backward is an index-add)."""

from __future__ import annotations

import torch

from toymodels.sae.base import PackedSAE, mse_K

SPARSE_MAX_DENSITY = 0.02
"""Decode through only the active rows when at most this fraction of the latents is active per sample; above it
one dense product is faster on CPU than the gathers and index-adds."""


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


def aux_k_loss(x_BD, recon_KBD, pre_KBL, dead_KL, W_dec_KLD, k_aux: int):
    """[K] aux-k loss: the top-k_aux *dead* latents reconstruct the detached residual x − x̂ (no decoder bias,
    which is already inside x̂), normalised by the residual's own squared norm. Zero where nothing is dead."""
    resid_KBD = (x_BD - recon_KBD).detach()
    k_aux = min(k_aux, pre_KBL.shape[-1])
    masked = torch.where(dead_KL[:, None, :], pre_KBL, torch.full_like(pre_KBL, -torch.inf))
    vals, idx = masked.topk(k_aux, dim=-1, sorted=False)
    # no ReLU here: dead latents usually have negative pre-activations and must still get a gradient
    vals = torch.where(torch.isfinite(vals), vals, torch.zeros_like(vals))
    if k_aux <= SPARSE_MAX_DENSITY * pre_KBL.shape[-1]:
        aux_recon = sparse_decode(vals, idx, W_dec_KLD)
    else:  # k_aux = d_in/2 is often several % of the latents: one dense product beats 64 gathers per sample
        aux_recon = torch.bmm(torch.zeros_like(pre_KBL).scatter(-1, idx, vals), W_dec_KLD)
    err = (aux_recon - resid_KBD).pow(2).sum(-1).mean(-1)
    base = resid_KBD.pow(2).sum(-1).mean(-1).clamp_min(1e-12)
    return torch.where(dead_KL.any(-1), err / base, torch.zeros_like(err))


class TopKSAE(PackedSAE):
    """f = TopK_k(ReLU((x − b_dec) W_enc + b_enc)); loss = ‖x − x̂‖² + α · aux-k."""

    dead_KL: torch.Tensor | None = None  # set by the training loop each step
    sparse_max_density = SPARSE_MAX_DENSITY
    """Decode through only the k active rows when k/L is at most this; else scatter and a dense bmm."""

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

    def loss_terms(self, x_BD, frac):
        pre = self.pre_acts(x_BD)
        vals, idx = self._topk(pre)
        if vals.shape[-1] <= self.sparse_max_density * self.L:
            recon = sparse_decode(vals, idx, self.W_dec_KLD, self.b_dec_KD)
        else:  # dense product is faster on CPU above a few percent active
            recon = self.decode(torch.zeros_like(pre).scatter(-1, idx, vals))
        losses = {"mse": mse_K(x_BD, recon)}
        if self.dead_KL is not None and bool(self.dead_KL.any()) and self.per_sae("aux_coeff").any():
            aux = aux_k_loss(x_BD, recon, pre, self.dead_KL, self.W_dec_KLD, self.cfgs[0].k_aux)
            losses["aux"] = self.per_sae("aux_coeff") * aux
        fired = torch.zeros_like(pre[:, 0, :]).scatter_add_(-1, idx.flatten(1), (vals > 0).flatten(1).float())
        return losses, fired

    def inference(self, i):
        return "topk", self._base_tensors(i), {"k": self.cfgs[i].k, "rescale_acts_by_decoder_norm": False}

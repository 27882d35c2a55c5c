"""BatchTopK SAE (Bussmann et al. 2024): in training keep the k·B largest activations of the whole batch;
for inference a learned global threshold θ (EMA of the smallest kept activation) makes it a JumpReLU SAE.

Selection (`select_entries`): per SAE the (k·B)-th largest positive pre-activation t is found exactly on a
pre-filtered candidate set (entries above ~90 % of the previous batch's t), and the kept entries are those
≥ t (exact up to float ties). The training step (`_BatchTopKStep`) is a hand-written forward/backward on the
kept entries only: the decoder, ∂W_dec, ∂W_enc and ∂f at the kept entries are sparse (CSR) products, so the
only dense product is the encoder's x·W_enc. Subclasses that override `_recon_losses` (Matryoshka) use the
autograd path (`decode_prefixes`)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch

from toymodels.config import _is_num
from toymodels.errors import check
from toymodels.sae.base import mse_K
from toymodels.sae.registry import register_variant
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
            cand = np.flatnonzero(a > lo)
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


def _csr(crow, col, vals, shape) -> torch.Tensor:
    with warnings.catch_warnings():  # "Sparse CSR tensor support is in beta" (CPU spmm is MKL's, stable)
        warnings.simplefilter("ignore")
        t = [torch.from_numpy(a) if isinstance(a, np.ndarray) else a for a in (crow, col, vals)]
        return torch.sparse_csr_tensor(*t, shape, check_invariants=False)


def _crow(sorted_rows: np.ndarray, n_rows: int) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(np.bincount(sorted_rows, minlength=n_rows))])


class _BatchTopKStep(torch.autograd.Function):
    """(mse_K, pre_KBL, recon_KBD, t_K, fired_KL) of a BatchTopK batch; gradients for (W_enc, b_enc, W_dec,
    b_dec) by hand. With n kept entries (row k·B + b, column k·L + l of a block-diagonal [K·B, K·L] CSR
    matrix A of kept activations): x̂ = A·W_dec + b_dec, ∂W_dec = Aᵀ·∂x̂, ∂f = (∂x̂·W_decᵀ) sampled at A's
    entries, ∂W_encᵀ = ∂Fᵀ·x: each O(n·D) instead of O(B·L·D). A gradient arriving on pre (the aux-k loss)
    adds a dense x·∂pre product, only in steps that have one. CPU tensors only (numpy index work)."""

    @staticmethod
    def forward(ctx, x_BD, W_enc_KDL, b_enc_KL, W_dec_KLD, b_dec_KD, sae):
        ctx.set_materialize_grads(False)
        K, L, D = W_dec_KLD.shape
        B = x_BD.shape[-2]  # x may be [K, B, D] (one stream per SAE)
        pre = sae.pre_acts(x_BD)  # [K, B, L]
        idx, vals, t_K = sae.select_entries(pre)
        off = np.repeat(np.arange(K), [len(i) for i in idx])
        flat = np.concatenate(idx)
        b_n, l_n = np.divmod(flat, L)
        row_n, col_n = off * B + b_n, off * L + l_n
        v_n = np.concatenate(vals)
        A = _csr(_crow(row_n, K * B), col_n, v_n, (K * B, K * L))
        recon = torch.addmm(b_dec_KD[:, None, :].expand(K, B, D).reshape(K * B, D), A,
                            W_dec_KLD.reshape(K * L, D)).view(K, B, D)
        err_KBD = recon - x_BD
        mse = torch.linalg.vecdot(err_KBD.view(K, -1), err_KBD.view(K, -1)) / B
        cnt_L = np.bincount(col_n, minlength=K * L)
        fired = torch.from_numpy(cnt_L).view(K, L)
        ctx.save_for_backward(x_BD, W_enc_KDL, W_dec_KLD, b_dec_KD, err_KBD)
        ctx.A, ctx.entries = A, (row_n, col_n, v_n, off * (B * L) + flat, cnt_L)
        ctx.mark_non_differentiable(recon, t_K, fired)
        return mse, pre, recon, t_K, fired

    @staticmethod
    def backward(ctx, g_mse, g_pre, *_):
        x_BD, W_enc, W_dec, b_dec, err = ctx.saved_tensors
        row_n, col_n, v_n, pos_n, cnt_L = ctx.entries
        K, L, D = W_dec.shape
        B = x_BD.shape[-2]
        dW_dec = db_dec = d_bias = dW_enc = None
        if g_mse is not None:
            dr = (err * (g_mse * (2.0 / B))[:, None, None]).view(K * B, D)  # ∂x̂
            db_dec = dr.view(K, B, D).sum(1)
            # transposed pattern (sorted by latent): ∂W_dec = Aᵀ ∂x̂ and ∂W_encᵀ = ∂Fᵀ (x − b_dec) as CSR
            # products (pre = (x − b_dec) W_enc + b_enc; ∂b_dec's encoder part is added below)
            perm = np.argsort(col_n.astype(np.int16 if K * L < 2**15 else np.int64), kind="stable")
            crow_T = np.concatenate([[0], np.cumsum(cnt_L)])
            dW_dec = (_csr(crow_T, row_n[perm], v_n[perm], (K * L, K * B)) @ dr).view(K, L, D)
            df_n = torch.sparse.sampled_addmm(ctx.A, dr, W_dec.reshape(K * L, D).T, beta=0.0).values()
            if g_pre is None:
                FT = _csr(crow_T, row_n[perm], df_n.numpy()[perm], (K * L, K * B))
                dW_enc = (FT @ (x_BD - b_dec[:, None, :]).view(K * B, D)).view(K, L, D).transpose(1, 2)
                d_bias = torch.from_numpy(np.bincount(col_n, weights=df_n.numpy(), minlength=K * L))
                d_bias = d_bias.to(W_enc.dtype).view(K, L)
        if g_pre is not None:
            g = g_pre.clone()
            if g_mse is not None:
                g.view(-1).index_add_(0, torch.from_numpy(pos_n), df_n)
            dW_enc = torch.bmm((x_BD - b_dec[:, None, :]).transpose(1, 2), g)
            d_bias = g.sum(1)
        if d_bias is not None:
            gb = -torch.bmm(W_enc, d_bias[:, :, None]).squeeze(-1)
            db_dec = gb if db_dec is None else db_dec + gb
        return None, dW_enc, d_bias, dW_dec, db_dec, None


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
    """Use the hand-written sparse step (`_BatchTopKStep`) on CPU when `_recon_losses` is not overridden."""

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

    def loss_terms(self, x_BD, frac):
        if (self.fast_path and x_BD.device.type == "cpu"  # its index work runs in numpy
                and type(self)._recon_losses is BatchTopKSAE._recon_losses):
            mse, pre, recon, t_K, fired = _BatchTopKStep.apply(
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

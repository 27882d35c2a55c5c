"""The fast path's element-sparse kernel, for wide sparse tied models (many features at low density).

With F ≥ 100 features at density 0.01–0.03 most rows of a batch have an active feature, so skipping all-zero
rows (`FastSampler`'s sparse mode) saves little; but only about p·F·B of the F·B entries of x are non-zero.
This kernel samples only those entries and uses x as a sparse matrix:

- `ActiveSampler` draws the active (row, feature) pairs directly, exact in distribution: in the flattened
  [instance, batch, feature] sequence of independent Bernoulli(p) entries, the gaps between successive active
  entries are Geometric(p). Where densities differ within an instance, candidates are drawn at the instance's
  largest density p_max and kept with probability p_f / p_max (thinning); one float64 uniform u per candidate
  gives both the keep decision (u < p_f / p_max) and the U[0,1) magnitude (u · p_max / p_f).
- `ActiveGrad` computes the two input-side products, h = W x and the x dhᵀ term of ∂W, as `embedding_bag` sums
  over the active entries only (p·F·B·H multiply-adds instead of F·B·H each; measured faster here than torch's
  CSR × dense product). The output side stays dense, since every output enters the loss, but uses the sparsity
  of the target: for an inactive feature the error is the output itself, which is already 0 wherever the
  pre-activation is ≤ 0, so the output gradient g = 2c·imp·out needs neither an error pass nor a ReLU mask there.
  Only the active entries are corrected (e = out − x, masked by out > 0 for ReLU outputs), by one gather and one
  scatter over them; the loss is c Σ imp out² (one norm pass) plus their correction.

The output gradient itself is not made sparse: it is non-zero wherever an output is positive (25-50 % of the
entries of a 400→30 model at density 0.05 during its first 1,000 steps, 7 % for 1000→100 at density 0.01 after
300 steps), and finding those entries (a `nonzero` scan of the [F, B] mask) measured about as slow as the dense
GEMM it would replace, before the sparse products themselves.

`use_active` is the measured rule that picks this kernel (README, Performance).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch
from torch.nn.functional import embedding_bag

from toymodels.config import ToyConfig

ACTIVE_MIN_FEATURES = 100
"""`use_active`: the element-sparse kernel is taken from this many features ..."""
ACTIVE_MAX_DENSITY = 0.02
"""... at mean densities up to this. Measured (CPU time per step against the dense kernel, one thread): it wins
1.06-1.58× at density 0.005-0.02 (100-1000 features, 10-100 hidden), and loses 0.79-0.96× at 0.03-0.05, where
its per-entry work (sampling, gathers, scatters) outweighs the two GEMMs it saves."""


def use_active(cfg: ToyConfig, p_KF: torch.Tensor, mode: str, sparse_rows: bool) -> bool:
    """Whether the fast path takes the element-sparse kernel: auto mode, independent U[0,1] features, the
    row-sparse sampler not chosen, wide (F ≥ ACTIVE_MIN_FEATURES) and sparse: each instance's largest density,
    averaged over instances, ≤ ACTIVE_MAX_DENSITY (the sampler draws candidates at that rate, so a Zipf spread
    of densities with a dense head stays on the dense kernel)."""
    return (mode == "auto" and not sparse_rows and cfg.structure == "independent"
            and cfg.magnitude_law == "uniform" and p_KF.shape[1] >= ACTIVE_MIN_FEATURES
            and float(p_KF.max(1).values.mean()) <= ACTIVE_MAX_DENSITY)


class ActiveBatch(NamedTuple):
    """One batch's N active entries of x, for K instances of F features and B rows: row r = k·B + b, column
    (cell) c = k·F + f, so x is a block-diagonal [K·B, K·F] sparse matrix. Both orientations are given as bags
    for `embedding_bag` (entries grouped by row, and grouped by column)."""

    cell_N: torch.Tensor
    """Column c of each entry, grouped by row (ascending r; the rows' bags start at `row_start_R`)."""
    v_N: torch.Tensor
    """Magnitude of each entry, same order."""
    row_start_R: torch.Tensor
    """[K·B] where each row's entries start."""
    row_T: torch.Tensor
    """Row r of each entry, grouped by column (bags start at `col_start_C`)."""
    vT_N: torch.Tensor
    """Magnitudes in that order."""
    col_start_C: torch.Tensor
    """[K·F] where each column's entries start."""
    idx_N: torch.Tensor
    """Flat index c·B + b of each entry (row order) in a [K, F, B] tensor."""
    k_N: torch.Tensor
    """Instance of each entry (row order)."""


class ActiveSampler:
    """Training batches of active entries: `__call__()` returns [(instance slice, ActiveBatch, n_zero = 0)]."""

    def __init__(self, p_KF: torch.Tensor, batch: int, seed: int):
        K, F = p_KF.shape
        self.K, self.F, self.B, self.n = K, F, batch, batch * F  # n: entries per instance
        self.rng = np.random.Generator(np.random.SFC64(np.random.SeedSequence([seed, 2])))
        p = p_KF.double().numpy()
        pmax_K = p.max(1)
        self.empty_K = pmax_K <= 0  # instances with no active feature at all
        self.ratio_C = (p / np.where(self.empty_K, 1.0, pmax_K)[:, None]).reshape(-1)
        self.thin = bool((self.ratio_C < 1).any())
        mean = float(self.n * pmax_K.max())
        m = int(mean + 6 * math.sqrt(mean) + 16)  # gaps drawn per instance; more only if they fall short
        self.log_off_K1 = np.log1p(-np.where(self.empty_K, 0.5, pmax_K))[:, None]
        self.ramp_m = np.arange(m, dtype=np.float64)
        self.offset_K1 = (np.arange(K, dtype=np.float64) * self.n)[:, None]
        self.limit_K1 = self.offset_K1 + np.where(self.empty_K, 0, self.n)[:, None]
        self.buf_Km = np.empty((K, m))
        self.key = np.uint16 if K * F < 2**16 else np.int64  # uint16: numpy's stable argsort is then a radix sort
        self.rows = np.arange(K * batch)

    def gaps(self, rows: int, m: int, log_off: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """[rows, m] Geometric(p) gaps minus one, by inversion of float64 uniforms: floor(log(u') / log(1 − p)) with
        u' = 1 − u, uniform on (0, 1] (u is on a 2⁻⁵³ grid, so 1 − u is exact); returned as float64."""
        u = self.rng.random((rows, m), out=out)
        return np.floor(np.divide(np.log(np.subtract(1.0, u, out=u), out=u), log_off, out=u), out=u)

    def positions(self) -> np.ndarray:
        """Ascending flat positions k·B·F + b·F + f (int64) of the candidate entries (Bernoulli(p_max) each)."""
        K, m = self.buf_Km.shape
        pos_Km = np.cumsum(self.gaps(K, m, self.log_off_K1, out=self.buf_Km), axis=1, out=self.buf_Km)
        pos_Km += self.ramp_m  # Σ (gap − 1) + j = (position of candidate j) within the instance
        pos_Km += self.offset_K1
        if (pos_Km[:, -1] >= self.limit_K1[:, 0]).all():
            return pos_Km[pos_Km < self.limit_K1].astype(np.int64)
        parts = []  # rare: some instance needs more gaps than m (probability < 1e-9 per step)
        for k in range(K):
            pos = pos_Km[k]
            while pos[-1] < self.limit_K1[k, 0]:
                more = pos[-1] + 1 + np.cumsum(self.gaps(1, m, self.log_off_K1[k:k + 1])[0]) + self.ramp_m
                pos = np.concatenate([pos, more])
            parts.append(pos[pos < self.limit_K1[k, 0]])
        return np.concatenate(parts).astype(np.int64)

    def __call__(self) -> list[tuple[slice, ActiveBatch, int]]:
        K, F, B = self.K, self.F, self.B
        pos_N = self.positions()
        r_N, f_N = np.divmod(pos_N, F)
        if self.thin:
            u_N = self.rng.random(len(pos_N))
            ratio_N = self.ratio_C[(r_N // B) * F + f_N]
            keep = u_N < ratio_N
            r_N, f_N = r_N[keep], f_N[keep]
            v_N = np.minimum((u_N[keep] / ratio_N[keep]).astype(np.float32), np.float32(1 - 2**-24))
        else:
            v_N = self.rng.random(len(pos_N), dtype=np.float32)  # U[0,1)
        k_N, b_N = np.divmod(r_N, B)
        cell_N = f_N if K == 1 else k_N * F + f_N
        order = np.argsort(cell_N.astype(self.key), kind="stable")
        count_C = np.bincount(cell_N, minlength=K * F)
        col_start = np.cumsum(count_C) - count_C
        t = torch.from_numpy
        batch = ActiveBatch(
            cell_N=t(cell_N), v_N=t(v_N), row_start_R=t(np.searchsorted(r_N, self.rows)),
            row_T=t(r_N[order]), vT_N=t(v_N[order]), col_start_C=t(col_start),
            idx_N=t(cell_N * B + b_N), k_N=t(k_N))
        return [(slice(0, K), batch, 0)]


class ActiveGrad:
    """Loss and hand-derived gradients of a TiedModel from an `ActiveBatch` (same interface as `TiedGrad`).

    With c = 1/(batch·F): loss = c Σ imp e², e = out − x; g = 2c·imp·e masked by out > 0 (ReLU output);
    ∂b = Σ_batch g; ∂W = g hᵀ + x dhᵀ with dh = Wᵀ g (masked by h > 0 for hidden_relu). Batch-last buffers
    [K, ·, B] as in `TiedGrad`; hA = [h; 1] carries the bias through the output GEMM and ∂b through g hAᵀ.
    """

    def __init__(self, model, imp_KF: torch.Tensor, batch: int):
        K, F, H = model.W.shape
        self.model, self.shape = model, (K, F, H, batch)
        self.relu_out, self.relu_hidden = model.kind != "linear", model.kind == "hidden_relu"
        self.imp_c_KF = imp_KF / (batch * F)
        self.s2_C = (2 * self.imp_c_KF).reshape(-1)
        self.s2_KF1 = (2 * self.imp_c_KF)[:, :, None]
        self.grads = [torch.zeros_like(model.W), torch.zeros_like(model.b)]  # ∂W_KFH, ∂b_KF
        self.Wb_KFA = torch.empty(K, F, H + 1)  # [W | b]
        self.WT_KHF = torch.empty(K, H, F)
        self.hA_KAB = torch.ones(K, H + 1, batch)  # [h; 1]
        self.out_KFB = self.g_KFB = None  # [K, F, B] each, allocated on the first batch
        self.gWb_KAF = torch.zeros(K, H + 1, F)  # [∂W | ∂b]ᵀ
        self.dh_KHB = torch.empty(K, H, batch)

    @torch.no_grad()
    def begin(self) -> None:
        """Before a step: copy the current weights into the work matrices."""
        H = self.shape[2]
        self.Wb_KFA[:, :, :H] = self.model.W
        self.Wb_KFA[:, :, H] = self.model.b
        self.WT_KHF.copy_(self.model.W.transpose(1, 2))

    @torch.no_grad()
    def __call__(self, xa: ActiveBatch, n_zero: int, loss_K: torch.Tensor, sl: slice = slice(None)) -> None:
        """Write every instance's loss into `loss_K` and its gradient into [∂W | ∂b]ᵀ (one chunk: all rows)."""
        K, F, H, B = self.shape
        if self.out_KFB is None:
            self.out_KFB, self.g_KFB = torch.empty(K, F, B), torch.empty(K, F, B)
        hA_KAB, out_KFB, g_KFB, dh_KHB = self.hA_KAB, self.out_KFB, self.g_KFB, self.dh_KHB
        W_CH = self.model.W.detach().view(K * F, H)
        h_RH = embedding_bag(xa.cell_N, W_CH, xa.row_start_R, mode="sum", per_sample_weights=xa.v_N)  # h = W x
        hA_KAB[:, :H].copy_(h_RH.view(K, B, H).transpose(1, 2))
        if self.relu_hidden:
            hA_KAB[:, :H].relu_()
        torch.bmm(self.Wb_KFA, hA_KAB, out=out_KFB)  # Wᵀh + b for every output
        if self.relu_out:
            out_KFB.relu_()
        torch.mul(out_KFB, self.s2_KF1, out=g_KFB)  # 2c·imp·out: exact for inactive entries (x = 0)
        loss_K = loss_K[sl]
        norm_KF = torch.linalg.vector_norm(out_KFB, dim=-1)  # one fused read: ‖out‖ over the batch
        torch.linalg.vecdot(norm_KF.square_(), self.imp_c_KF, out=loss_K)  # c Σ imp out²
        o_N = out_KFB.view(-1).index_select(0, xa.idx_N)
        s2_N = self.s2_C.index_select(0, xa.cell_N)
        corr_N = s2_N * xa.v_N * (xa.v_N - 2 * o_N)  # 2c·imp·((out − x)² − out²) at the active entries
        if K == 1:
            loss_K.add_(corr_N.sum(), alpha=0.5)
        else:
            loss_K.index_add_(0, xa.k_N, corr_N, alpha=0.5)
        g_N = s2_N.mul_(o_N - xa.v_N)  # 2c·imp·(out − x) there
        if self.relu_out:
            g_N.mul_(o_N > 0)
        g_KFB.view(-1).scatter_(0, xa.idx_N, g_N)
        torch.bmm(hA_KAB, g_KFB.transpose(1, 2), out=self.gWb_KAF)  # [g hᵀ | Σ_batch g]ᵀ
        torch.bmm(self.WT_KHF, g_KFB, out=dh_KHB)  # dh = Wᵀ g
        if self.relu_hidden:
            torch.ops.aten.threshold_backward.grad_input(dh_KHB, hA_KAB[:, :H], 0.0, grad_input=dh_KHB)
        dh_RH = dh_KHB.transpose(1, 2).reshape(K * B, H)
        gx_CH = embedding_bag(xa.row_T, dh_RH, xa.col_start_C, mode="sum", per_sample_weights=xa.vT_N)  # x dhᵀ
        self.gWb_KAF[:, :H].add_(gx_CH.view(K, F, H).transpose(1, 2))

    @torch.no_grad()
    def end(self) -> None:
        """After a step: copy [∂W | ∂b]ᵀ into `self.grads` (∂W_KFH, ∂b_KF)."""
        H = self.shape[2]
        self.grads[0].copy_(self.gWb_KAF[:, :H].transpose(1, 2))
        self.grads[1].copy_(self.gWb_KAF[:, H])

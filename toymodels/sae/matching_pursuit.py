"""Matching Pursuit SAE (SAELens `matching_pursuit`; a row of SynthSAEBench's table): a tied SAE whose encoder
is greedy pursuit over the unit-norm decoder rows. For s = x − b_dec, residual r = s, repeat up to k times:
pick i = argmax_l ReLU(r · W_dec[l]), v = ReLU(r · W_dec[i]), f_i += v, r −= v · W_dec[i]; a sample stops
early when it finds no positive correlation, when a step leaves its support unchanged (it re-picked a latent;
SAELens's stop_on_duplicate_support, on by default) or when ‖r‖ < residual_threshold. x̂ = f W_dec + b_dec;
loss = ‖x − x̂‖². Gradients flow through the values and the residual chain, not through the argmax (as SAELens).

SynthSAEBench trains it with max_iterations = the target L0, residual_threshold 0 and stop_on_duplicate_support
off (so every sample takes k steps; L0 ≤ k, re-picks add to a latent). For an exact L0 T (`target_l0`), a
controller steers the residual threshold (SAELens's own L0 knob): log threshold += gain · (e + P Δe) after every
step, e the batch's relative L0 error (P = `l0_p_over_i`; the penalty variants' controller, `penalty.py`, uses
20). The benchmark gives k = ⌊T⌋ + 1, so that well-reconstructed samples stop one step early; with
`target_headroom` h, k = ⌈h T⌉ instead and the threshold decides each sample's step count (as in SAELens's
default MP, which has no step limit), so samples holding more features take more steps.

Cost: the k steps are sequential (each pick needs the residual the previous one left), so the encoder is k
dependent selections instead of TopK's one. Selecting directly needs r·W_decᵀ, a [B, L]×D product per step
(k of them); training instead tracks the correlations c = r·W_decᵀ through the Gram matrix G = W_dec W_decᵀ
(c −= v · G[i], a [B, L] update per step), so a step costs one dense product, G, and k cheap [B, L] updates
(`gram_selection`; the same picks up to float rounding). The README gives measured costs per k."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from toymodels.config import _is_int, _is_num
from toymodels.errors import check
from toymodels.sae.base import PackedSAE, SAEConfig, mse_K
from toymodels.sae.penalty import P_OVER_I, pi_step
from toymodels.sae.registry import register_variant
from toymodels.sae.topk import sparse_decode


def _argmax_last(x: torch.Tensor) -> torch.Tensor:
    """x.argmax(-1) (first maximum on ties); on the CPU through numpy, ~5× faster than torch over a short last
    dimension such as [K, B, 64]."""
    if x.device.type != "cpu":
        return x.argmax(-1)
    return torch.from_numpy(x.detach().contiguous().numpy().argmax(-1))


def pursue(s_KBD, W_KLD, k, threshold=0.0, gram: bool = False, stop_dup=True, resids: list | None = None):
    """Greedy matching pursuit of inputs s (already minus b_dec) over decoder rows W: ([K, B, L] activations,
    [K, B, kmax] values, [K, B, kmax] indices, [K, B, kmax] bool "added a new latent"). `k` and `threshold` are
    ints/floats or [K] tensors (per SAE: the step budget and the residual-norm stop). `gram`: track the
    correlations through W Wᵀ instead of recomputing r Wᵀ each step (training's fast path). `stop_dup` (bool
    or [K] bool tensor): a sample stops when a step re-picks one of its latents (else the value adds to it).
    `resids`: a list that receives the residual before each step and the final one (`_TrainPursuit`, which has
    no use for the activations: they are then None)."""
    K, B, _ = s_KBD.shape
    L = W_KLD.shape[1]
    k_K = torch.as_tensor(k).expand(K)
    thr_K = torch.as_tensor(threshold, dtype=s_KBD.dtype).expand(K)
    dup_K1 = torch.as_tensor(stop_dup, dtype=torch.bool).expand(K)[:, None]
    inst = torch.arange(K)[:, None]
    resid = s_KBD
    done_KB = torch.zeros(K, B, dtype=torch.bool)
    support_KBL = torch.zeros(K, B, L, dtype=torch.bool)
    vals, idxs, news = [], [], []
    with torch.no_grad():
        if gram:
            c_KBL = torch.bmm(s_KBD, W_KLD.transpose(1, 2))
            G_RL = torch.bmm(W_KLD, W_KLD.transpose(1, 2)).reshape(K * L, L)  # row k·L + l: W[k, l]·W[k]ᵀ
    for step in range(int(k_K.max())):
        if resids is not None:
            resids.append(resid)
        with torch.no_grad():
            corr = c_KBL if gram else torch.bmm(resid, W_KLD.transpose(1, 2))
            # argmax without SAELens's ReLU: when every correlation is ≤ 0 either pick gets v = 0 and stops
            i_KB = _argmax_last(corr)
        rows_N = (i_KB + inst * L).flatten()  # row k·L + i of the [K·L, ·] stacks
        d_KBD = W_KLD.reshape(K * L, -1).index_select(0, rows_N).view(K, B, -1)
        v_KB = torch.relu(torch.linalg.vecdot(resid, d_KBD)) * (~done_KB)
        resid = torch.addcmul(resid, v_KB[..., None], d_KBD, value=-1.0)
        with torch.no_grad():
            new_KB = (v_KB > 0) & ~support_KBL.gather(-1, i_KB[..., None])[..., 0]
            support_KBL.scatter_(-1, i_KB[..., None], new_KB[..., None] | support_KBL.gather(-1, i_KB[..., None]))
            done_KB |= ((~new_KB & dup_K1) | (v_KB <= 0) | (resid.norm(dim=-1) < thr_K[:, None])
                        | (step + 1 >= k_K[:, None]))
            if gram:  # c −= v · G[i], one fused pass over [K, B, L]
                c_KBL.addcmul_(v_KB[..., None], G_RL.index_select(0, rows_N).view(K, B, L), value=-1.0)
        vals.append(v_KB)
        idxs.append(i_KB)
        news.append(new_KB)
        if bool(done_KB.all()):
            break
    if resids is not None:
        resids.append(resid)
    vals_KBk, idx_KBk = torch.stack(vals, -1), torch.stack(idxs, -1)
    acts_KBL = None if resids is not None else \
        torch.zeros(K, B, L, dtype=s_KBD.dtype).scatter_add(-1, idx_KBk, vals_KBk)
    return acts_KBL, vals_KBk, idx_KBk, torch.stack(news, -1)


class _TrainPursuit(torch.autograd.Function):
    """Training's pursuit (Gram-tracked picks) as one function: (final residual r_T [K, B, D], and, not
    differentiable, the [K, B, T] values, indices and "new latent" flags). With s = x − b_dec the reconstruction
    error x − x̂ is r_T, so the loss needs no decode. Backward by hand through the chain r_{t+1} = r_t − v_t d_t,
    v_t = ReLU(r_t · d_t) (0 once a sample has stopped), d_t = W[i_t], from the saved residuals, in reverse:
    g_t = −(∂r_{t+1} · d_t)·1[v_t > 0], ∂d_t = g_t r_t − v_t ∂r_{t+1}, ∂r_t = ∂r_{t+1} + g_t d_t, ∂W[i_t] += ∂d_t:
    O(T·B·D), against ~10 autograd nodes per step (the same gradients up to float rounding: tests)."""

    @staticmethod
    def forward(ctx, s_KBD, W_KLD, k_K, thr_K, dup_K):
        resids = []
        _, vals, idx, new = pursue(s_KBD, W_KLD, k_K, thr_K, gram=True, stop_dup=dup_K, resids=resids)
        ctx.save_for_backward(W_KLD, vals, idx)
        ctx.resids = resids[:-1]  # intermediates (not inputs or outputs): kept as they are, no stacked copy
        ctx.mark_non_differentiable(vals, idx, new)
        return resids[-1], vals, idx, new

    @staticmethod
    def backward(ctx, g_KBD, *_):
        W_KLD, vals_KBT, idx_KBT = ctx.saved_tensors
        K, L, D = W_KLD.shape
        W_RD = W_KLD.reshape(K * L, D)
        rows_KBT = idx_KBT + (torch.arange(K) * L)[:, None, None]
        dr = g_KBD.clone()  # ∂r_t, from t = T down to 0
        dW_RD = torch.zeros_like(W_RD)
        for t in reversed(range(vals_KBT.shape[-1])):
            rows = rows_KBT[..., t].reshape(-1)
            d_KBD, v_KB = W_RD.index_select(0, rows).view(K, -1, D), vals_KBT[..., t]
            g_KB = torch.linalg.vecdot(dr, d_KBD).neg_().mul_(v_KB > 0)
            dW_RD.index_add_(0, rows, (g_KB[..., None] * ctx.resids[t] - v_KB[..., None] * dr).view(-1, D))
            dr.addcmul_(g_KB[..., None], d_KBD)
        ctx.resids = None
        return dr, dW_RD.view(K, L, D), None, None, None


@dataclass
class MatchingPursuitConfig(SAEConfig):
    """Matching Pursuit SAE: tied encoder (the decoder rows), k greedy pursuit steps."""

    sparsity_field = "k"
    pack_fields = ("k",)  # a pack runs its largest k for every SAE (the pursuit is sequential): pack equal k only
    k: int = 4
    """Pursuit steps per sample (1 ≤ k ≤ d_sae; SAELens's max_iterations): at most k latents fire, fewer when a
    step leaves the support unchanged or the residual falls below `residual_threshold`."""
    residual_threshold: float = 0.0
    """Stop a sample's pursuit once its residual norm is below this (≥ 0; normalised units while training,
    where E‖x‖² = d_in, exported in data units; 0 = never). SAELens's default is 1e-2. With `target_l0`: the
    controller's starting value (0 → 1.0)."""
    stop_on_duplicate_support: bool = True
    """Stop a sample when a step re-picks one of its latents (SAELens's default); SynthSAEBench turns it off."""
    target_l0: float | None = None
    """If set (in (0, k)), a controller steers `residual_threshold` during training so that the SAE ends at this
    L0; a benchmark at exact L0 uses k = ⌊target⌋ + 1 (or `target_headroom`)."""
    l0_gain: float = 0.05
    """Gain (> 0) of the controller: change of log residual_threshold per step per unit relative L0 error."""
    l0_p_over_i: float = P_OVER_I
    """Proportional-to-integral ratio (≥ 0) of the controller (20 as the penalty variants'). 0: pure integral; the
    threshold acts at once, so with many steps above the target (`target_headroom`) the proportional kick of
    gain · 20 overshoots and the threshold locks into a period-2 cycle (L0 alternating 1 ↔ 10.6 at target 5.7)."""
    target_headroom: float | None = None
    """With target_l0: k = ⌈target_headroom · target_l0⌉ pursuit steps (≥ ⌊target⌋ + 1, ≤ d_sae; replaces k), so
    the controlled threshold, not k, sets each sample's count. None: k as given."""

    def __post_init__(self):
        super().__post_init__()
        check(_is_int(self.k) and 1 <= self.k <= self.d_sae, "k", f"an integer in [1, d_sae={self.d_sae}]", self.k)
        check(_is_num(self.residual_threshold) and self.residual_threshold >= 0, "residual_threshold",
              "a number ≥ 0", self.residual_threshold)
        check(isinstance(self.stop_on_duplicate_support, bool), "stop_on_duplicate_support", "true or false",
              self.stop_on_duplicate_support)
        check(self.target_l0 is None or (_is_num(self.target_l0) and 0 < self.target_l0 <= self.d_sae),
              "target_l0", f"null or a number in (0, d_sae={self.d_sae}]", self.target_l0)
        check(self.target_headroom is None or (_is_num(self.target_headroom) and self.target_headroom > 1),
              "target_headroom", "null or a number > 1", self.target_headroom)
        if self.target_l0 is not None and self.target_headroom is not None:
            self.k = min(self.d_sae, math.ceil(self.target_headroom * self.target_l0))  # > T: h > 1
        check(self.target_l0 is None or self.target_l0 < self.k, "target_l0",
              f"below k={self.k} (the residual threshold can only stop samples early)", self.target_l0)
        check(_is_num(self.l0_gain) and self.l0_gain > 0, "l0_gain", "a number > 0", self.l0_gain)
        check(_is_num(self.l0_p_over_i) and self.l0_p_over_i >= 0, "l0_p_over_i", "a number ≥ 0", self.l0_p_over_i)

    @classmethod
    def l0_settings(cls, target: float) -> list[dict]:
        """Exact: k = ⌊target⌋ + 1 pursuit steps, the residual-threshold controller on."""
        return [{"k": math.floor(target) + 1, "target_l0": float(target)}]


@register_variant("matching_pursuit", MatchingPursuitConfig)
class MatchingPursuitSAE(PackedSAE):
    """Tied: the encoder is W_decᵀ (`W_enc_KDL` is a view of it), no encoder bias; unit-norm decoder rows."""

    gram_selection = True
    """Training picks latents from correlations tracked through W_dec W_decᵀ (see module docstring)."""

    def __init__(self, cfgs):
        super().__init__(cfgs)
        del self.W_enc_KDL, self.b_enc_KL
        self._tied = True  # from now on W_enc_KDL is a view of the decoder (__getattr__)
        self.register_buffer("target_K", torch.tensor([c.target_l0 or math.nan for c in cfgs]))
        self.register_buffer("log_thr_K", torch.tensor([math.log(c.residual_threshold or 1.0) for c in cfgs]))
        self.register_buffer("err_K", torch.full((len(cfgs),), math.nan))  # previous step's L0 error
        self.controlled_K = torch.isfinite(self.target_K)
        self.stop_dup_K = torch.tensor([c.stop_on_duplicate_support for c in cfgs])

    def threshold_K(self) -> torch.Tensor:
        """[K] residual thresholds: fixed, or steered to each SAE's target_l0."""
        return torch.where(self.controlled_K, self.log_thr_K.exp(), self.per_sae("residual_threshold"))

    @torch.no_grad()
    def after_step(self, l0_K, frac, lr_factor=1.0):
        if not self.controlled_K.any():
            return
        step_K, err_K = pi_step(l0_K, self.target_K, self.err_K, self.per_sae("l0_gain"), self.per_sae("l0_p_over_i"))
        self.log_thr_K.copy_(torch.where(self.controlled_K, (self.log_thr_K + step_K).clamp(-30.0, 10.0),
                                         self.log_thr_K))
        self.err_K.copy_(torch.where(self.controlled_K, err_K, math.nan))

    def summary(self, i: int) -> dict:
        return {"sparsity_coeff": float(self.log_thr_K[i].exp())} if self.controlled_K[i] else {}

    def __getattr__(self, name):
        if name == "W_enc_KDL" and self.__dict__.get("_tied"):  # [K, D, L] view of W_dec_KLD (resampling
            # writes through it)
            return self.W_dec_KLD.transpose(1, 2)
        return super().__getattr__(name)

    def _pursue(self, x_BD, gram):
        return pursue(self.sae_in(x_BD), self.W_dec_KLD, self.per_sae("k").long(), self.threshold_K(),
                      gram=gram, stop_dup=self.stop_dup_K)

    def encode(self, x_BD):
        return self._pursue(x_BD, gram=False)[0]

    def loss_terms(self, x_BD, frac):
        if self.gram_selection:  # x − x̂ = r_T (x̂ = Σ v W[i] + b_dec, s = x − b_dec): no decode
            r_KBD, vals, idx, new = _TrainPursuit.apply(self.sae_in(x_BD), self.W_dec_KLD, self.per_sae("k").long(),
                                                        self.threshold_K(), self.stop_dup_K)
            mse = r_KBD.pow(2).sum(-1).mean(-1)
        else:
            _, vals, idx, new = self._pursue(x_BD, gram=False)
            mse = mse_K(x_BD, sparse_decode(vals, idx, self.W_dec_KLD, self.b_dec_KD))
        fired = torch.zeros(self.K, self.L).scatter_add_(-1, idx.flatten(1), new.flatten(1).float())
        return {"mse": mse}, fired

    @torch.no_grad()
    def inference(self, i):
        W = self.W_dec_KLD[i].detach().clone()
        t = {"W_enc": W.T.clone(), "W_dec": W, "b_dec": self.b_dec_KD[i].detach().clone()}
        c = self.cfgs[i]
        return "matching_pursuit", t, {"k": c.k, "residual_threshold": float(self.threshold_K()[i]),
                                       "stop_on_duplicate_support": c.stop_on_duplicate_support}

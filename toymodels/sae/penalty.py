"""Penalty-based variants' shared parts: a sparsity coefficient (each variant names its field) warmed up
linearly from 0 over the first `l1_warmup_frac` of training, and the exact-L0 controller (`target_l0`).

The controller is a PI controller on log λ, run per SAE after every step (SynthSAEBench steers its coefficient
to a target L0 with an integral controller; the proportional term damps the oscillation a pure integral
controller shows at a gain high enough to track the SAE's drift): with e = clip((L0_batch − target)/target, ±1),
L0_batch the batch's mean active latents per sample, log λ += r · gain · (e + P_OVER_I · (e − e_prev)), r the
step's lr / peak lr (the SAE responds more slowly as lr decays). It starts from the config's coefficient and is
armed once the warm-up is over and the batch L0 has first come down to the target (or at `l0_arm_by` of
training, if it has not): before that L0 is still falling from its dense start, and integrating that error
wound λ up to 3–4× its final value and made it swing for the rest of a short run, which costs feature recovery
(README "Exact L0": relu's MCC 0.676 → 0.762 on the SAELens bench, leaderboard F1 0.580 → 0.621). Δe is 0 on
its first step. Measured (tests/test_sae_l0.py, slow): held-out L0 within −1.3 %…−0.1 % of targets 3/6/12 for relu,
relu_april, gated and jumprelu (jumprelu with threshold_lr_scale 3: with 1, λ collapses while the thresholds
cannot follow, and L0 ends 20–40 % low). JumpReLU's quadratic loss steers its centre instead of λ, and
p_anneal runs at a higher gain (their `after_step` / `l0_gain`). With `start: target` the SAE skips the dense
start: each latent's firing bias is set from the first batch so that L0 begins at the target, the controller is
armed from the first step and there is no warm-up (faster and better on short runs, not at the leaderboard's
settings: README "Exact L0").

On CPU the variants train through the sparse step (`sparse_step.EncodeAt`/`DecodeAt`) when the batch's support
(the entries that can get a gradient) is at most `SPARSE_MAX_DENSITY` of [K, B, L]; the autograd path over dense
activations is the reference, and what runs off CPU or above that share (early training, L0 in the hundreds)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from toymodels.config import _is_num
from toymodels.errors import check
from toymodels.sae.base import PackedSAE, SAEConfig, warm
from toymodels.sae.sparse_step import EncodeAt, Support, flatnonzero

P_OVER_I = 20.0
"""Proportional gain of the L0 controller as a multiple of its integral gain `l0_gain` (damping)."""

SPARSE_MAX_DENSITY = 0.12
"""Take the sparse step when the support is at most this share of the batch's [K, B, L] entries: the measured
crossover of relu's step (128 → 512, batch 1024, one thread; README). Gated and JumpReLU, whose dense steps
cost more, set their own."""


def pi_step(l0_K, target_K, prev_err_K, scale_K, p_over_i) -> tuple[torch.Tensor, torch.Tensor]:
    """The L0 controllers' shared PI update: ([K] increment scale · (e + p_over_i · Δe), [K] e), with
    e = clip((L0 − target)/target, ±1) and Δe = e − prev_err (0 where prev_err is NaN: no kick on a first step)."""
    err_K = ((l0_K - target_K) / target_K).clamp(-1.0, 1.0)
    return scale_K * (err_K + p_over_i * torch.nan_to_num(err_K - prev_err_K)), err_K


@dataclass
class PenaltyConfig(SAEConfig):
    """An SAE whose sparsity comes from a penalty term with coefficient `sparsity_field`."""

    l1_warmup_frac: float = 0.05
    """Fraction of training over which the sparsity coefficient ramps linearly from 0 (in [0, 1))."""
    target_l0: float | None = None
    """If set (in (0, d_sae]), a controller steers the sparsity coefficient during training so that the SAE ends
    at this L0 (mean active latents per sample); the coefficient field is then only its starting value."""
    l0_gain: float = 0.05
    """Integral gain (> 0) of the L0 controller: change of log coefficient per step per unit relative L0 error
    (error clipped to ±1), scaled by the learning-rate schedule."""
    l0_arm_by: float = 0.25
    """Fraction of training (in [0, 1]) by which the L0 controller starts even if the batch L0 has not yet come
    down to `target_l0` (it starts at the first step after the warm-up where it has)."""
    start: str = "dense"
    """How training starts: dense (encoder bias 0, L0 near d_sae/2 at first, the coefficient warmed up over
    `l1_warmup_frac`: the published recipes) or target (needs target_l0: each latent's bias is set so that it
    fires on target_l0 / d_sae of the first batch, so L0 starts at the target, the controller runs from the
    first step and there is no warm-up; README "Exact L0" has what it changes)."""

    def __post_init__(self):
        super().__post_init__()
        check(_is_num(self.l1_warmup_frac) and 0 <= self.l1_warmup_frac < 1, "l1_warmup_frac", "in [0, 1)",
              self.l1_warmup_frac)
        f = self.sparsity_field
        check(_is_num(getattr(self, f)) and getattr(self, f) >= 0, f, "a number ≥ 0", getattr(self, f))
        check(self.target_l0 is None or (_is_num(self.target_l0) and 0 < self.target_l0 <= self.d_sae),
              "target_l0", f"null or a number in (0, d_sae={self.d_sae}]", self.target_l0)
        check(_is_num(self.l0_gain) and self.l0_gain > 0, "l0_gain", "a number > 0", self.l0_gain)
        check(_is_num(self.l0_arm_by) and 0 <= self.l0_arm_by <= 1, "l0_arm_by", "in [0, 1]", self.l0_arm_by)
        if self.target_l0 is not None:
            check(getattr(self, f) > 0, f, "> 0 with target_l0 (it is the controller's starting value)",
                  getattr(self, f))
        check(self.start in ("dense", "target"), "start", "dense or target", self.start)
        check(self.start == "dense" or self.target_l0 is not None, "start", "dense unless target_l0 is set "
              "(start: target begins at the target L0)", self.start)

    @property
    def warmup_frac(self) -> float:
        """The coefficient's warm-up actually used: `l1_warmup_frac`, or 0 with start: target."""
        return 0.0 if self.start == "target" else self.l1_warmup_frac

    @classmethod
    def l0_settings(cls, target: float) -> list[dict]:
        """Exact: one run with the controller on."""
        return [{"target_l0": float(target)}]


@dataclass
class L1Config(PenaltyConfig):
    """A penalty-based SAE with an L1-style coefficient."""

    sparsity_field = "l1_coeff"
    l1_coeff: float = 1.0
    """Sparsity penalty coefficient (≥ 0) on the (normalised) activations."""


class PenaltySAE(PackedSAE):
    """Mixin for penalty-based variants: `sparsity_coeff(frac)` is the [K] coefficient at this point of
    training, fixed or steered to each SAE's `target_l0` by `after_step`."""

    def __init__(self, cfgs):
        super().__init__(cfgs)
        field = self.config_class.sparsity_field
        self.register_buffer("target_K", torch.tensor([c.target_l0 or math.nan for c in cfgs]))
        self.register_buffer("log_coeff_K", torch.tensor([math.log(max(getattr(c, field), 1e-30))
                                                          for c in cfgs]))
        self.register_buffer("err_K", torch.full((len(cfgs),), math.nan))  # previous controlled step's error
        self.register_buffer("armed_K", torch.tensor([c.start == "target" for c in cfgs]))  # controller started
        self.controlled_K = torch.isfinite(self.target_K)

    def sparsity_coeff(self, frac: float) -> torch.Tensor:
        """[K] sparsity coefficient: fixed (`sparsity_field`) or controlled, warmed up over `l1_warmup_frac`."""
        coeff_K = self.per_sae(self.config_class.sparsity_field)
        if self.controlled_K.any():
            coeff_K = torch.where(self.controlled_K, self.log_coeff_K.exp(), coeff_K)
        return warm(coeff_K, frac, self.per_sae("warmup_frac"))

    @torch.no_grad()
    def after_step(self, l0_K: torch.Tensor, frac: float, lr_factor: float = 1.0) -> None:
        """PI control of log λ towards each SAE's target (SAEs without one are untouched); the gains follow the
        learning-rate schedule (`lr_factor` = lr / peak lr), since the SAE's response slows with it."""
        if self.controlled_K.any():
            self.log_coeff_K += self.control_step(l0_K, frac, lr_factor)

    @torch.no_grad()
    def control_step(self, l0_K: torch.Tensor, frac: float, lr_factor: float) -> torch.Tensor:
        """[K] PI increment lr_factor · gain · (e + P_OVER_I · Δe) (0 for uncontrolled SAEs, in the warm-up and
        until armed); records e."""
        past_warmup_K = self.controlled_K & (frac >= self.per_sae("warmup_frac"))
        self.armed_K |= past_warmup_K & ((l0_K <= self.target_K) | (frac >= self.per_sae("l0_arm_by")))
        on_K = past_warmup_K & self.armed_K
        step_K, err_K = pi_step(l0_K, self.target_K, self.err_K, lr_factor * self.per_sae("l0_gain"), P_OVER_I)
        self.err_K.copy_(torch.where(on_K, err_K, math.nan))
        return torch.where(on_K, step_K, 0.0)

    firing_bias = "b_enc_KL"
    """The [K, L] parameter that moves each latent's firing point (what start: target sets)."""

    def firing_cutoff(self, i: int) -> torch.Tensor | float:
        """SAE i's [L] (or scalar) cutoff: a latent fires where its pre-activation (bias included) exceeds it."""
        return 0.0

    @torch.no_grad()
    def init_from_data(self, x_BD):
        """As PackedSAE's, then for each SAE with start: target, its firing bias from the first batch: each
        latent fires on the round(target_l0 / d_sae · B) samples where its biasless pre-activation is largest
        (the cut half-way between the last firing value and the largest silent one, clear of float rounding)."""
        super().init_from_data(x_BD)
        for i, c in enumerate(self.cfgs):
            if c.start == "target":
                self._fire_at_target(i, x_BD)

    @torch.no_grad()
    def reset_latents(self, i, idx, x_BD=None):
        """As PackedSAE's; with start: target (and the resampling batch) the firing bias of the reset latents is
        set from that batch, as at init."""
        super().reset_latents(i, idx, x_BD)
        if self.cfgs[i].start == "target" and x_BD is not None:
            self._fire_at_target(i, x_BD, idx)

    def _fire_at_target(self, i: int, x_BD, idx=None) -> None:
        """Set SAE i's firing bias (latents `idx`, default all) so that each fires on round(target / d_sae · B)
        samples of x_BD ([B, D], or [K, B, D] one stream per SAE)."""
        x_i = x_BD if x_BD.ndim == 2 else x_BD[i]  # SAE i's input only (sae_in would form all K)
        s_BD = x_i - self.b_dec_KD[i] if self.apply_b_dec_to_input else x_i
        W_DN = self.W_enc_KDL[i] if idx is None else self.W_enc_KDL[i][:, idx]
        u_BN = s_BD @ W_DN  # biasless pre-activations
        B = u_BN.shape[0]
        n_fire = min(max(round(self.cfgs[i].target_l0 / self.L * B), 0), B - 1)  # at least one sample silent
        top_FN = u_BN.topk(n_fire + 1, dim=0).values  # (a top-k: ~4× faster than two kthvalue calls)
        cut_N = top_FN[n_fire] if n_fire == 0 else (top_FN[n_fire] + top_FN[n_fire - 1]) / 2
        cutoff = self.firing_cutoff(i)
        if idx is None:
            getattr(self, self.firing_bias)[i] = cutoff - cut_N
        else:
            getattr(self, self.firing_bias)[i, idx] = (cutoff if isinstance(cutoff, float) else cutoff[idx]) - cut_N

    fast_path = True
    """Use the sparse step on CPU when the support is sparse enough (`support`)."""
    sparse_max_density = SPARSE_MAX_DENSITY

    def fast_step_ok(self, x_BD) -> bool:
        """The sparse step can run (CPU: its index work is numpy); a subclass may add conditions."""
        return self.fast_path and x_BD.device.type == "cpu"

    @torch.no_grad()
    def support(self, x_BD, mask_fn) -> Support | None:
        """The `Support` of the [K, B, L] numpy bool `mask_fn()` (the entries that can get a gradient; numpy's
        comparisons are ~5× torch's on one thread) if the sparse step applies and pays, else None (the caller
        takes its dense autograd path)."""
        if not self.fast_step_ok(x_BD):
            return None
        mask_KBL = mask_fn()
        pos_n = flatnonzero(mask_KBL)
        return Support(pos_n, *mask_KBL.shape) if len(pos_n) <= self.sparse_max_density * mask_KBL.size else None

    def pre_at(self, pre_KBL, x_BD, sup: Support, bias_KL=None) -> torch.Tensor:
        """[n] pre-activations at the support's entries with gradients to W_enc, the bias (b_enc unless given)
        and b_dec (when the input is x − b_dec), computed on those entries only."""
        bias_KL = self.b_enc_KL if bias_KL is None else bias_KL
        return EncodeAt.apply(pre_KBL, x_BD, self.W_enc_KDL, bias_KL, self.b_dec_KD, sup, self.apply_b_dec_to_input)

    def summary(self, i: int) -> dict:
        return {"sparsity_coeff": float(self.log_coeff_K[i].exp())} if self.controlled_K[i] else {}

"""JumpReLU SAE (Rajamanoharan et al. 2024): f = z · H(z − θ), θ = exp(log θ) per latent, with a sparsity loss.

The step function's gradient w.r.t. θ uses a straight-through estimator with a rectangle kernel of width ε
(`bandwidth`): ∂H(z − θ)/∂θ ≈ −(1/ε)·1[|z − θ| < ε/2]; z gets no gradient through H (only through z·H) unless
`ste_to_input` (Anthropic), which gives z the opposite of θ's.

Sparsity losses (`sparsity_loss`, per sample, times λ, batch mean; as SAELens's jumprelu_sparsity_loss_mode):
step (DeepMind) ‖f‖₀ = Σ H(z − θ); tanh (Anthropic) Σ tanh(c · f · ‖W_dec,l‖); quadratic (GemmaScope 2)
(2/T)·(‖f‖₀ − T)² around a target L0 T. Optional pre-activation loss (Anthropic, on dead latents only as
SAELens): μ · Σ_l ReLU(θ_l − z_l) · ‖W_dec,l‖ · dead_l, which pulls dead latents' pre-activations up to θ.

On CPU the sparse step (penalty.py) runs on the active entries and those within the kernel band (where θ, and
with `ste_to_input` z, gets a straight-through gradient); the pre-activation loss, which reaches every entry of
a dead latent, takes the dense path."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from toymodels.config import _is_num
from toymodels.errors import check
from toymodels.sae.base import mse_K
from toymodels.sae.penalty import PenaltyConfig, PenaltySAE
from toymodels.sae.registry import register_variant
from toymodels.sae.sparse_step import DecodeAt


def _rect(u):
    return ((u > -0.5) & (u < 0.5)).to(u.dtype)


BAND_MARGIN = 1e-4
"""The support's lower edge is θ − (1 + BAND_MARGIN)·ε/2: a little below the band's, so that it holds every
entry `_rect` (its float32 arithmetic (z − θ)/ε) puts in the band, whatever the rounding."""


def _support_mask(z, theta, eps):
    """Numpy [K, B, L] mask of z > θ or within the kernel band: one comparison, z > θ − (1 + margin)·ε/2
    (~6× the band's own (z − θ)/ε arithmetic over [K, B, L]), a superset of both by at most the margin."""
    return z > theta - eps * (0.5 * (1 + BAND_MARGIN))


class _JumpReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z, theta, eps, ste_to_input: bool):
        ctx.save_for_backward(z, theta, eps)
        ctx.ste_to_input = ste_to_input
        return z * (z > theta)

    @staticmethod
    def backward(ctx, g):
        z, theta, eps = ctx.saved_tensors
        ste = (theta / eps) * _rect((z - theta) / eps) * g
        g_z = g * (z > theta) + (ste if ctx.ste_to_input else 0)
        return g_z, (-ste).sum(-2, keepdim=True), None, None


class _Step(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z, theta, eps, ste_to_input: bool):
        ctx.save_for_backward(z, theta, eps)
        ctx.ste_to_input = ste_to_input
        return (z > theta).to(z.dtype)

    @staticmethod
    def backward(ctx, g):
        z, theta, eps = ctx.saved_tensors
        ste = (1.0 / eps) * _rect((z - theta) / eps) * g
        return (ste if ctx.ste_to_input else torch.zeros_like(z)), (-ste).sum(-2, keepdim=True), None, None


@dataclass
class JumpReLUConfig(PenaltyConfig):
    """JumpReLU SAE: per-latent thresholds trained through a straight-through estimator, L0 penalty."""

    sparsity_field = "l0_coeff"
    pack_fields = ("threshold_lr_scale", "sparsity_loss", "ste_to_input")
    l0_coeff: float = 0.5
    """Coefficient λ (≥ 0) of the sparsity loss (step: expected active latents per sample)."""
    sparsity_loss: str = "step"
    """step (DeepMind's L0), tanh (Anthropic's Σ tanh(c·f·‖W_dec‖)) or quadratic (GemmaScope 2's
    (2/T)(L0 − T)² around T = `quadratic_l0`); SAELens's jumprelu_sparsity_loss_mode."""
    tanh_scale: float = 4.0
    """c of the tanh loss (> 0; SAELens's jumprelu_tanh_scale)."""
    quadratic_l0: float | None = None
    """T of the quadratic loss, in (0, d_sae]; only used with sparsity_loss=quadratic, where null means
    `target_l0` (then required)."""
    pre_act_coeff: float = 0.0
    """μ (≥ 0) of Anthropic's pre-activation loss on dead latents; 0 = off (SAELens's pre_act_loss_coefficient,
    Anthropic uses 3e-6 on unnormalised LLM activations)."""
    ste_to_input: bool = False
    """Also pass the straight-through gradient to the pre-activations (Anthropic; DeepMind: only to θ)."""
    bandwidth: float = 0.3
    """Straight-through-estimator rectangle-kernel width ε (> 0), in normalised data units."""
    threshold_init: float = 0.1
    """Initial threshold θ (> 0), in normalised data units (the parameter is log θ)."""
    threshold_lr_scale: float = 1.0
    """Learning-rate multiplier (> 0) of log θ. Adam moves log θ by about lr per step, so short runs need a
    larger one for the thresholds to leave `threshold_init` (SAEs with different values train in different
    packs)."""

    def __post_init__(self):
        super().__post_init__()
        for f in ("bandwidth", "threshold_init", "threshold_lr_scale", "tanh_scale"):
            check(_is_num(getattr(self, f)) and getattr(self, f) > 0, f, "a number > 0", getattr(self, f))
        check(self.sparsity_loss in ("step", "tanh", "quadratic"), "sparsity_loss", "step, tanh or quadratic",
              self.sparsity_loss)
        quad = self.sparsity_loss == "quadratic"
        if quad and self.quadratic_l0 is None and self.target_l0 is not None:
            self.quadratic_l0 = float(self.target_l0)
        check((self.quadratic_l0 is None and not quad) or (quad and _is_num(self.quadratic_l0)
                                                             and 0 < self.quadratic_l0 <= self.d_sae),
              "quadratic_l0", f"a number in (0, d_sae={self.d_sae}] (or null with target_l0) with "
              "sparsity_loss=quadratic, else null",
              self.quadratic_l0)
        check(_is_num(self.pre_act_coeff) and self.pre_act_coeff >= 0, "pre_act_coeff", "a number ≥ 0",
              self.pre_act_coeff)
        check(isinstance(self.ste_to_input, bool), "ste_to_input", "true or false", self.ste_to_input)


@register_variant("jumprelu", JumpReLUConfig)
class JumpReLUSAE(PenaltySAE):
    """loss = ‖x − x̂‖² + λ · sparsity loss (λ warmed up) [+ pre-activation loss], unit-norm decoder rows."""

    sparse_max_density = 0.25  # measured crossover (README); the support includes the kernel band

    def __init__(self, cfgs):
        super().__init__(cfgs)
        self.log_threshold_KL = torch.nn.Parameter(
            torch.tensor([[self.latent_init("log_threshold_KL", i)] * self.L for i in range(self.K)]))

        # quadratic loss: its centre (log, per SAE); with target_l0 the controller steers it, not λ
        self.steer_centre = cfgs[0].sparsity_loss == "quadratic"
        self.register_buffer("log_centre_K", torch.tensor([math.log(c.quadratic_l0 or 1.0) for c in cfgs]))

    def _quadratic(self, l0_KB):
        """[K, B] GemmaScope 2's (2/T)·(L0 − c)², c the (controlled) centre, T = quadratic_l0."""
        T_K1 = self.per_sae("quadratic_l0")[:, None]
        return 2 / T_K1 * (l0_KB - self.log_centre_K.exp()[:, None]).pow(2)

    @torch.no_grad()
    def after_step(self, l0_K, frac, lr_factor=1.0):
        """Quadratic loss: the controller moves its centre (down when L0 is high), λ stays at l0_coeff. Steering
        λ cannot reach the target there: the loss's pull vanishes at L0 = T, so λ must grow without bound and
        the error falls only like 1/steps (tests/test_sae_l0.py: +2.5 % after 1000 steps at T = 12)."""
        if not self.steer_centre:
            return super().after_step(l0_K, frac, lr_factor)
        if self.controlled_K.any():
            self.log_centre_K -= self.control_step(l0_K, frac, lr_factor)

    def summary(self, i):
        if self.steer_centre and self.controlled_K[i]:
            return {"quadratic_centre": float(self.log_centre_K[i].exp())}
        return super().summary(i)

    def firing_cutoff(self, i):
        return self.log_threshold_KL[i].exp()

    def latent_init(self, name, i):
        return math.log(self.cfgs[i].threshold_init) if name == "log_threshold_KL" else 0.0

    def param_groups(self):
        rest = [p for n, p in self.named_parameters() if n != "log_threshold_KL"]
        return [{"params": rest, "lr_scale": 1.0},
                {"params": [self.log_threshold_KL], "lr_scale": float(self.cfgs[0].threshold_lr_scale)}]

    def _theta(self):
        return self.log_threshold_KL.exp()[:, None, :]  # [K, 1, L]

    def encode(self, x_BD):
        z = self.pre_acts(x_BD)
        return z * (z > self._theta())

    def _pre_act_on(self) -> bool:
        dead_KL = getattr(self, "dead_KL", None)
        return dead_KL is not None and bool(dead_KL.any()) and bool(self.per_sae("pre_act_coeff").any())

    def fast_step_ok(self, x_BD):
        """Not with the pre-activation loss on (it reaches every entry of a dead latent)."""
        return super().fast_step_ok(x_BD) and not self._pre_act_on()

    def _sparse_loss_terms(self, x_BD, z, sup, frac):
        """loss_terms on the support (active entries and the straight-through kernel band)."""
        c0, t = self.cfgs[0], sup.t
        z_n = self.pre_at(z, x_BD, sup)[None]  # [1, n]: _JumpReLU's θ gradient sums over dim −2
        theta_n = self.log_threshold_KL.exp().view(-1)[t["col"]][None]
        eps_n = self.per_sae("bandwidth")[t["sae"]][None]
        acts_n = _JumpReLU.apply(z_n, theta_n, eps_n, c0.ste_to_input)[0]
        if c0.sparsity_loss == "tanh":
            norm_n = self.W_dec_KLD.norm(dim=-1).view(-1)[t["col"]]
            per_KB = sup.per_sample(torch.tanh(self.per_sae("tanh_scale")[t["sae"]] * acts_n * norm_n))
        else:
            per_KB = sup.per_sample(_Step.apply(z_n, theta_n, eps_n, c0.ste_to_input)[0])
            if c0.sparsity_loss == "quadratic":
                per_KB = self._quadratic(per_KB)
        recon = DecodeAt.apply(acts_n, self.W_dec_KLD, self.b_dec_KD, sup)
        losses = {"mse": mse_K(x_BD, recon), "l0": self.sparsity_coeff(frac) * per_KB.mean(-1)}
        return losses, sup.fired((acts_n > 0).detach().numpy())

    def loss_terms(self, x_BD, frac):
        z = self.pre_acts(x_BD)
        c0 = self.cfgs[0]
        theta, eps = self._theta(), self.per_sae("bandwidth")[:, None, None]
        # support: the active entries and the kernel band (where θ gets a gradient)
        sup = self.support(x_BD, lambda: _support_mask(z.detach().numpy(), theta.detach().numpy(), eps.numpy()))
        if sup is not None:
            return self._sparse_loss_terms(x_BD, z, sup, frac)
        acts = _JumpReLU.apply(z, theta, eps, c0.ste_to_input)
        norm_K1L = self.W_dec_KLD.norm(dim=-1)[:, None, :]
        if c0.sparsity_loss == "tanh":
            per_KB = torch.tanh(self.per_sae("tanh_scale")[:, None, None] * acts * norm_K1L).sum(-1)
        else:
            per_KB = _Step.apply(z, theta, eps, c0.ste_to_input).sum(-1)
            if c0.sparsity_loss == "quadratic":
                per_KB = self._quadratic(per_KB)
        losses = {"mse": mse_K(x_BD, self.decode(acts)), "l0": self.sparsity_coeff(frac) * per_KB.mean(-1)}
        if self._pre_act_on():
            gap_KBL = (theta - z).relu() * (self.dead_KL[:, None, :] * norm_K1L)
            losses["pre_act"] = self.per_sae("pre_act_coeff") * gap_KBL.sum(-1).mean(-1)
        return losses, (acts > 0).sum(1)

    def inference(self, i):
        t = self._base_tensors(i)
        t["threshold"] = self.log_threshold_KL[i].detach().exp().clone()
        return "jumprelu", t, {}

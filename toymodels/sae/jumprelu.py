"""JumpReLU SAE (Rajamanoharan et al. 2024): f = z · H(z − θ), θ = exp(log θ) per latent, with an L0 penalty.

The step function's gradient w.r.t. θ uses a straight-through estimator with a rectangle kernel of width ε
(`bandwidth`): ∂H(z − θ)/∂θ ≈ −(1/ε)·1[|z − θ| < ε/2]; z gets no gradient through H (only through z·H)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from toymodels.config import _is_num
from toymodels.errors import check
from toymodels.sae.base import mse_K
from toymodels.sae.penalty import PenaltyConfig, PenaltySAE
from toymodels.sae.registry import register_variant


def _rect(u):
    return ((u > -0.5) & (u < 0.5)).to(u.dtype)


class _JumpReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z, theta, eps):
        ctx.save_for_backward(z, theta, eps)
        return z * (z > theta)

    @staticmethod
    def backward(ctx, g):
        z, theta, eps = ctx.saved_tensors
        g_z = g * (z > theta)
        g_theta = (-(theta / eps) * _rect((z - theta) / eps) * g).sum(-2, keepdim=True)
        return g_z, g_theta, None


class _Step(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z, theta, eps):
        ctx.save_for_backward(z, theta, eps)
        return (z > theta).to(z.dtype)

    @staticmethod
    def backward(ctx, g):
        z, theta, eps = ctx.saved_tensors
        g_theta = (-(1.0 / eps) * _rect((z - theta) / eps) * g).sum(-2, keepdim=True)
        return torch.zeros_like(z), g_theta, None


@dataclass
class JumpReLUConfig(PenaltyConfig):
    """JumpReLU SAE: per-latent thresholds trained through a straight-through estimator, L0 penalty."""

    sparsity_field = "l0_coeff"
    pack_fields = ("threshold_lr_scale",)
    l0_coeff: float = 0.5
    """Coefficient (≥ 0) of the L0 penalty (expected active latents per sample)."""
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
        for f in ("bandwidth", "threshold_init", "threshold_lr_scale"):
            check(_is_num(getattr(self, f)) and getattr(self, f) > 0, f, "a number > 0", getattr(self, f))


@register_variant("jumprelu", JumpReLUConfig)
class JumpReLUSAE(PenaltySAE):
    """loss = ‖x − x̂‖² + λ · E[‖f‖₀] (λ warmed up), unit-norm decoder rows."""

    def __init__(self, cfgs):
        super().__init__(cfgs)
        self.log_threshold_KL = torch.nn.Parameter(
            torch.tensor([[self.latent_init("log_threshold_KL", i)] * self.L for i in range(self.K)]))

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

    def loss_terms(self, x_BD, frac):
        z = self.pre_acts(x_BD)
        theta, eps = self._theta(), self.per_sae("bandwidth")[:, None, None]
        acts = _JumpReLU.apply(z, theta, eps)
        l0 = _Step.apply(z, theta, eps).sum(-1).mean(-1)
        lam = self.sparsity_coeff(frac)
        losses = {"mse": mse_K(x_BD, self.decode(acts)), "l0": lam * l0}
        return losses, (acts > 0).sum(1)

    def inference(self, i):
        t = self._base_tensors(i)
        t["threshold"] = self.log_threshold_KL[i].detach().exp().clone()
        return "jumprelu", t, {}

"""JumpReLU SAE (Rajamanoharan et al. 2024): f = z · H(z − θ), θ = exp(log θ) per latent, with an L0 penalty.

The step function's gradient w.r.t. θ uses a straight-through estimator with a rectangle kernel of width ε
(`bandwidth`): ∂H(z − θ)/∂θ ≈ −(1/ε)·1[|z − θ| < ε/2]; z gets no gradient through H (only through z·H)."""

from __future__ import annotations

import math

import torch

from toymodels.sae.base import PackedSAE, mse_K, warm


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


class JumpReLUSAE(PackedSAE):
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
        lam = warm(self.per_sae("l0_coeff"), frac, self.per_sae("l1_warmup_frac"))
        losses = {"mse": mse_K(x_BD, self.decode(acts)), "l0": lam * l0}
        return losses, (acts > 0).sum(1)

    def inference(self, i):
        t = self._base_tensors(i)
        t["threshold"] = self.log_threshold_KL[i].detach().exp().clone()
        return "jumprelu", t, {}

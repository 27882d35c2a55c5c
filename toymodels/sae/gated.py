"""Gated SAE (Rajamanoharan et al. 2024): a gate path decides which latents fire, a magnitude path (sharing
W_enc up to a per-latent scale exp(r_mag)) sets how much. Loss = ‖x − x̂‖² + λ‖ReLU(π_gate)‖₁ + ‖x − x̂_frozen‖²
where x̂_frozen decodes ReLU(π_gate) through a frozen (detached) copy of the decoder."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from toymodels.sae.base import mse_K
from toymodels.sae.penalty import L1Config, PenaltySAE
from toymodels.sae.registry import register_variant


@dataclass
class GatedConfig(L1Config):
    """Gated SAE (no fields beyond `L1Config`; the L1 penalty is on ReLU(π_gate))."""


@register_variant("gated", GatedConfig)
class GatedSAE(PenaltySAE):
    def __init__(self, cfgs):
        super().__init__(cfgs)
        del self.b_enc_KL  # gated has b_gate / b_mag instead
        self.b_gate_KL = torch.nn.Parameter(torch.zeros(self.K, self.L))
        self.b_mag_KL = torch.nn.Parameter(torch.zeros(self.K, self.L))
        self.r_mag_KL = torch.nn.Parameter(torch.zeros(self.K, self.L))

    def _paths(self, x_BD):
        s = self.sae_in(x_BD)
        pi_gate = torch.baddbmm(self.b_gate_KL[:, None, :], s, self.W_enc_KDL)
        W_mag_KDL = self.W_enc_KDL * self.r_mag_KL.exp()[:, None, :]
        mag = torch.relu(torch.baddbmm(self.b_mag_KL[:, None, :], s, W_mag_KDL))
        return pi_gate, mag

    def encode(self, x_BD):
        pi_gate, mag = self._paths(x_BD)
        return (pi_gate > 0) * mag

    def loss_terms(self, x_BD, frac):
        pi_gate, mag = self._paths(x_BD)
        acts = (pi_gate > 0) * mag
        gate = torch.relu(pi_gate)
        lam = self.sparsity_coeff(frac)
        frozen = torch.baddbmm(self.b_dec_KD.detach()[:, None, :], gate, self.W_dec_KLD.detach())
        losses = {"mse": mse_K(x_BD, self.decode(acts)), "l1": lam * gate.sum(-1).mean(-1),
                  "aux": mse_K(x_BD, frozen)}
        return losses, (acts > 0).sum(1)

    def inference(self, i):
        t = {"W_enc": self.W_enc_KDL[i], "W_dec": self.W_dec_KLD[i], "b_dec": self.b_dec_KD[i],
             "b_gate": self.b_gate_KL[i], "b_mag": self.b_mag_KL[i], "r_mag": self.r_mag_KL[i]}
        return "gated", {n: v.detach().clone() for n, v in t.items()}, {}

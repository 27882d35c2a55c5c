"""Gated SAE (Rajamanoharan et al. 2024): a gate path decides which latents fire, a magnitude path (sharing
W_enc up to a per-latent scale exp(r_mag)) sets how much. Loss = ‖x − x̂‖² + λ‖ReLU(π_gate)‖₁ + ‖x − x̂_frozen‖²
where x̂_frozen decodes ReLU(π_gate) through a frozen (detached) copy of the decoder.

Every gradient lives where the gate is open (π_gate > 0): on CPU both paths then run on those entries only
(penalty.py's sparse step; the magnitude path from the gate's pre-activations, (π_gate − b_gate)·exp(r_mag) + b_mag)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from toymodels.sae.base import mse_K
from toymodels.sae.penalty import L1Config, PenaltySAE
from toymodels.sae.registry import register_variant
from toymodels.sae.sparse_step import DecodeAt


@dataclass
class GatedConfig(L1Config):
    """Gated SAE (no fields beyond `L1Config`; the L1 penalty is on ReLU(π_gate))."""


@register_variant("gated", GatedConfig)
class GatedSAE(PenaltySAE):
    sparse_max_density = 0.15  # measured crossover (README)
    firing_bias = "b_gate_KL"  # the gate decides what fires

    def __init__(self, cfgs):
        super().__init__(cfgs)
        del self.b_enc_KL  # gated has b_gate / b_mag instead
        self.b_gate_KL = torch.nn.Parameter(torch.zeros(self.K, self.L))
        self.b_mag_KL = torch.nn.Parameter(torch.zeros(self.K, self.L))
        self.r_mag_KL = torch.nn.Parameter(torch.zeros(self.K, self.L))

    def _gate_pre(self, s_KBD):
        return torch.baddbmm(self.b_gate_KL[:, None, :], s_KBD, self.W_enc_KDL)

    def _mag(self, s_KBD):
        W_mag_KDL = self.W_enc_KDL * self.r_mag_KL.exp()[:, None, :]
        return torch.relu(torch.baddbmm(self.b_mag_KL[:, None, :], s_KBD, W_mag_KDL))

    def _paths(self, x_BD):
        s = self.sae_in(x_BD)
        return self._gate_pre(s), self._mag(s)

    def encode(self, x_BD):
        pi_gate, mag = self._paths(x_BD)
        return (pi_gate > 0) * mag

    def loss_terms(self, x_BD, frac):
        s = self.sae_in(x_BD)
        pi_gate = self._gate_pre(s)
        lam = self.sparsity_coeff(frac)
        sup = self.support(x_BD, lambda: pi_gate.detach().numpy() > 0)  # every gradient lives where the gate is open
        if sup is not None:
            col = sup.t["col"]
            gate_n = self.pre_at(pi_gate, x_BD, sup, self.b_gate_KL)  # > 0 on the support
            u_n = gate_n - self.b_gate_KL.view(-1)[col]  # (x − b_dec)·W_enc at the entries
            acts_n = torch.relu(self.r_mag_KL.exp().view(-1)[col] * u_n + self.b_mag_KL.view(-1)[col])
            recon = DecodeAt.apply(acts_n, self.W_dec_KLD, self.b_dec_KD, sup)
            frozen = DecodeAt.apply(gate_n, self.W_dec_KLD.detach(), self.b_dec_KD.detach(), sup)
            losses = {"mse": mse_K(x_BD, recon), "l1": lam * sup.per_sample(gate_n).mean(-1),
                      "aux": mse_K(x_BD, frozen)}
            return losses, sup.fired((acts_n > 0).detach().numpy())
        acts = (pi_gate > 0) * self._mag(s)
        gate = torch.relu(pi_gate)
        frozen = torch.baddbmm(self.b_dec_KD.detach()[:, None, :], gate, self.W_dec_KLD.detach())
        losses = {"mse": mse_K(x_BD, self.decode(acts)), "l1": lam * gate.sum(-1).mean(-1),
                  "aux": mse_K(x_BD, frozen)}
        return losses, (acts > 0).sum(1)

    def inference(self, i):
        t = {"W_enc": self.W_enc_KDL[i], "W_dec": self.W_dec_KLD[i], "b_dec": self.b_dec_KD[i],
             "b_gate": self.b_gate_KL[i], "b_mag": self.b_mag_KL[i], "r_mag": self.r_mag_KL[i]}
        return "gated", {n: v.detach().clone() for n, v in t.items()}, {}

"""Gated SAE (Rajamanoharan et al. 2024): a gate path decides which latents fire, a magnitude path (sharing
W_enc up to a per-latent scale exp(r_mag)) sets how much. Loss = ‖x − x̂‖² + λ‖ReLU(π_gate)‖₁ + ‖x − x̂_frozen‖²
where x̂_frozen decodes ReLU(π_gate) through a frozen (detached) copy of the decoder (the paper; unit-norm decoder
rows). `aux_decoder: live` is SAELens's `GatedTrainingSAE` instead: the auxiliary reconstruction decodes through the
trained decoder (W_dec and b_dec get its gradient), decoder rows are free and the L1 is weighted by their norms,
λ Σ_i ReLU(π_gate,i)·‖W_dec,i‖. The three go together: the loss is then invariant under scaling a latent's encoder
side (W_enc column, b_gate, b_mag) by c and its decoder row by 1/c; with a frozen auxiliary decoder and free rows
nothing but the magnitude path holds a row's norm up against the weighted L1 (measured on the SAELens bench: MCC
0.785 in our trainer; L0 ~115 instead of 12 in SAELens's at its coefficient). On that bench (gated, L0 13, 400k
samples, `grad_clip=1,start=target`, 3 seeds) live recovers features better: MCC 0.957 against 0.916 (frozen),
SAELens's 0.960; a live auxiliary decoder with unit-norm rows gets 0.933. At the trainer's defaults (dense start, no
clipping) both forms stay near MCC 0.5 on that bench.

Every gradient lives where the gate is open (π_gate > 0): on CPU both paths then run on those entries only
(penalty.py's sparse step; the magnitude path from the gate's pre-activations, (π_gate − b_gate)·exp(r_mag) + b_mag)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from toymodels.errors import check
from toymodels.sae.base import mse_K
from toymodels.sae.penalty import L1Config, PenaltySAE
from toymodels.sae.registry import register_variant
from toymodels.sae.sparse_step import DecodeAt


@dataclass
class GatedConfig(L1Config):
    """Gated SAE (the L1 penalty is on ReLU(π_gate))."""

    pack_fields = ("aux_decoder",)
    aux_decoder: str = "frozen"
    """frozen (the paper: the auxiliary reconstruction uses a detached copy of W_dec and b_dec; unit-norm decoder
    rows) or live (SAELens: it trains W_dec and b_dec too, decoder rows are free and the L1 is weighted by their
    norms; module docstring)."""

    def __post_init__(self):
        super().__post_init__()
        check(self.aux_decoder in ("frozen", "live"), "aux_decoder", "frozen or live", self.aux_decoder)


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
        self.live_aux = cfgs[0].aux_decoder == "live"  # a pack field: the same for every SAE of the pack
        self.unit_norm_decoder = not self.live_aux

    def _aux_decoder(self):
        """(W_dec, b_dec) of the auxiliary reconstruction: the trained ones (live) or detached copies."""
        return (self.W_dec_KLD, self.b_dec_KD) if self.live_aux else (self.W_dec_KLD.detach(), self.b_dec_KD.detach())

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
            frozen = DecodeAt.apply(gate_n, *self._aux_decoder(), sup)
            l1_n = gate_n * self.W_dec_KLD.norm(dim=-1).view(-1)[col] if self.live_aux else gate_n
            losses = {"mse": mse_K(x_BD, recon), "l1": lam * sup.per_sample(l1_n).mean(-1),
                      "aux": mse_K(x_BD, frozen)}
            return losses, sup.fired((acts_n > 0).detach().numpy())
        acts = (pi_gate > 0) * self._mag(s)
        gate = torch.relu(pi_gate)
        W_aux, b_aux = self._aux_decoder()
        frozen = torch.baddbmm(b_aux[:, None, :], gate, W_aux)
        l1 = torch.einsum("kbl,kl->kb", gate, self.W_dec_KLD.norm(dim=-1)) if self.live_aux else gate.sum(-1)
        losses = {"mse": mse_K(x_BD, self.decode(acts)), "l1": lam * l1.mean(-1),
                  "aux": mse_K(x_BD, frozen)}
        return losses, (acts > 0).sum(1)

    @torch.no_grad()
    def inference(self, i):
        t = {"W_enc": self.W_enc_KDL[i], "W_dec": self.W_dec_KLD[i], "b_dec": self.b_dec_KD[i],
             "b_gate": self.b_gate_KL[i], "b_mag": self.b_mag_KL[i], "r_mag": self.r_mag_KL[i]}
        t = {n: v.detach().clone() for n, v in t.items()}
        if self.live_aux:  # fold the decoder norms into the encoder side: same function, unit-norm decoder rows
            n_L = t["W_dec"].norm(dim=-1).clamp_min(1e-12)
            t["W_enc"] *= n_L
            t["b_gate"] *= n_L
            t["b_mag"] *= n_L
            t["W_dec"] /= n_L[:, None]
        return "gated", t, {}

"""L1 / ReLU SAEs: Bricken et al. 2023 (unit-norm decoder) and Anthropic's April 2024 update (free decoder,
L1 penalty weighted by decoder row norms, no decoder-bias subtraction at the input)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from toymodels.sae.base import mse_K
from toymodels.sae.penalty import L1Config, PenaltySAE
from toymodels.sae.registry import register_variant
from toymodels.sae.sparse_step import DecodeAt


@dataclass
class ReluConfig(L1Config):
    """ReLU SAE with an L1 penalty and unit-norm decoder rows (no fields beyond `L1Config`)."""


@dataclass
class ReluAprilConfig(L1Config):
    """Anthropic's April 2024 ReLU SAE (no fields beyond `L1Config`; init_scale ≈ 0.1 is conventional)."""


@register_variant("relu", ReluConfig)
class ReluSAE(PenaltySAE):
    """f = ReLU((x − b_dec) W_enc + b_enc); loss = ‖x − x̂‖² + λ‖f‖₁ with unit-norm decoder rows."""

    def encode(self, x_BD):
        return torch.relu(self.pre_acts(x_BD))

    def _penalty(self, acts_KBL):
        return acts_KBL.sum(-1).mean(-1)

    def _penalty_at(self, f_n, sup):
        """`_penalty` from the support's entry values (sparse step)."""
        return sup.per_sample(f_n).mean(-1)

    def sparse_acts(self, x_BD):
        """(pre [K, B, L] with its graph, and on the sparse step its `Support` (the active entries) and [n] values
        f_n; else None, None)."""
        pre = self.pre_acts(x_BD)
        sup = self.support(x_BD, lambda: pre.detach().numpy() > 0)
        return pre, sup, (None if sup is None else self.pre_at(pre, x_BD, sup))

    def loss_terms(self, x_BD, frac):
        pre, sup, f_n = self.sparse_acts(x_BD)
        lam_K = self.sparsity_coeff(frac)
        if sup is not None:
            recon = DecodeAt.apply(f_n, self.W_dec_KLD, self.b_dec_KD, sup)
            return {"mse": mse_K(x_BD, recon), "l1": lam_K * self._penalty_at(f_n, sup)}, sup.fired()
        acts = torch.relu(pre)
        losses = {"mse": mse_K(x_BD, self.decode(acts)), "l1": lam_K * self._penalty(acts)}
        return losses, (acts > 0).sum(1)


@register_variant("relu_april", ReluAprilConfig)
class ReluAprilSAE(ReluSAE):
    """April update: f = ReLU(x W_enc + b_enc), penalty λ Σ_i f_i ‖W_dec,i‖, decoder unconstrained."""

    unit_norm_decoder = False
    apply_b_dec_to_input = False

    def _penalty(self, acts_KBL):
        return torch.einsum("kbl,kl->kb", acts_KBL, self.W_dec_KLD.norm(dim=-1)).mean(-1)

    def _penalty_at(self, f_n, sup):
        return sup.per_sample(f_n * self.W_dec_KLD.norm(dim=-1).view(-1)[sup.t["col"]]).mean(-1)

    @torch.no_grad()
    def inference(self, i):
        # fold the decoder norms into the encoder: same function, unit-norm decoder rows
        t = self._base_tensors(i)
        n_L = t["W_dec"].norm(dim=-1).clamp_min(1e-12)
        t["W_enc"] *= n_L
        t["b_enc"] *= n_L
        t["W_dec"] /= n_L[:, None]
        return "standard", t, {}

"""Matryoshka BatchTopK SAE (Bussmann et al. 2025): one BatchTopK selection per batch; the loss sums the
reconstruction errors of nested prefixes (latents [0, m) for each prefix size m, the last being the full SAE),
so early latents must reconstruct on their own. Each prefix reconstruction uses the same kept (BatchTopK)
entries restricted to latents < m, plus the decoder bias once. Exported, like BatchTopK, as JumpReLU.

`use_matryoshka_aux_loss` (SAELens's option of that name): the aux-k loss is taken per prefix block instead of
once for the whole SAE, the dead latents of block [m_prev, m) reconstructing the residual of prefix m (the
error their own level leaves), summed over blocks; as everywhere here, each block's term is normalised by its
residual's squared norm (Gao et al.), where SAELens scales by min(dead / k_aux, 1)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from toymodels.config import _is_int, _is_num
from toymodels.errors import check
from toymodels.sae.base import _is_list, mse_K
from toymodels.sae.batchtopk import BatchTopKConfig, BatchTopKSAE
from toymodels.sae.registry import register_variant
from toymodels.sae.topk import aux_k_loss


@dataclass
class MatryoshkaConfig(BatchTopKConfig):
    """Matryoshka BatchTopK SAE: BatchTopK's fields and the nested prefixes with their loss weights."""

    pack_fields = ("k_aux", "prefix_sizes", "use_matryoshka_aux_loss")
    prefixes: list | None = None
    """Increasing prefix sizes ending at d_sae, e.g. [8, 16, 32, 64]; None → d_sae/8, /4, /2, /1."""
    prefix_weights: list | None = None
    """Weight (≥ 0) of each prefix's reconstruction loss, one per prefix; None → all 1 (the plain sum, as
    SAELens). Smaller inner weights trade nesting for less feature hedging in the inner latents (Nabeshima's
    sampled prefix lengths are this, in expectation)."""
    use_matryoshka_aux_loss: bool = False
    """Aux-k loss per prefix block: a block's dead latents reconstruct the residual of their own prefix
    (SAELens's option of this name), instead of the full SAE's residual."""

    def __post_init__(self):
        super().__post_init__()
        if self.prefixes is not None:
            check(_is_list(self.prefixes), "prefixes", f"null or a list of increasing integers ending at "
                  f"d_sae={self.d_sae}", self.prefixes)
            p = list(self.prefixes)
            ok = (len(p) >= 1 and all(_is_int(v) and v >= 1 for v in p)
                  and all(a < b for a, b in zip(p, p[1:], strict=False)) and p[-1] == self.d_sae)
            check(ok, "prefixes", f"increasing integers ending at d_sae={self.d_sae}", self.prefixes)
        if self.prefix_weights is not None:
            check(_is_list(self.prefix_weights), "prefix_weights", "null or a list of numbers ≥ 0",
                  self.prefix_weights)
            w, n = list(self.prefix_weights), len(self.prefix_sizes)
            check(len(w) == n and all(_is_num(v) and v >= 0 for v in w), "prefix_weights",
                  f"{n} numbers ≥ 0 (one per prefix {self.prefix_sizes})", self.prefix_weights)
        check(isinstance(self.use_matryoshka_aux_loss, bool), "use_matryoshka_aux_loss", "true or false",
              self.use_matryoshka_aux_loss)

    @property
    def prefix_sizes(self) -> list[int]:
        if self.prefixes is not None:
            return [int(v) for v in self.prefixes]
        return sorted({max(1, self.d_sae // 2**i) for i in range(4)})  # d_sae/8, /4, /2, d_sae


@register_variant("matryoshka", MatryoshkaConfig)
class MatryoshkaSAE(BatchTopKSAE):
    """loss = Σ_m ‖x − x̂_{<m}‖² (sum over prefixes, as SAELens's inner + outer MSE) + α · aux-k."""

    def __init__(self, cfgs):
        super().__init__(cfgs)
        n = len(cfgs[0].prefix_sizes)
        self.weight_KP = torch.tensor([c.prefix_weights or [1.0] * n for c in cfgs], dtype=torch.float32)

    def step_prefixes(self):
        return self.cfgs[0].prefix_sizes, self.weight_KP

    def fast_step_ok(self, x_BD) -> bool:
        """The hand-written step (`SparseStep` with nested prefixes) unless the per-block aux loss needs the
        prefix reconstructions."""
        return self.fast_path and x_BD.device.type == "cpu" and not self.cfgs[0].use_matryoshka_aux_loss

    def _recon_losses(self, x_BD, pre_KBL, kept_KBL):
        total, self._prefix_recons = 0, []  # kept for the per-block aux loss of this step
        for j, recon in enumerate(self.decode_prefixes(pre_KBL, kept_KBL, self.cfgs[0].prefix_sizes)):
            total = total + self.weight_KP[:, j] * mse_K(x_BD, recon)
            self._prefix_recons.append(recon)
        return {"mse": total}, self._prefix_recons[-1]  # the last prefix is the full SAE

    def _aux(self, x_BD, recon_KBD, pre_KBL):
        c0 = self.cfgs[0]
        if not c0.use_matryoshka_aux_loss:
            return super()._aux(x_BD, recon_KBD, pre_KBL)
        if self.dead_KL is None or not bool(self.dead_KL.any()) or not self.per_sae("aux_coeff").any():
            return {}
        total, prev = 0, 0
        for m, rec_KBD in zip(c0.prefix_sizes, self._prefix_recons, strict=True):
            dead_KL = self.dead_KL[:, prev:m]
            if bool(dead_KL.any()):
                total = total + aux_k_loss(x_BD, rec_KBD, pre_KBL[..., prev:m], dead_KL, self.W_dec_KLD[:, prev:m],
                                           c0.k_aux)
            prev = m
        return {"aux": self.per_sae("aux_coeff") * total}

"""Matryoshka BatchTopK SAE (Bussmann et al. 2025): one BatchTopK selection per batch; the loss sums the
reconstruction errors of nested prefixes (latents [0, m) for each prefix size m, the last being the full SAE),
so early latents must reconstruct on their own. Each prefix reconstruction uses the same kept (BatchTopK)
entries restricted to latents < m, plus the decoder bias once. Exported, like BatchTopK, as JumpReLU."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from toymodels.config import _is_int, _is_num
from toymodels.errors import check
from toymodels.sae.base import _is_list, mse_K
from toymodels.sae.batchtopk import BatchTopKConfig, BatchTopKSAE
from toymodels.sae.registry import register_variant


@dataclass
class MatryoshkaConfig(BatchTopKConfig):
    """Matryoshka BatchTopK SAE: BatchTopK's fields and the nested prefixes with their loss weights."""

    pack_fields = ("k_aux", "prefix_sizes")
    prefixes: list | None = None
    """Increasing prefix sizes ending at d_sae, e.g. [8, 16, 32, 64]; None → d_sae/8, /4, /2, /1."""
    prefix_weights: list | None = None
    """Weight (≥ 0) of each prefix's reconstruction loss, one per prefix; None → all 1 (the plain sum, as
    SAELens). Smaller inner weights trade nesting for less feature hedging in the inner latents (Nabeshima's
    sampled prefix lengths are this, in expectation)."""

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

    def _recon_losses(self, x_BD, pre_KBL, kept_KBL):
        total, recon = 0, None
        for j, recon in enumerate(self.decode_prefixes(pre_KBL, kept_KBL, self.cfgs[0].prefix_sizes)):
            total = total + self.weight_KP[:, j] * mse_K(x_BD, recon)
        return {"mse": total}, recon  # the last prefix is the full SAE

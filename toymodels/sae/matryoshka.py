"""Matryoshka BatchTopK SAE (Bussmann et al. 2025): one BatchTopK selection per batch; the loss sums the
reconstruction errors of nested prefixes (latents [0, m) for each prefix size m, the last being the full SAE),
so early latents must reconstruct on their own. Each prefix reconstruction uses the same kept (BatchTopK)
entries restricted to latents < m, plus the decoder bias once. Exported, like BatchTopK, as JumpReLU."""

from __future__ import annotations

import torch

from toymodels.sae.base import mse_K
from toymodels.sae.batchtopk import BatchTopKSAE


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

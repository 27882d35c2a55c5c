"""Penalty-based variants' shared parts: a sparsity coefficient (each variant names its field) warmed up
linearly from 0 over the first `l1_warmup_frac` of training."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from toymodels.config import _is_num
from toymodels.errors import check
from toymodels.sae.base import PackedSAE, SAEConfig, warm


@dataclass
class PenaltyConfig(SAEConfig):
    """An SAE whose sparsity comes from a penalty term with coefficient `sparsity_field`."""

    l1_warmup_frac: float = 0.05
    """Fraction of training over which the sparsity coefficient ramps linearly from 0 (in [0, 1))."""

    def __post_init__(self):
        super().__post_init__()
        check(_is_num(self.l1_warmup_frac) and 0 <= self.l1_warmup_frac < 1, "l1_warmup_frac", "in [0, 1)",
              self.l1_warmup_frac)
        f = self.sparsity_field
        check(_is_num(getattr(self, f)) and getattr(self, f) >= 0, f, "a number ≥ 0", getattr(self, f))


@dataclass
class L1Config(PenaltyConfig):
    """A penalty-based SAE with an L1-style coefficient."""

    sparsity_field = "l1_coeff"
    l1_coeff: float = 1.0
    """Sparsity penalty coefficient (≥ 0) on the (normalised) activations."""


class PenaltySAE(PackedSAE):
    """Mixin for penalty-based variants: `sparsity_coeff(frac)` is the [K] coefficient at this point."""

    def sparsity_coeff(self, frac: float) -> torch.Tensor:
        """[K] sparsity coefficient: each SAE's `sparsity_field`, warmed up over `l1_warmup_frac`."""
        return warm(self.per_sae(self.config_class.sparsity_field), frac, self.per_sae("l1_warmup_frac"))

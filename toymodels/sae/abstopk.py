"""AbsTopK SAE ("AbsTopK: Rethinking Sparse Autoencoders For Bidirectional Features", arXiv 2510.00404; SAELens
`abstopk`): keep each sample's k pre-activations of largest |value| with their sign (no ReLU), so one latent
can stand for a feature and its negation. The aux-k loss ranks dead latents by |pre-activation| too."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from toymodels.sae.registry import register_variant
from toymodels.sae.topk import FAST_TOPK, TopKFamilyConfig, TopKSAE


@dataclass
class AbsTopKConfig(TopKFamilyConfig):
    """AbsTopK SAE (no fields beyond `TopKFamilyConfig`; k counts latents of either sign)."""


@register_variant("abstopk", AbsTopKConfig)
class AbsTopKSAE(TopKSAE):
    """f = the k entries of largest |z| of z = (x − b_dec) W_enc + b_enc, signed; loss = ‖x − x̂‖² + α · aux-k."""

    aux_by_magnitude = True

    def _topk(self, pre_KBL):
        """Per-sample top-k by |z| (k may differ per SAE: take max k, zero the ranks ≥ k_i); signed values."""
        kmax = int(self.k_K.max())
        ragged = bool((self.k_K != kmax).any())
        idx = pre_KBL.abs().topk(kmax, dim=-1, sorted=ragged).indices
        vals = pre_KBL.gather(-1, idx)
        if ragged:
            vals = vals * (torch.arange(kmax) < self.k_K[:, None, None])
        return vals, idx

    def inference(self, i):
        return "abstopk", self._base_tensors(i), {"k": self.cfgs[i].k, "rescale_acts_by_decoder_norm": False}


FAST_TOPK.add(AbsTopKSAE._topk)  # select_entries ranks |pre| when aux_by_magnitude

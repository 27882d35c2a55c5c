"""Put a trained SAE on an exact L0 after training, by moving the one offset that gates its latents.

Short runs leave the penalty variants' L0 controllers short of their target (the atlas: 300–600 steps, targets
down to 0.3 active latents, resampling every 30 steps), and BatchTopK's inference threshold is an EMA that has not
settled. `calibrate_l0` then shifts every latent's gate by one common offset δ, chosen on the given samples so
that exactly round(target · N) (latent, sample) entries fire:
- standard (relu, relu_april, p_anneal): b_enc + δ, i.e. the soft threshold a larger or smaller L1 coefficient
  would have moved it to (a latent fires where pre > −δ; its value becomes pre + δ);
- jumprelu (JumpReLU, and BatchTopK/Matryoshka's global threshold): threshold − δ (values unchanged);
- gated: b_gate + δ (the magnitude path unchanged).
TopK, AbsTopK and Matching Pursuit have an integer k per sample and are returned as they are. The offset puts the
cut midway between the entry scores ranked round(target · N) and the next one, so on the calibration samples the
L0 is exact, except where scores tie across the cut (a latent whose encoder row is zero scores every sample
alike): the cut then keeps the tied block in or out, whichever lands nearer the target. On fresh samples the L0
is exact up to sampling error.
"""

from __future__ import annotations

import dataclasses

import torch

from toymodels.errors import check
from toymodels.sae.base import TrainedSAE

SHIFTED = {"standard": "b_enc", "jumprelu": "threshold", "gated": "b_gate"}
"""Architecture → the tensor that calibration moves."""


def gate_scores(sae: TrainedSAE, x_ND: torch.Tensor) -> torch.Tensor:
    """[N, L] scores g with latent l firing on sample n iff g > 0, and firing iff g + δ > 0 after a shift δ."""
    s = sae._sae_in(x_ND)
    if sae.architecture == "gated":  # fires iff the gate opens and the magnitude path is positive
        mag = s @ (sae.W_enc * sae.r_mag.exp()) + sae.b_mag
        return torch.where(mag > 0, s @ sae.W_enc + sae.b_gate, -torch.inf)
    pre = s @ sae.W_enc + sae.b_enc
    if sae.architecture == "jumprelu":  # fires iff pre > θ (and pre > 0, the ReLU's own gate)
        return torch.where(pre > 0, pre - sae.threshold, -torch.inf)
    return pre


@torch.no_grad()
def calibrate_l0(sae: TrainedSAE, x_ND: torch.Tensor, target: float) -> TrainedSAE:
    """A copy of `sae` whose mean L0 on `x_ND` is `target` (see the module docstring); unchanged for the
    integer-k architectures. A target above what the gate can reach (e.g. more than the samples' positive
    JumpReLU pre-activations) is clamped to it."""
    if sae.architecture not in SHIFTED:
        return sae
    check(target > 0, "target_l0", "> 0 for an L0 calibration", target)
    g = gate_scores(sae, x_ND).flatten()
    want = float(target) * x_ND.shape[0]
    n_fire = min(max(round(want), 1), int(torch.isfinite(g).sum()))
    v = g.topk(n_fire).values[-1]  # the n_fire-th largest score; equal scores fire or stay silent together
    above, below = g[g > v], g[g < v]
    n_gt, n_ge = above.numel(), g.numel() - below.numel()
    if n_gt and abs(n_gt - want) < abs(n_ge - want):  # cut just above v
        cut = (v + above.min()) / 2
    else:  # cut just below v
        lo = below.max() if below.numel() and torch.isfinite(below.max()) else v - 1.0
        cut = (v + lo) / 2
    delta = -float(cut)  # g + δ > 0 exactly for the scores above the cut
    name = SHIFTED[sae.architecture]
    moved = getattr(sae, name) - delta if name == "threshold" else getattr(sae, name) + delta
    history = dict(sae.history, l0_calibration_offset=delta)
    return dataclasses.replace(sae, **{name: moved}, history=history)

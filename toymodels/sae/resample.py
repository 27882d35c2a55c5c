"""Dead-latent resampling (Bricken et al. 2023, simplified): a latent that has not fired for `dead_after` samples
(or fires far below its SAE's mean rate, `SAETrainConfig.resample_min_rate`) is re-initialised towards the
residual of one of the worst-reconstructed samples of the current batch.

Works for every variant: the decoder row becomes the unit residual direction, the encoder column the same
direction at the mean norm of the SAE's live encoder columns, its other per-latent parameters (biases, JumpReLU's
threshold) go back to their init (a penalty SAE with start: target sets its firing bias from the batch again, so
the new latent fires at the target rate rather than on half the batch), and the Adam moments of every
per-latent slice are cleared so the optimiser's memory of the dead latent does not stall it. All choices are per
SAE and deterministic (largest errors first), so K SAEs at once still equal K one by one."""

from __future__ import annotations

import torch

from toymodels.sae.base import PackedSAE


@torch.no_grad()
def resample_dead(m: PackedSAE, dead_KL: torch.Tensor, x_BD: torch.Tensor, opt: torch.optim.Optimizer) -> int:
    """Re-initialise the latents in the [K, L] mask `dead_KL`; return how many were resampled."""
    if not bool(dead_KL.any()):
        return 0
    was_training = m.training
    m.eval()
    recon_KBD = m.decode(m.encode(x_BD))
    m.train(was_training)
    resid_KBD = x_BD - recon_KBD
    err_KB = resid_KBD.pow(2).sum(-1)
    n = 0
    for i in range(m.K):
        dead = torch.nonzero(dead_KL[i]).flatten()
        if dead.numel() == 0:
            continue
        worst = err_KB[i].argsort(descending=True)[: dead.numel()]
        dead = dead[: worst.numel()]  # a batch smaller than the number of dead latents
        dirs_nD = torch.nn.functional.normalize(resid_KBD[i, worst], dim=-1)
        alive = ~dead_KL[i]
        enc_norm = m.W_enc_KDL[i][:, alive].norm(dim=0).mean() if bool(alive.any()) else torch.tensor(1.0)
        m.W_dec_KLD[i, dead] = dirs_nD * m.W_dec_KLD[i, dead].norm(dim=-1, keepdim=True).clamp_min(1e-8)
        m.W_enc_KDL[i][:, dead] = dirs_nD.T * enc_norm
        m.reset_latents(i, dead, x_BD)  # biases, JumpReLU thresholds, Gated's magnitude scale
        for name, p in m.named_parameters():  # clear the optimiser memory of every per-latent slice
            axis = name.rsplit("_", 1)[-1].find("L")  # shape-named: W_enc_KDL → 2, W_dec_KLD / b_enc_KL → 1
            state = opt.state.get(p, {})
            for moment in ("exp_avg", "exp_avg_sq"):
                if axis > 0 and moment in state:
                    state[moment][i].index_fill_(axis - 1, dead, 0.0)
        n += dead.numel()
    return n


"""Sparse synthetic features x ∈ R^{instance × batch × feature}, sampled fresh every step.

Conventions (per instance i, feature f, with p = density[i, f]):
- independent: x_f ≠ 0 with probability p, magnitude from the magnitude law (U[0,1], or U[−1,1] for
  "symmetric").
- correlated: consecutive sets of `set_size` features share one on/off draw (probability = the set's first
  density); members' magnitudes are independent.
- anticorrelated: a set is active with probability p (its first density), and then exactly one member, chosen
  uniformly, is on; so each member's marginal density is p / set_size and members never co-occur.
- hierarchical: the first member of each set is the parent (on with probability p); each child is on with
  probability child_prob, only when its parent is on.

Cheap sampling: one uniform draw u gives both the mask (u < p) and the magnitude (u / p is U[0,1] given
u < p). At low density `sample_sparse` draws only the rows that have an active feature; every other row is
exactly zero, so the trainer accounts for those rows in closed form (see train.py).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from toymodels.config import ToyConfig


def _magnitude(u: torch.Tensor, law: str) -> torch.Tensor:
    """Map U[0,1) draws to the magnitude law."""
    return u if law == "uniform" else 2 * u - 1


def sample_dense(cfg: ToyConfig, p_IF: torch.Tensor, batch: int, gen: torch.Generator) -> torch.Tensor:
    """Draw a full batch x_IBF for any feature structure."""
    I, F = p_IF.shape
    law, dev = cfg.magnitude_law, p_IF.device  # any device: gen lives on p_IF's device
    if cfg.structure == "independent":
        u = torch.rand(I, batch, F, generator=gen, device=dev)
        p = p_IF[:, None, :]
        return torch.where(u < p, _magnitude(u / p, law), 0.0)

    S = cfg.set_size
    n_sets = F // S
    p_set = p_IF[:, None, ::S]  # [I, 1, sets]: each set's density is its first member's
    mag = _magnitude(torch.rand(I, batch, F, generator=gen, device=dev), law)
    set_on = torch.rand(I, batch, n_sets, generator=gen, device=dev) < p_set
    if cfg.structure == "correlated":
        on = set_on.repeat_interleave(S, dim=-1)
    elif cfg.structure == "anticorrelated":
        pick = torch.randint(S, (I, batch, n_sets), generator=gen, device=dev)  # the member that is on
        first = torch.arange(0, F, S, device=dev)  # each set's first feature
        on = torch.zeros(I, batch, F, dtype=torch.bool, device=dev).scatter_(-1, pick + first, set_on)
    else:  # hierarchical
        child = torch.rand(I, batch, F, generator=gen, device=dev) < cfg.child_prob
        child.view(I, batch, n_sets, S)[..., 0] = True  # the parent itself
        on = set_on.repeat_interleave(S, dim=-1) & child
    return torch.where(on, mag, 0.0)


def nonzero_row_prob(p_IF: torch.Tensor) -> torch.Tensor:
    """P(a row has at least one active feature) per instance, for independent features: 1 − Π(1 − p)."""
    return -torch.expm1(torch.log1p(-p_IF.clamp(max=1 - 1e-7)).sum(-1))


def sample_sparse(cfg: ToyConfig, p_IF: torch.Tensor, batch: int, gen: torch.Generator):
    """Draw only the non-zero rows of a batch of independent features.

    Returns (x_IRF, n_zero): R = the most non-zero rows over instances; instance i's rows beyond its own count
    are zero rows, and `n_zero = batch − R` further all-zero rows per instance are implied, not materialised.
    Exact in distribution: the count of non-zero rows is Binomial(batch, q); a non-zero row's first active
    feature f0 has P(f0 = f) ∝ p_f Π_{g<f}(1 − p_g); features after f0 are independent Bernoulli(p_g).
    """
    I, F = p_IF.shape
    dev = p_IF.device  # any device: gen lives on p_IF's device (R costs one host sync per batch off the CPU)
    q_I = nonzero_row_prob(p_IF)
    n_I = torch.binomial(torch.full((I,), float(batch), device=dev), q_I, generator=gen).long()
    R = max(int(n_I.max()), 1)
    # first active feature f0 per row, by inverse CDF of P(f0 = f)
    f0_IR = torch.searchsorted(_first_active_cdf(p_IF), torch.rand(I, R, generator=gen, device=dev)).clamp_(max=F - 1)
    u = torch.rand(I, R, F, generator=gen, device=dev)
    p = p_IF[:, None, :]
    feat = torch.arange(F, device=dev)
    f0 = f0_IR[..., None]
    x = torch.where((u < p) & (feat > f0), u / p, 0.0)
    x = torch.where(feat == f0, torch.rand(I, R, 1, generator=gen, device=dev), x)
    x = x * (torch.arange(R, device=dev)[None, :, None] < n_I[:, None, None])  # rows past an instance's count: 0
    return _magnitude_sparse(x, cfg.magnitude_law), batch - R


def _magnitude_sparse(x: torch.Tensor, law: str) -> torch.Tensor:
    """Map non-zero U[0,1) magnitudes to the law, keeping zeros zero."""
    return x if law == "uniform" else torch.where(x != 0, 2 * x - 1, 0.0)


class Uniforms:
    """Fast uniform draws for the training fast path, from numpy SFC64 raw bits.

    torch.rand on CPU costs ~3× more per float (mt19937 plus conversion, one thread); each raw 64-bit word of
    SFC64 (numpy's Small Fast Chaotic generator; ~25 % faster here than PCG64) gives two 32-bit draws. A draw
    keeps 23 random bits k, so u = k·2⁻²³ is uniform on a 2⁻²³ grid in [0, 1) (torch.rand keeps 24 bits);
    callers fold the 2⁻²³ into their next multiply.
    """

    SCALE = 2.0**-23

    def __init__(self, seed: int, stream: int):
        self.rng = np.random.Generator(np.random.SFC64(np.random.SeedSequence([seed, stream])))

    def bits(self, *shape: int) -> torch.Tensor:
        """int32 tensor of `shape` with values uniform in [0, 2²³)."""
        n = math.prod(shape)
        raw = torch.from_numpy(self.rng.bit_generator.random_raw((n + 1) // 2).view(np.int32)[:n])
        return raw.bitwise_and_(0x007FFFFF).view(shape)

    def rand(self, *shape: int) -> torch.Tensor:
        return self.bits(*shape).float().mul_(self.SCALE)

    def binomial(self, n: int, q: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.rng.binomial(n, q.double().numpy())).long()


def _first_active_cdf(p_IF: torch.Tensor) -> torch.Tensor:
    """[I, F] CDF of a non-zero row's first active feature f0: P(f0 = f) ∝ p_f Π_{g<f}(1 − p_g)."""
    log_off = torch.log1p(-p_IF.clamp(max=1 - 1e-7))
    cdf = torch.cumsum(p_IF * torch.exp(torch.cumsum(log_off, -1) - log_off), -1)
    return (cdf / cdf[:, -1:]).contiguous()


class FastSampler:
    """Training batches for the fast path: chunks (instance slice, xn_KFB = −x batch-last, n_zero).

    Batch-last makes every batched matmul of the tied models a [small × small] @ [small × batch] product,
    several times faster on CPU than [batch × small] @ [small × small]. The negation lets one in-place
    `threshold_` apply the mask: −u/p is > −1 exactly when u < p, and it is then −x. Independent features use
    `Uniforms`, and so do the structured sets with the uniform law (`_structured`, the conventions above; one
    chunk); the symmetric law uses `sample_dense`.

    Sparse batches are exact as in `sample_sparse`, with the rows of each instance in order of their first
    active feature f0 (rows are exchangeable): the f0 counts are Multinomial(n_i, P(f0 = f)), so feature f may
    be on (Bernoulli(p_f)) only in the rows before its own block, is on in its block, and off after it.
    Instances are cut into a few contiguous chunks of similar non-zero-row rate, so sparse instances are not
    padded to the busiest instance's row count.
    """

    def __init__(self, cfg: ToyConfig, p_KF: torch.Tensor, batch: int, sparse: bool, seed: int,
                 gen: torch.Generator):
        self.cfg, self.p_KF, self.batch, self.sparse, self.gen = cfg, p_KF, batch, sparse, gen
        self.fast = cfg.structure == "independent" and cfg.magnitude_law == "uniform"
        self.structured = cfg.structure != "independent" and cfg.magnitude_law == "uniform" and not sparse
        self.uni = Uniforms(seed, 1)
        self.neg_scale_KF1 = (-Uniforms.SCALE / p_KF)[:, :, None]
        cdf_KF = _first_active_cdf(p_KF).double()
        self.pf0_KF = torch.diff(cdf_KF, dim=-1, prepend=torch.zeros(len(p_KF), 1)).clamp_(min=0).numpy()
        self.q_K = nonzero_row_prob(p_KF)
        one = [slice(0, len(p_KF))]
        self.chunks = _rate_chunks(self.q_K, batch, p_KF.shape[1]) if sparse and self.fast else one
        self.flat, self.zero = torch.empty(0), torch.zeros(())

    def __call__(self) -> list[tuple[slice, torch.Tensor, int]]:
        K, F = self.p_KF.shape
        if self.structured:
            return [(slice(0, K), self._structured(), 0)]
        if not self.fast:
            draw = sample_sparse if self.sparse else _dense_with_zero
            x_IBF, n_zero = draw(self.cfg, self.p_KF, self.batch, self.gen)
            return [(slice(0, K), x_IBF.transpose(1, 2).neg().contiguous(), n_zero)]
        if not self.sparse:
            return [(self.chunks[0], self._masked(self.uni.bits(K, F, self.batch), self.neg_scale_KF1, 0), 0)]
        out, offset = [], 0
        n_K = self.uni.binomial(self.batch, self.q_K)
        c_KF = torch.from_numpy(self.uni.rng.multinomial(n_K.numpy(), self.pf0_KF))  # rows per first feature
        for sl in self.chunks:
            n_k, c_kF = n_K[sl], c_KF[sl]
            k, R = len(n_k), max(int(n_k.max()), 1)
            ends_kF = c_kF.cumsum(-1)
            xn = self._masked(self.uni.bits(k, F, R), self.neg_scale_KF1[sl], offset)
            keep_kFR = torch.arange(R) < (ends_kF - c_kF)[:, :, None]  # f is Bernoulli(p_f) only where f0 < f
            torch.where(keep_kFR, xn, self.zero, out=xn)
            f0_k1R = torch.searchsorted(ends_kF, torch.arange(R).repeat(k, 1), right=True)[:, None, :]
            mag_k1R = self.uni.rand(k, 1, R).neg_().masked_fill_(f0_k1R == F, 0.0)  # rows past n_k stay zero
            xn.scatter_(1, f0_k1R.clamp_(max=F - 1), mag_k1R)  # f0 itself is on, magnitude U[0,1)
            out.append((sl, xn, self.batch - R))
            offset += xn.numel()
        return out

    def _structured(self) -> torch.Tensor:
        """−x [K, F, B] for correlated / anticorrelated / hierarchical sets, from one uniform per set and sample
        (the set is on when u < p; anticorrelated: member ⌊S·u/p⌋ is the one on) and one per feature (its
        magnitude; a hierarchical child is on when v < child_prob, magnitude v / child_prob)."""
        cfg, B = self.cfg, self.batch
        K, F = self.p_KF.shape
        S = cfg.set_size
        n = F // S
        p_Kn1 = self.p_KF[:, ::S, None]
        u_KnB = self.uni.rand(K, n, B)
        on_Kn1B = (u_KnB < p_Kn1)[:, :, None]
        v_KnSB = self.uni.rand(K, n, S, B)
        if cfg.structure == "correlated":
            mask = on_Kn1B
        elif cfg.structure == "anticorrelated":
            pick_Kn1B = (u_KnB / p_Kn1 * S).long().clamp_(max=S - 1)[:, :, None]
            mask = on_Kn1B & (torch.arange(S)[:, None] == pick_Kn1B)
        else:  # hierarchical: slot 0 is the parent
            child = v_KnSB < cfg.child_prob
            child[:, :, 0] = True
            mask = on_Kn1B & child
            v_KnSB[:, :, 1:] /= cfg.child_prob
        return torch.where(mask, v_KnSB.neg_(), 0.0).view(K, F, B)

    def _masked(self, bits: torch.Tensor, neg_scale: torch.Tensor, offset: int) -> torch.Tensor:
        """−u/p from 23-bit draws (u = k·2⁻²³), zeroed where u ≥ p; written into a reused buffer at offset."""
        end = offset + bits.numel()
        if self.flat.numel() < end:  # chunks of one step never exceed a dense batch
            self.flat = torch.empty(self.p_KF.numel() * self.batch)
        xn = self.flat[offset:end].view(bits.shape).copy_(bits).mul_(neg_scale)
        return torch.nn.functional.threshold_(xn, -1.0, 0.0)


def _rate_chunks(q_K: torch.Tensor, batch: int, F: int, n_cuts: int = 64) -> list[slice]:
    """Contiguous instance chunks that minimise the padded work Σ len·(expected max rows)·F·8ns + 0.3 ms each.

    (Rough 2-core CPU costs: ~8 ns per padded element over a step's passes, ~0.3 ms fixed per chunk.) Cut
    points are restricted to `n_cuts` evenly spaced positions, so this is cheap for any number of instances.
    """
    K = len(q_K)
    cand = sorted({round(K * j / n_cuts) for j in range(n_cuts + 1)})
    rows = batch * q_K
    rows = (rows + 3 * rows.sqrt()).clamp(max=batch).tolist()

    def cost(a: int, b: int) -> float:
        return (b - a) * max(rows[a:b]) * F * 8e-9 + 3e-4

    best = {cand[0]: (0.0, [])}
    for j, b in enumerate(cand[1:], 1):
        best[b] = min((best[a][0] + cost(a, b), best[a][1] + [slice(a, b)]) for a in cand[:j])
    return best[K][1]


def _dense_with_zero(cfg, p_IF, batch, gen):
    return sample_dense(cfg, p_IF, batch, gen), 0

"""SAELens's synthetic-data law (`SyntheticConfig(law="saelens")`, or a model read by saelens_io.py), sampled
exactly, and the helpers both laws share (per-feature spreads, dictionary bias, superposition statistics).

The law, as SAELens's `SyntheticModel` defines it:
1. every feature f fires with its own probability p_f, independently or through a Gaussian copula with a low-rank
   covariance L Lᵀ + diag(D) (z = L u + √D ε with u ~ N(0, I_rank), f fires when z_f > Φ⁻¹(1 − p_f));
2. a firing feature draws the magnitude relu(μ_f + σ_f N(0, 1)) (a zero counts as silent);
3. the hierarchy is applied top-down, level by level: a child whose parent is silent is silenced; with
   `scale_children_by_parent` on the parent, the child's magnitude is multiplied by parent magnitude / μ_parent;
   among the active children of a parent with mutually exclusive children one, drawn uniformly, stays active.

Without a copula step 1 costs O(active features) (`TopSampler` with one group); with a copula every sample draws
all n features' Gaussians (O(n · rank) per sample, SAELens's own algorithm), since a dense rank-r factor leaves
no per-feature bound tight enough to skip features exactly.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.special import ndtri

from toymodels.groundtruth.sampling import TopSampler
from toymodels.groundtruth.synthetic import (
    Dictionary,
    SyntheticConfig,
    _firing_probs,
    random_unit_vectors,
)
from toymodels.seeding import generator

MIN_DIAG = 0.01
"""A copula factor row explains at most 1 − MIN_DIAG of its feature's variance (rows beyond are scaled back)."""


def magnitude_law(kind: str, start: float, end: float, n: int, seed: int | None) -> torch.Tensor:
    """[n] float32 per-feature values as SAELens's magnitude generators make them: constant (start), linear or
    exponential (start → end over the features), folded_normal (|N(start, end)| drawn from torch's generator
    seeded with `seed`)."""
    if kind == "constant":
        return torch.full((n,), float(start), dtype=torch.float32)
    if kind in ("linear", "exponential") and n == 1:
        return torch.tensor([float(start)], dtype=torch.float32)
    if kind == "linear":
        return torch.linspace(float(start), float(end), n)
    if kind == "exponential":
        return float(start) * (float(end) / float(start)) ** torch.linspace(0, 1, n)
    gen = None if seed is None else torch.Generator().manual_seed(int(seed))
    return (float(start) + torch.randn(n, generator=gen) * float(end)).abs()


def magnitude_stds(cfg: SyntheticConfig) -> torch.Tensor:
    """[n_features] σ_f of `cfg.magnitude_std_law` (folded_normal: seeded by cfg.seed + 1, as SAELens seeds its
    std generator, so an exported model regenerates the same spreads)."""
    return magnitude_law(cfg.magnitude_std_law, cfg.magnitude_std, cfg.magnitude_std_end, cfg.n_features,
                         (cfg.seed + 1) % 2**64)


def dictionary_bias(cfg: SyntheticConfig) -> torch.Tensor | None:
    """[d_model] random direction of norm cfg.bias (its own stream), or None when cfg.bias is 0."""
    if not cfg.bias:
        return None
    b = torch.randn(cfg.d_model, generator=generator(cfg.seed, "bias"))
    return b / b.norm().clamp_min(1e-8) * float(cfg.bias)


def superposition_stats(vectors: torch.Tensor, percentiles=(95, 99), chunk: int = 1024) -> dict:
    """Superposition of a dictionary: per feature the max and the given percentiles of |cos| with every other
    feature (percentiles interpolated linearly, as torch.quantile), and their means; `rho_mm` is the mean max
    |cos|. Cost O(n² d), memory O(chunk · n)."""
    U = vectors.float() / vectors.float().norm(dim=1, keepdim=True).clamp_min(1e-8)
    n = len(U)
    if n < 2:
        raise ValueError("superposition statistics need at least 2 features")
    out = {"max": torch.empty(n)} | {f"p{q}": torch.empty(n) for q in percentiles}
    for s in range(0, n, chunk):
        C = (U[s:s + chunk] @ U.T).abs_()
        C[torch.arange(len(C)), torch.arange(s, s + len(C))] = -1.0  # self sorts first and is dropped
        S = C.sort(dim=1).values[:, 1:]  # [c, n − 1]
        out["max"][s:s + len(C)] = S[:, -1]
        for q in percentiles:
            pos = q / 100 * (n - 2)
            lo = int(math.floor(pos))
            hi = min(lo + 1, n - 2)
            out[f"p{q}"][s:s + len(C)] = S[:, lo] + (S[:, hi] - S[:, lo]) * (pos - lo)
    out["rho_mm"] = float(out["max"].mean())
    for q in percentiles:
        out[f"mean_p{q}"] = float(out[f"p{q}"].mean())
    return out


def saelens_tree(cfg: SyntheticConfig, rng: np.random.Generator):
    """SAELens's breadth-first forest on features 0, 1, 2, …: (parent [F] (−1 = none), depth [F], exclusive [F]
    (the node's children are mutually exclusive), scale [F] (the node scales its children))."""
    F = cfg.n_features
    parent, depth = np.full(F, -1, dtype=np.int64), np.zeros(F, dtype=np.int64)
    n_kids = np.zeros(F, dtype=np.int64)
    level = list(range(min(cfg.n_roots, F)))
    nodes, nxt = list(level), len(level)  # every node that may have children, in order, with its depth
    for d in range(cfg.depth - 1):
        new = []
        for p in level:
            b = cfg.branching if cfg.branching_max is None else int(rng.integers(cfg.branching,
                                                                                 cfg.branching_max + 1))
            kids = list(range(nxt, min(nxt + b, F)))
            nxt += len(kids)
            parent[kids], depth[kids], n_kids[p] = p, d + 1, len(kids)
            new.extend(kids)
        level = new
        if d + 1 < cfg.depth - 1:
            nodes.extend(new)
    lo, hi = cfg.mutually_exclusive_min_depth, cfg.mutually_exclusive_max_depth
    eligible = [p for p in nodes if depth[p] >= lo and (hi is None or depth[p] <= hi) and n_kids[p] >= 2]
    exclusive = np.zeros(F, dtype=bool)
    k = int(len(eligible) * cfg.mutually_exclusive_portion) if cfg.mutually_exclusive else 0
    if k:
        exclusive[np.asarray(eligible)[rng.choice(len(eligible), k, replace=False)]] = True
    scale = np.zeros(F, dtype=bool)
    if cfg.scale_children_by_parent:
        scale[np.asarray(nodes, dtype=np.int64)] = True
    return parent, depth, exclusive, scale


def compensated(base: np.ndarray, parent: np.ndarray, exclusive: np.ndarray) -> np.ndarray:
    """SAELens's compensate_probabilities: child p × 1 / p_parent (× 1 + Σ other siblings' p / p_parent in a
    mutually exclusive group of ≥ 2), from the uncompensated p's, capped at 1."""
    kids = np.flatnonzero(parent >= 0)
    par = parent[kids]
    factor = np.ones(len(base))
    factor[kids] = 1.0 / base[par]
    sib = np.bincount(par, weights=base[kids], minlength=len(base))
    n_sib = np.bincount(par, minlength=len(base))
    me = exclusive[par] & (n_sib[par] >= 2)
    factor[kids[me]] *= 1.0 + np.maximum(0.0, sib[par[me]] - base[kids[me]]) / base[par[me]]
    return np.minimum(base * factor, 1.0)


class SAELensDictionary(Dictionary):
    """A dictionary under SAELens's law (see the module docstring), built from a SyntheticConfig with
    law=saelens or from explicit arrays (`from_arrays`, used by saelens_io)."""

    def __init__(self, cfg: SyntheticConfig):
        from toymodels.budget import FLOAT, check_memory

        F, D = cfg.n_features, cfg.d_model
        gram = 4 * F * F if cfg.orthogonality_steps else 0
        check_memory(FLOAT * (3 * F * D + gram + F * cfg.correlation_rank) + 200 * F,
                     f"dictionary ({F} features in {D} dims)")
        gen = generator(cfg.seed, "dictionary")
        vectors = random_unit_vectors(F, D, gen, cfg.orthogonality_steps, cfg.orthogonality_lr)
        base = _firing_probs(cfg)
        parent, depth, exclusive, scale = saelens_tree(cfg, np.random.default_rng([cfg.seed, 3]))
        prob = compensated(base, parent, exclusive) if cfg.compensate_probabilities else base
        mean = magnitude_law(cfg.magnitude_mean, cfg.magnitude_max, cfg.magnitude_min, F, None)
        factor = None
        if cfg.correlation == "factor":
            factor = torch.randn(F, cfg.correlation_rank, generator=generator(cfg.seed, "correlation"))
            factor *= cfg.correlation_scale
            sq = factor.square().sum(1)
            over = sq > 1 - MIN_DIAG
            factor[over] *= ((1 - MIN_DIAG) / sq[over]).sqrt()[:, None]
        elif cfg.correlation == "low_rank" and cfg.correlation_scale > 0:  # one ±√ρ loading per feature
            g = generator(cfg.seed, "correlation")
            factor = torch.zeros(F, cfg.correlation_rank)
            sign = torch.randint(2, (F,), generator=g) * 2.0 - 1
            factor[torch.arange(F), torch.randint(cfg.correlation_rank, (F,), generator=g)] = \
                sign * math.sqrt(cfg.correlation_scale)
        self._setup(cfg, vectors, prob, mean, magnitude_stds(cfg), parent, exclusive, scale, factor,
                    dictionary_bias(cfg))

    @classmethod
    def from_arrays(cls, vectors, prob, mean, std, parent, exclusive, scale, factor=None, bias=None,
                    seed: int = 0) -> SAELensDictionary:
        """A dictionary from explicit arrays: vectors [F, D], prob/mean/std [F], parent [F] (−1 = none),
        exclusive/scale [F] bools of parent nodes, factor [F, rank] or None, bias [D] or None."""
        self = object.__new__(cls)
        F, D = vectors.shape
        cfg = SyntheticConfig(n_features=F, d_model=D, law="saelens", correlation="none", seed=seed)
        self._setup(cfg, vectors, prob, mean, std, parent, exclusive, scale, factor, bias)
        return self

    def _setup(self, cfg, vectors, prob, mean, std, parent, exclusive, scale, factor, bias) -> None:
        self.cfg, F = cfg, len(prob)
        self.vectors = torch.as_tensor(vectors, dtype=torch.float32).contiguous()
        self.prob = np.asarray(prob, dtype=np.float64)  # [F] firing probabilities before the hierarchy
        self.mag_mean = torch.as_tensor(mean, dtype=torch.float32)
        self.mag_std = torch.as_tensor(std, dtype=torch.float32)
        self._mean, self._std = self.mag_mean.numpy(), self.mag_std.numpy()
        self.parent = torch.as_tensor(np.asarray(parent, dtype=np.int64))
        self.exclusive = np.asarray(exclusive, dtype=bool)
        self.scale = np.asarray(scale, dtype=bool)
        par = self.parent.numpy()
        self.depth = np.zeros(F, dtype=np.int64)
        for _ in range(F + 1):  # depth = parent's depth + 1, settled after (tree depth) rounds
            new = np.where(par >= 0, self.depth[np.maximum(par, 0)] + 1, 0)
            if np.array_equal(new, self.depth):
                break
            self.depth = new
        else:
            raise ValueError("the hierarchy has a cycle")
        self.factor = None if factor is None else torch.as_tensor(factor, dtype=torch.float32)
        self.bias = None if bias is None or not bool(torch.as_tensor(bias).any()) else \
            torch.as_tensor(bias, dtype=torch.float32)
        self.density = None  # no closed form under this law; datasets carry the empirical truth
        self.levels, self.top = [], torch.arange(F)
        if self.factor is None:
            self._indep = TopSampler(self.prob, np.zeros(F, dtype=np.int64), np.ones(F), 0.0)
            self._indep_order = self._indep.order
        else:
            L = self.factor.numpy()
            self._L_T = np.ascontiguousarray(L.T)  # [rank, F]
            self._sd = np.sqrt(np.maximum(1 - (L.astype(np.float64) ** 2).sum(1), 0)).astype(np.float32)
            self._tau = ndtri(1 - self.prob).astype(np.float32)  # fires when z > τ

    @property
    def expected_l0(self) -> float:
        """Σ p_f before the hierarchy silences children: an upper bound of the mean L0 (the memory estimate)."""
        return float(self.prob.sum())

    def _fire(self, m: int, rng: np.random.Generator):
        """(row [A], feature [A]) of the features whose own firing draw fires, sorted by row."""
        if self.factor is None:
            r, pos = self._indep.sample(m, rng)
            return r, self._indep_order[pos]
        F = len(self.prob)
        block = max(1, (1 << 21) // F)
        rows, feats = [], []
        for s in range(0, m, block):
            b = min(block, m - s)
            Z = rng.standard_normal((b, F), dtype=np.float32)
            Z *= self._sd
            Z += rng.standard_normal((b, self._L_T.shape[0]), dtype=np.float32) @ self._L_T
            r, f = np.nonzero(self._tau < Z)
            rows.append(r + s)
            feats.append(f)
        return np.concatenate(rows), np.concatenate(feats).astype(np.int64)

    def _sample_chunk(self, m: int, rng: np.random.Generator):
        r, f = self._fire(m, rng)
        v = self._mean[f] + self._std[f] * rng.standard_normal(len(f), dtype=np.float32)
        keep = v > 0
        r, f, v = r[keep], f[keep], v[keep]
        par, F = self.parent.numpy(), np.int64(len(self.prob))
        for level in range(1, int(self.depth.max(initial=0)) + 1):
            key = r * F + f
            order = np.argsort(key, kind="stable")
            skey = key[order]
            sel = np.flatnonzero(self.depth[f] == level)
            if not len(sel):
                break
            p = par[f[sel]]
            pk = r[sel] * F + p
            i = np.minimum(np.searchsorted(skey, pk), len(skey) - 1)
            found = skey[i] == pk
            alive = np.ones(len(f), dtype=bool)
            alive[sel[~found]] = False
            sel, p, pv = sel[found], p[found], v[order[i[found]]]
            sc = self.scale[p]
            v[sel[sc]] *= pv[sc] / self._mean[p[sc]]
            ex = self.exclusive[p]
            if ex.any():  # one uniformly drawn winner per (row, exclusive parent)
                es, gkey = sel[ex], r[sel[ex]] * F + p[ex]
                o = np.lexsort((rng.random(len(es)), gkey))
                last = np.r_[gkey[o][1:] != gkey[o][:-1], True]
                alive[es[o[~last]]] = False
            r, f, v = r[alive], f[alive], v[alive]
        return np.bincount(r, minlength=m), f, v

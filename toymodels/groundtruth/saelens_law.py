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
from scipy.special import ndtr, ndtri

from toymodels.config import _is_int, _is_num
from toymodels.errors import check
from toymodels.groundtruth.sampling import TopSampler
from toymodels.groundtruth.synthetic import (
    LAWS,
    SAELENS_ONLY,
    STD_LAWS,
    Dictionary,
    SyntheticConfig,
    _firing_probs,
    random_unit_vectors,
)
from toymodels.seeding import generator

GROUP = 64
"""Top-level features per thinning group of the copula sampler."""
DENSE = 0.25
"""(sample, group) pairs whose bound exceeds this compare every feature directly."""
MIN_DIAG = 0.01
"""A copula factor row explains at most 1 − MIN_DIAG of its feature's variance (rows beyond are scaled back)."""


def check_law_options(cfg: SyntheticConfig) -> None:
    """SyntheticConfig's checks of `law` and the options added with it (one-line ConfigErrors)."""
    check(cfg.law in LAWS, "law", f"one of {', '.join(LAWS)}", cfg.law)
    check(cfg.magnitude_std_law in STD_LAWS, "magnitude_std_law", f"one of {', '.join(STD_LAWS)}",
          cfg.magnitude_std_law)
    end_ok = cfg.magnitude_std_law == "constant" or (_is_num(cfg.magnitude_std_end) and cfg.magnitude_std_end > 0
                                                      and (cfg.magnitude_std > 0 or cfg.magnitude_std_law
                                                           == "folded_normal"))
    check(_is_num(cfg.magnitude_std_end) and cfg.magnitude_std_end >= 0 and end_ok, "magnitude_std_end",
          f"a number > 0 (and magnitude_std > 0 unless folded_normal) for magnitude_std_law="
          f"{cfg.magnitude_std_law}, else ≥ 0", cfg.magnitude_std_end)
    check(_is_num(cfg.bias) and cfg.bias >= 0, "bias", "a number ≥ 0", cfg.bias)
    check(_is_num(cfg.orthogonality_lr) and cfg.orthogonality_lr > 0, "orthogonality_lr", "a number > 0",
          cfg.orthogonality_lr)
    if cfg.law == "toymodels":
        for name, default in SAELENS_ONLY:
            check(getattr(cfg, name) == default, name, f"{str(default).lower().replace('none', 'null')} "
                  "unless law=saelens", getattr(cfg, name))
        check(cfg.correlation != "factor", "correlation", "none or low_rank unless law=saelens",
              cfg.correlation)
    check(cfg.branching_max is None or (_is_int(cfg.branching_max) and cfg.branching_max >= cfg.branching),
          "branching_max", f"null or an integer ≥ branching={cfg.branching}", cfg.branching_max)
    check(_is_num(cfg.mutually_exclusive_portion) and 0 <= cfg.mutually_exclusive_portion <= 1,
          "mutually_exclusive_portion", "in [0, 1]", cfg.mutually_exclusive_portion)
    check(_is_int(cfg.mutually_exclusive_min_depth) and cfg.mutually_exclusive_min_depth >= 0,
          "mutually_exclusive_min_depth", "an integer ≥ 0", cfg.mutually_exclusive_min_depth)
    check(cfg.mutually_exclusive_max_depth is None or (_is_int(cfg.mutually_exclusive_max_depth) and
                                                       cfg.mutually_exclusive_max_depth
                                                       >= cfg.mutually_exclusive_min_depth),
          "mutually_exclusive_max_depth", "null or an integer ≥ mutually_exclusive_min_depth",
          cfg.mutually_exclusive_max_depth)
    for name in ("compensate_probabilities", "scale_children_by_parent"):
        check(isinstance(getattr(cfg, name), bool), name, "true or false", getattr(cfg, name))
    if cfg.correlation == "factor":
        check(cfg.correlation_rank <= 4096, "correlation_rank", "≤ 4096 for correlation=factor",
              cfg.correlation_rank)


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
        self.levels, self.top = [], (torch.as_tensor(self.depth) == 0).nonzero()[:, 0]
        top = self.top.numpy()
        order = np.argsort(par, kind="stable")  # children grouped by parent: CSR kid_ptr / kids
        n_kids = np.bincount(par[par >= 0], minlength=F)
        self._kids = order[len(order) - int(n_kids.sum()):]
        self._kid_ptr = np.r_[0, np.cumsum(n_kids)]
        # the mean L0 estimate: p_f Π p_ancestors, an exclusive group's p's scaled down to sum ≤ 1
        group = np.bincount(par[par >= 0], weights=self.prob[par >= 0], minlength=F)
        self._eff = self.prob.copy()
        for level in range(1, int(self.depth.max(initial=0)) + 1):
            at = np.flatnonzero(self.depth == level)
            p = par[at]
            self._eff[at] *= self._eff[p] / np.where(self.exclusive[p], np.maximum(group[p], 1.0), 1.0)
        if self.factor is None:
            self._indep = TopSampler(self.prob[top], np.zeros(len(top), dtype=np.int64), np.ones(len(top)), 0.0)
            self._top_feat = top[self._indep.order]
        else:
            L = self.factor.numpy()
            self._L = np.ascontiguousarray(L)  # [F, rank]
            self._sd = np.sqrt(np.maximum(1 - (L.astype(np.float64) ** 2).sum(1), 0)).astype(np.float32)
            self._tau = ndtri(1 - self.prob).astype(np.float32)  # fires when z > τ
            inv_sd = 1 / np.maximum(self._sd[top].astype(np.float64), 1e-30)
            self._groups = -(-len(top) // GROUP)
            pad = self._groups * GROUP - len(top)
            self._Ls_T0_t = torch.from_numpy(np.pad(L[top].T * inv_sd, ((0, 0), (0, pad))).astype(np.float32))
            self._w0 = np.r_[self._tau[top] * inv_sd, np.full(pad, np.inf)].astype(np.float32)  # τ / sd

    @staticmethod
    def _realise(out_MD: np.ndarray, count, cols, vals, V_FD: np.ndarray) -> None:
        """out = Σ_active value · vector via torch's embedding_bag (about 2× scipy's CSR kernel at L0 ≈ 34)."""
        off = torch.from_numpy(np.r_[0, np.cumsum(count)[:-1]])
        out_MD[:] = torch.nn.functional.embedding_bag(
            torch.from_numpy(cols), torch.from_numpy(V_FD), off, mode="sum",
            per_sample_weights=torch.from_numpy(np.ascontiguousarray(vals, dtype=np.float32))).numpy()

    @property
    def expected_l0(self) -> float:
        """Σ_f p_f · Π p_ancestors (an exclusive group's p's scaled to sum ≤ 1): the mean L0 estimate of the
        memory check (exact without copula and exclusion; datasets report the measured L0)."""
        return float(self._eff.sum())

    def _fire_top(self, m: int, rng: np.random.Generator, u):
        """(row [A], feature [A]) of the firing top-level features (not hierarchy children), sorted by row."""
        if u is None:
            r, pos = self._indep.sample(m, rng)
            return r, self._top_feat[pos]
        return self._thinned(u, rng)

    def _thinned(self, u: np.ndarray, rng: np.random.Generator):
        """Top-level firing under the copula, exact by thinning. Given u, feature f fires with probability
        p_f = Φ(w_f), w_f = (L_f·u − τ_f) / sd_f (w from one matmul). Features are cut into groups of GROUP; a
        (sample, group) pair's bound q = Φ(max w) ≥ every p_f in it. Pairs with q > DENSE compare a uniform with
        each p_f; the others make each feature a candidate with probability q (geometric gaps) and keep it with
        probability p_f / q: every feature still fires independently with probability p_f."""
        top, G, S = self.top.numpy(), self._groups, GROUP
        block = max(1, (1 << 20) // (G * S))
        rows, feats = [], []
        for s in range(0, len(u), block):
            b = min(block, len(u) - s)
            W = np.empty((b, G * S), dtype=np.float32)
            # (L·u − τ) / sd: one matmul (torch's: several times numpy's speed at this shape) and a shift; the
            # padding columns have L = 0 and τ = ∞, so they never fire
            torch.mm(torch.from_numpy(u[s:s + b]), self._Ls_T0_t, out=torch.from_numpy(W))
            W -= self._w0
            q = ndtr(W.reshape(b, G, S).max(2))  # [b, G]
            dense = np.flatnonzero(q.ravel() > DENSE)  # (sample, group) pairs compared slot by slot
            if len(dense):
                Wd = W.reshape(b * G, S)[dense]
                n, k = np.nonzero(rng.random(Wd.shape) < ndtr(Wd))
                rows.append(s + dense[n] // G)
                feats.append(dense[n] % G * S + k)
            pair = np.flatnonzero((q.ravel() <= DENSE) & (q.ravel() > 0))
            qp = q.ravel()[pair]
            rate = -np.log1p(-qp)  # failures before a candidate: ⌊Exp(1) / rate⌋ is Geometric(q) − 1
            pos = (rng.standard_exponential(len(pair)) / rate).astype(np.int64)
            while len(pair):
                live = np.flatnonzero(pos < S)
                pair, qp, pos, rate = pair[live], qp[live], pos[live], rate[live]
                w = W.reshape(b * G, S)[pair, pos]
                keep = rng.random(len(pair)) * qp < ndtr(w)
                rows.append(s + pair[keep] // G)
                feats.append(pair[keep] % G * S + pos[keep])
                pos = pos + 1 + (rng.standard_exponential(len(pair)) / rate).astype(np.int64)
        r = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)
        f = top[np.concatenate(feats)] if feats else np.zeros(0, dtype=np.int64)
        o = np.argsort(r, kind="stable")
        return r[o], f[o]

    def _magnitudes(self, r, f, rng):
        v = self._mean[f] + self._std[f] * rng.standard_normal(len(f), dtype=np.float32)
        keep = v > 0  # relu: a zero is silent
        return r[keep], f[keep], v[keep]

    def _sample_chunk(self, m: int, rng: np.random.Generator):
        """Top-level features first; then level by level only the children of active parents draw their own
        firing (given the sample's copula latent u they are independent of everything else, so the draws
        SAELens makes for children of silent parents, which it then discards, need not be made)."""
        u = None if self.factor is None else rng.standard_normal((m, self._L.shape[1]), dtype=np.float32)
        r, f, v = self._magnitudes(*self._fire_top(m, rng, u), rng)
        out = [(r, f, v)]
        while len(r):
            c = self._kid_ptr[f + 1] - self._kid_ptr[f]  # children of each active entry
            has = np.flatnonzero(c)
            if not len(has):
                break
            pe = np.repeat(has, c[has])  # the parent's entry of each candidate child
            offs = np.arange(len(pe)) - np.repeat(np.cumsum(c[has]) - c[has], c[has])
            kid = self._kids[self._kid_ptr[f[pe]] + offs]
            if u is None:
                fire = rng.random(len(kid)) < self.prob[kid]
            else:
                z = np.einsum("ij,ij->i", self._L[kid], u[r[pe]])
                z += self._sd[kid] * rng.standard_normal(len(kid), dtype=np.float32)
                fire = self._tau[kid] < z
            pe, kid = pe[fire], kid[fire]
            kv = self._mean[kid] + self._std[kid] * rng.standard_normal(len(kid), dtype=np.float32)
            keep = kv > 0
            pe, kid, kv = pe[keep], kid[keep], kv[keep]
            pf = f[pe]
            sc = self.scale[pf]
            kv[sc] *= v[pe[sc]] / self._mean[pf[sc]]
            ex = np.flatnonzero(self.exclusive[pf])
            if len(ex):  # one uniformly drawn winner among the active children of each exclusive parent entry
                g = pe[ex]  # non-decreasing: a parent entry's children are one run
                start = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])
                n_run = np.diff(np.r_[start, len(g)])
                win = start + (rng.random(len(start)) * n_run).astype(np.int64)
                alive = np.ones(len(kid), dtype=bool)
                alive[ex] = False
                alive[ex[np.minimum(win, start + n_run - 1)]] = True
                pe, kid, kv = pe[alive], kid[alive], kv[alive]
            r, f, v = r[pe], kid, kv
            out.append((r, f, v))
        rows = np.concatenate([o[0] for o in out])
        order = np.argsort(rows, kind="stable")
        return (np.bincount(rows, minlength=m), np.concatenate([o[1] for o in out])[order],
                np.concatenate([o[2] for o in out])[order])

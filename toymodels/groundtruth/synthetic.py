"""Synthetic ground-truth dictionaries and an exact sampler that costs O(active features) per sample.

A dictionary is n unit feature vectors in d dims plus a law saying which features fire and how strongly. A
sample is h = Σ_f a_f · v_f over the active features f. `Dictionary.sample(n)` returns a `GroundTruthDataset`
holding h and the true activations (a sparse COO triple), so any SAE can be scored against the truth.

How firing works (exact in distribution; sampling.py says how):
- Top-level features (every feature that is not a hierarchy child) fire independently with probability p_f, or
  through a low-rank Gaussian copula: each top-level feature loads on one of `correlation_rank` latent factors
  with a random sign, z_f = σ_f √ρ u_{g_f} + √(1−ρ) ε_f with u ~ N(0, I_rank) per sample, and f fires when
  z_f < Φ⁻¹(p_f). Its marginal stays p_f; features on the same factor co-fire (same sign) or avoid each other
  (opposite signs), with latent correlation ±ρ (a rank-`correlation_rank` correlation matrix off the
  diagonal).
- Hierarchy children fire only when their parent fires, with P(child | parent) = min(1, p_child / P(parent))
  so they keep their marginal where possible; with mutual exclusion at most one sibling fires (siblings'
  conditionals are scaled down to sum ≤ 1 and one is picked by a single draw). `Dictionary.density` holds the
  exact marginals.
- Magnitudes are |N(μ_f, magnitude_std)|, drawn per active feature.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy import sparse

from toymodels.config import SEED_RANGE, _is_int, _is_num, _is_seed, check_types
from toymodels.errors import check
from toymodels.groundtruth.sampling import ChildSampler, TopSampler
from toymodels.seeding import generator

FIRING = ("constant", "linear", "zipf")
MAGNITUDE_MEANS = ("constant", "linear", "exponential")
CORRELATIONS = ("none", "low_rank", "factor")
TREE_NODES = ("random", "frequent")
LAWS = ("toymodels", "saelens")
STD_LAWS = ("constant", "linear", "exponential", "folded_normal")
SAELENS_ONLY = (("branching_max", None), ("mutually_exclusive_portion", 1.0), ("mutually_exclusive_min_depth", 0),
                ("mutually_exclusive_max_depth", None), ("compensate_probabilities", False),
                ("scale_children_by_parent", False))
"""Options (with their defaults) that only the saelens law has."""


@dataclass
class SyntheticConfig:
    """A synthetic ground-truth dictionary and its firing law (defaults: a CPU-sized SynthSAEBench-like
    setting)."""

    n_features: int = 1024
    """Number of ground-truth features n (≥ 1)."""
    d_model: int = 128
    """Dimension d of the activations (≥ 1)."""
    orthogonality_steps: int = 0
    """Gradient steps (≥ 0) pushing the random unit vectors apart (minimising mean squared off-diagonal
    cosine)."""
    firing: str = "zipf"
    """Firing probability vs feature rank: constant (p_max), linear (p_max → p_min), zipf (∝
    (i+1)^−zipf_exponent, rescaled to span [p_min, p_max])."""
    p_max: float = 0.4
    """Largest firing probability, in (0, 1]."""
    p_min: float = 0.002
    """Smallest firing probability, in (0, p_max] (unused for constant)."""
    zipf_exponent: float = 0.5
    """Zipf exponent α > 0."""
    magnitude_mean: str = "constant"
    """Mean magnitude μ_f vs feature index: constant (magnitude_max), linear (max → min), exponential
    (geometric from max to min)."""
    magnitude_max: float = 1.0
    """Largest mean magnitude (> 0)."""
    magnitude_min: float = 1.0
    """Smallest mean magnitude, in (0, magnitude_max]."""
    magnitude_std: float = 0.5
    """Spread: an active feature's magnitude is |N(μ_f, magnitude_std)| (folded normal); 0 gives exactly μ_f
    (≥ 0)."""
    correlation: str = "low_rank"
    """none (independent top-level features) or low_rank (Gaussian copula: each feature loads on one of
    correlation_rank latent factors with a random sign)."""
    correlation_rank: int = 16
    """Rank of the low-rank copula latent (≥ 1)."""
    correlation_scale: float = 0.3
    """ρ, the share of each feature's copula variance explained by its latent factor, in [0, 1)."""
    n_roots: int = 0
    """Hierarchy: number of trees (≥ 0; 0 = no hierarchy); `tree_nodes` picks their features."""
    branching: int = 4
    """Hierarchy: children per node (≥ 1)."""
    depth: int = 2
    """Hierarchy: levels per tree including the root (≥ 2)."""
    mutually_exclusive: bool = True
    """Hierarchy: at most one sibling fires at a time."""
    tree_nodes: str = "random"
    """Hierarchy: which features become tree nodes: random, or frequent (the most frequent features, roots
    first and then level by level in firing-rate order, as SynthSAEBench lays out its trees)."""
    law: str = "toymodels"
    """How firing, magnitudes and the hierarchy combine. toymodels: children fire given their parent with the
    exact conditional min(1, p_child / P(parent)), magnitudes |N(μ_f, σ_f)|. saelens: SAELens's SyntheticModel
    (saelens_law.py): every feature draws its own firing (through the copula, if any), magnitude relu(μ_f + σ_f
    N), then the hierarchy silences children of silent parents and keeps one random active sibling per mutually
    exclusive group; trees are laid out breadth first on features 0, 1, 2, … (`tree_nodes` is not used)."""
    branching_max: int | None = None
    """saelens law: children per node drawn uniformly from [branching, branching_max] (null: exactly
    `branching`)."""
    mutually_exclusive_portion: float = 1.0
    """saelens law: with mutually_exclusive, the fraction (in [0, 1]) of eligible parents (≥ 2 children, tree
    depth within the range below) whose children exclude each other, drawn at random."""
    mutually_exclusive_min_depth: int = 0
    """saelens law: shallowest parent depth (0 = roots, ≥ 0) whose children may be mutually exclusive."""
    mutually_exclusive_max_depth: int | None = None
    """saelens law: deepest such parent depth (≥ min depth; null: no limit)."""
    compensate_probabilities: bool = False
    """saelens law: raise each child's firing probability by 1 / p_parent (and, in a mutually exclusive group,
    by 1 + Σ other siblings' p / p_parent), capped at 1, as SAELens does, so marginals stay near p_f."""
    scale_children_by_parent: bool = False
    """saelens law: an active child's magnitude is multiplied by its parent's magnitude / the parent's mean."""
    magnitude_std_law: str = "constant"
    """Per-feature spread σ_f: constant (magnitude_std), linear or exponential (magnitude_std → magnitude_std_end
    over the features), folded_normal (σ_f = |N(magnitude_std, magnitude_std_end)|, drawn once per feature)."""
    magnitude_std_end: float = 0.0
    """The last feature's σ for linear/exponential (> 0 there), the folded normal's spread (> 0 there)."""
    bias: float = 0.0
    """Norm (≥ 0) of a random bias vector added to every sample (SAELens's dictionary bias; 0 = none)."""
    orthogonality_lr: float = 0.01
    """Adam learning rate (> 0) of the orthogonality steps."""
    seed: int = 0
    """Seeds the dictionary (vectors, probabilities, tree, loadings); sampling takes its own seed."""

    def __post_init__(self):
        check_types(self)
        for name, lo in (("n_features", 1), ("d_model", 1), ("orthogonality_steps", 0),
                         ("correlation_rank", 1), ("n_roots", 0), ("branching", 1), ("depth", 2)):
            v = getattr(self, name)
            check(_is_int(v) and v >= lo, name, f"an integer ≥ {lo}", v)
        check(_is_seed(self.seed), "seed", SEED_RANGE, self.seed)
        check(self.firing in FIRING, "firing", f"one of {', '.join(FIRING)}", self.firing)
        check(self.magnitude_mean in MAGNITUDE_MEANS, "magnitude_mean",
              f"one of {', '.join(MAGNITUDE_MEANS)}", self.magnitude_mean)
        check(self.correlation in CORRELATIONS, "correlation", f"one of {', '.join(CORRELATIONS)}",
              self.correlation)
        check(_is_num(self.p_max) and 0 < self.p_max <= 1, "p_max", "in (0, 1]", self.p_max)
        check(_is_num(self.p_min) and 0 < self.p_min <= self.p_max, "p_min", f"in (0, p_max={self.p_max}]",
              self.p_min)
        check(_is_num(self.zipf_exponent) and self.zipf_exponent > 0, "zipf_exponent", "a number > 0",
              self.zipf_exponent)
        check(_is_num(self.magnitude_max) and self.magnitude_max > 0, "magnitude_max", "a number > 0",
              self.magnitude_max)
        check(_is_num(self.magnitude_min) and 0 < self.magnitude_min <= self.magnitude_max, "magnitude_min",
              f"in (0, magnitude_max={self.magnitude_max}]", self.magnitude_min)
        check(_is_num(self.magnitude_std) and self.magnitude_std >= 0, "magnitude_std", "a number ≥ 0",
              self.magnitude_std)
        check(_is_num(self.correlation_scale) and 0 <= self.correlation_scale < 1, "correlation_scale",
              "in [0, 1)", self.correlation_scale)
        check(self.tree_nodes in TREE_NODES, "tree_nodes", f"one of {', '.join(TREE_NODES)}", self.tree_nodes)
        check(isinstance(self.mutually_exclusive, bool), "mutually_exclusive", "true or false",
              self.mutually_exclusive)
        from toymodels.groundtruth.saelens_law import check_law_options

        check_law_options(self)
        tree = tree_size(self.n_roots, self.branching_max or self.branching, self.depth, self.n_features)
        check(tree <= self.n_features, "n_roots", f"small enough that the trees ("
              f"{f'{tree} nodes' if tree <= self.n_features else 'more nodes than that'}; branching "
              f"{self.branching}, depth {self.depth}) fit in "
              f"n_features={self.n_features}", self.n_roots)


def tree_size(n_roots: int, branching: int, depth: int, bound: int) -> int:
    """Nodes in `n_roots` trees of `depth` levels with `branching` children each, counted level by level and
    stopped as soon as the count passes `bound` (then bound + 1 is returned): O(log bound) steps for any depth."""
    if n_roots == 0:
        return 0
    if branching == 1:
        return min(n_roots * depth, bound + 1)
    total, level = 0, n_roots
    for _ in range(depth):
        total += level
        if total > bound:
            return bound + 1
        level *= branching
    return total


def _firing_probs(cfg: SyntheticConfig) -> np.ndarray:
    i = np.arange(cfg.n_features, dtype=np.float64)
    if cfg.firing == "constant":
        return np.full(cfg.n_features, cfg.p_max)
    if cfg.firing == "linear":
        return cfg.p_max + (cfg.p_min - cfg.p_max) * i / max(1, cfg.n_features - 1)
    z = (i + 1) ** -cfg.zipf_exponent
    zmin = float(cfg.n_features) ** -cfg.zipf_exponent
    return cfg.p_min + (cfg.p_max - cfg.p_min) * (z - zmin) / max(1.0 - zmin, 1e-12)


def _magnitude_means(cfg: SyntheticConfig) -> np.ndarray:
    t = np.arange(cfg.n_features) / max(1, cfg.n_features - 1)
    hi, lo = cfg.magnitude_max, cfg.magnitude_min
    if cfg.magnitude_mean == "constant":
        return np.full(cfg.n_features, hi)
    if cfg.magnitude_mean == "linear":
        return hi + (lo - hi) * t
    return hi * (lo / hi) ** t


def random_unit_vectors(n: int, d: int, gen: torch.Generator, steps: int = 0, lr: float = 0.01) -> torch.Tensor:
    """[n, d] random unit vectors; `steps` > 0 runs Adam (learning rate `lr`) on the mean squared off-diagonal
    cosine to spread them."""
    V = torch.randn(n, d, generator=gen)
    V = V / V.norm(dim=1, keepdim=True)
    if steps:
        V.requires_grad_(True)
        opt = torch.optim.Adam([V], lr=lr)
        for _ in range(steps):
            U = V / V.norm(dim=1, keepdim=True)
            G = U @ U.T
            loss = (G.square().sum() - n) / max(1, n * (n - 1))
            opt.zero_grad()
            loss.backward()
            opt.step()
        V = V.detach()
        V = V / V.norm(dim=1, keepdim=True)
    return V


def _csr_matmul_into(out_MD: np.ndarray, indptr, cols, vals, V_FD: np.ndarray):
    """out = CSR(indptr, cols, vals) @ V, written in place (scipy's kernel, which releases the GIL; a copy
    of `A @ V` if its private entry point is gone)."""
    try:
        from scipy.sparse._sparsetools import csr_matvecs
    except ImportError:  # pragma: no cover - older/newer scipy layouts
        out_MD[:] = sparse.csr_array((vals, cols, indptr), shape=(len(out_MD), len(V_FD))) @ V_FD
        return
    out_MD.fill(0)
    csr_matvecs(len(out_MD), len(V_FD), V_FD.shape[1], indptr, cols, vals, V_FD.ravel(), out_MD.ravel())


class Dictionary:
    """A built synthetic dictionary: vectors, firing law, hierarchy and copula (all from `cfg.seed`). With
    `cfg.law == "saelens"` this is a `saelens_law.SAELensDictionary`."""

    bias: torch.Tensor | None = None
    """[d] added to every sample (SyntheticConfig.bias), or None."""

    def __new__(cls, cfg=None, *args, **kwargs):
        if cls is Dictionary and getattr(cfg, "law", "toymodels") == "saelens":
            from toymodels.groundtruth.saelens_law import SAELensDictionary

            cls = SAELensDictionary
        return super().__new__(cls)

    def __init__(self, cfg: SyntheticConfig):
        from toymodels.budget import FLOAT, check_memory

        self.cfg = cfg
        F = cfg.n_features
        gram = 4 * F * F if cfg.orthogonality_steps else 0  # the cosine matrix of the spreading steps
        check_memory(FLOAT * (3 * F * cfg.d_model + gram) + 200 * F,
                     f"dictionary ({F} features in {cfg.d_model} dims)")
        gen = generator(cfg.seed, "dictionary")  # unrelated to any SAE init seeded with cfg.seed
        self.vectors = random_unit_vectors(F, cfg.d_model, gen, cfg.orthogonality_steps, cfg.orthogonality_lr)
        base = _firing_probs(cfg)
        self.mag_mean = torch.tensor(_magnitude_means(cfg), dtype=torch.float32)  # [F]
        # hierarchy: random (or the most frequent) features become tree nodes, laid out level by level
        self.parent = torch.full((F,), -1, dtype=torch.long)  # [F] parent feature, -1 for top-level
        self.levels: list[torch.Tensor] = []  # child features per level, [n_parents_at_level, branching]
        if cfg.n_roots:
            perm = torch.randperm(F, generator=gen)  # drawn either way: the vectors' stream stays the same
            if cfg.tree_nodes == "frequent":
                perm = torch.from_numpy(np.argsort(-base, kind="stable"))
            nodes, used = perm[:cfg.n_roots], cfg.n_roots
            for _ in range(cfg.depth - 1):
                kids = perm[used:used + len(nodes) * cfg.branching].view(len(nodes), cfg.branching)
                used += kids.numel()
                self.parent[kids] = nodes[:, None].expand_as(kids)
                self.levels.append(kids)
                nodes = kids.flatten()
        self.top = (self.parent < 0).nonzero()[:, 0]  # [T] top-level features
        # exact marginals and conditionals, top-down
        density = np.zeros(F)
        density[self.top.numpy()] = base[self.top.numpy()]
        self.cond: list[torch.Tensor] = []  # per level, [n_parents, branching] P(child | parent)
        self._kids: list[ChildSampler] = []  # per level, its (float64) sampler
        for kids in self.levels:
            par = self.parent[kids[:, 0]].numpy()
            c = np.minimum(1.0, base[kids.numpy()] / density[par][:, None])
            if cfg.mutually_exclusive:
                c = c / np.maximum(1.0, c.sum(1, keepdims=True))
            density[kids.numpy()] = c * density[par][:, None]
            self.cond.append(torch.tensor(c, dtype=torch.float32))
            self._kids.append(ChildSampler(kids, c, self.parent, F, cfg.mutually_exclusive))
        self.density = torch.tensor(density, dtype=torch.float32)  # [F] exact marginal firing probabilities
        # copula: each top-level feature loads on one latent factor with a random sign
        T = len(self.top)
        rho = cfg.correlation_scale if cfg.correlation == "low_rank" else 0.0
        self.factor = torch.randint(cfg.correlation_rank, (T,), generator=gen)  # [T]
        self.sign = torch.randint(2, (T,), generator=gen) * 2 - 1  # [T] ±1
        self.rho = rho
        self._top = TopSampler(density[self.top.numpy()], self.factor, self.sign, rho)
        self._top_sorted = self.top.numpy()[self._top.order]  # sorted position → feature
        self._mag_mean = self.mag_mean.numpy()
        self._finish(cfg)

    def _finish(self, cfg: SyntheticConfig) -> None:
        """The per-feature spreads and the bias (own streams: the dictionary's draws above stay the same)."""
        from toymodels.groundtruth.saelens_law import dictionary_bias, magnitude_stds

        self.mag_std = magnitude_stds(cfg)  # [F] float32 σ_f
        self._mag_std = None if cfg.magnitude_std_law == "constant" else self.mag_std.numpy()
        self.bias = dictionary_bias(cfg)

    @staticmethod
    def _realise(out_MD: np.ndarray, count, cols, vals, V_FD: np.ndarray) -> None:
        """out = Σ_active value · vector, row by row (`count` active entries per row, in row order)."""
        _csr_matmul_into(out_MD, np.r_[0, np.cumsum(count)], cols, vals, V_FD)

    def superposition(self, percentiles=(95, 99)) -> dict:
        """Per-feature max / percentile |cos| with the other feature vectors and their means (ρ_mm: mean max)."""
        from toymodels.groundtruth.saelens_law import superposition_stats

        return superposition_stats(self.vectors, percentiles)

    @property
    def loadings(self) -> torch.Tensor:
        """[T, rank] copula loadings of the top-level features: one ±√ρ per row (all 0 without a copula)."""
        L = torch.zeros(len(self.top), self.cfg.correlation_rank)
        L[torch.arange(len(self.top)), self.factor] = self.sign * math.sqrt(self.rho)
        return L

    @property
    def expected_l0(self) -> float:
        return float(self.density.sum())

    def sample(self, n: int, seed: int = 0, chunk: int = 1 << 14, threads: int | None = None):
        """`n` samples as a GroundTruthDataset (hidden [n, d], true acts as a COO triple sorted by row); cost
        O(n · L0 · d). Chunks of `chunk` samples are drawn from their own streams seeded by (seed, chunk
        index) on `threads` threads (default: torch's), so the samples depend on seed and chunk only."""
        from concurrent.futures import ThreadPoolExecutor

        from toymodels.groundtruth.files import GroundTruthDataset
        from toymodels.progress import progress

        check(_is_int(n) and n >= 1, "n_samples", "an integer ≥ 1", n)
        check(_is_int(chunk) and chunk >= 1, "chunk", "an integer ≥ 1", chunk)
        check(_is_seed(seed), "sample_seed", SEED_RANGE, seed)
        check(threads is None or (_is_int(threads) and threads >= 1), "threads", "null or an integer ≥ 1", threads)
        from toymodels.budget import FLOAT, check_memory

        # hidden [n, d] float32, and the true activations (row, feature, value: 20 bytes each) held twice while the
        # chunks are joined
        check_memory(FLOAT * n * self.cfg.d_model + 40 * n * self.expected_l0,
                     f"sample ({n} samples × d_model={self.cfg.d_model}, mean L0 {self.expected_l0:.1f})")
        hidden = torch.empty(n, self.cfg.d_model)
        h_ND, V_FD = hidden.numpy(), self.vectors.numpy()
        starts = range(0, n, chunk)
        threads = max(1, min(threads or torch.get_num_threads(), len(starts)))
        bias = None if self.bias is None else self.bias.numpy()

        def one(i_start):
            i, start = i_start
            m = min(chunk, n - start)
            rng = np.random.default_rng([int(seed), i])
            count, cols, vals = self._sample_chunk(m, rng)
            self._realise(h_ND[start:start + m], count, cols, vals, V_FD)
            if bias is not None:
                h_ND[start:start + m] += bias
            return np.repeat(np.arange(start, start + m), count), cols, vals

        with ThreadPoolExecutor(threads) as pool:
            parts = list(progress(pool.map(one, enumerate(starts)), total=len(starts), desc="sample"))
        meta = {"source": "synthetic", "n_samples": n, "sample_seed": int(seed), "sample_chunk": chunk,
                "expected_l0": self.expected_l0, "copula_clip_fraction": 0.0,  # exact tails: nothing clipped
                **({"bias_norm": float(self.bias.norm())} if self.bias is not None else {})}
        return GroundTruthDataset(hidden=hidden, feature_vectors=self.vectors.clone(),
                                  acts_rows=torch.from_numpy(np.concatenate([p[0] for p in parts])),
                                  acts_cols=torch.from_numpy(np.concatenate([p[1] for p in parts])),
                                  acts_values=torch.from_numpy(np.concatenate([p[2] for p in parts])),
                                  n_features=self.cfg.n_features, parent=self.parent.clone(),
                                  density=None if self.density is None else self.density.clone(), meta=meta)

    def _sample_chunk(self, m: int, rng: np.random.Generator):
        """(count [m] active features per sample, feature [A], magnitude [A]) with A sorted by sample."""
        r, pos = self._top.sample(m, rng)
        levels = [(r, self._top_sorted[pos])]
        for kids in self._kids:
            levels.append(kids(*levels[-1], rng))
        if len(levels) == 1:
            count, cols = np.bincount(r, minlength=m), levels[0][1]
        else:  # interleave the levels row by row: level l of row r follows levels < l of that row
            counts = [np.bincount(r, minlength=m) for r, _ in levels]
            count = np.sum(counts, 0)
            at = np.cumsum(count) - count  # where each row starts
            cols = np.empty(int(count.sum()), dtype=np.int64)
            for (r, f), c in zip(levels, counts, strict=True):
                cols[at[r] + np.arange(len(r)) - (np.cumsum(c) - c)[r]] = f
                at += c
        vals = self._mag_mean[cols]
        if self._mag_std is not None:
            vals = vals + self._mag_std[cols] * rng.standard_normal(len(cols), dtype=np.float32)
        elif self.cfg.magnitude_std:
            vals = vals + np.float32(self.cfg.magnitude_std) * rng.standard_normal(len(cols), dtype=np.float32)
        return count, cols, np.abs(vals)

"""Exact expected losses of small ReLU-output models, their numerical optimum, and the phases they predict.

Setup (the trainer's loss): x_f = Bernoulli(p_f)·U[0,1] independently; x' = ReLU(W Wᵀ x + b) (W: [F, H]);
loss = Σ_f I_f E[(x'_f − x_f)²] / F. Feature f's error is a sum over the on/off patterns S of the features:
P(S) · E[(ReLU(Σ_{g∈S} G_fg x_g + b_f) − [f∈S] x_f)²], G = W Wᵀ. For |S| ≤ 3 each term is integrated exactly:
the innermost magnitude analytically (the integrand is a clipped quadratic), the outer ones by Gauss–Legendre
on the pieces between the kinks, where the integrand is a polynomial of low degree (so the rule is exact).

2 → 1 (feature 0 importance 1, extra feature 1 importance r, both density p): `optimum_2to1` minimises the loss
over all four parameters (w0, w1, b0, b1). Given W the biases separate, so each feature's best error
e(w_f, w_g) = min_b is tabulated on a W grid (step 0.05, |w| ≤ 1.3), the global minimum of e(w0, w1) + r·e(w1, w0)
is read off the grid, then polished by L-BFGS-B. Its kinds: `ignore` (w1 = 0, extra feature outputs its
mean), `dedicate` (w0 = 0), `antipodal` (opposite signs, both norms ≥ 0.5; unequal norms at r ≠ 1, bias of
either sign) and `partial` (opposite signs, one norm in (0.05, 0.5): a feature kept weakly). The phase of
the extra feature uses the same rule as the trained models (`toymodels.analysis.phases`) on the optimal W.

The older closed-form candidates (`candidate_losses_2to1`: ignore r·Var/2, dedicate Var/2, and an antipodal
pair forced to equal norms and bias ≤ 0) are upper bounds on the optimum, not the optimum.

3 → 2 (`losses_3to2`): features 0, 1 importance 1, extra feature 2 importance r. Candidates: the extra feature
shares a dimension with feature 1 while feature 0 keeps one (loss 2·L*₂→₁(p, r)/3; its phase is the 2 → 1
optimum's), or it takes a dimension and features 0, 1 share the other (2·L*₂→₁(p, 1)/3: dedicated). A third,
all three at 120° (`triangle_loss`, norms and biases optimised), loses to them at every point tested, so
`phase_3to2` leaves it out.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np
from scipy.optimize import minimize

from toymodels.analysis import REPRESENTED_NORM, SUPERPOSED_INTERFERENCE

PHASES = ("not_represented", "dedicated", "superposition")
KINDS = ("ignore", "dedicate", "antipodal", "partial")
ZERO_NORM = 0.05
"""A weight below this in the optimum counts as 0 (kinds `ignore` / `dedicate`)."""

_X2, _W2 = np.polynomial.legendre.leggauss(2)  # exact for cubics on [−1, 1]
_X3, _W3 = np.polynomial.legendre.leggauss(3)  # exact for quintics


def variance(p):
    """Var of x = Bernoulli(p)·U[0,1]."""
    return np.asarray(p) / 3 - np.asarray(p) ** 2 / 4


def _arrays(*vs):
    return np.broadcast_arrays(*(np.asarray(v, float) for v in vs))


def _inner(beta, k, m):
    """∫₀¹ (ReLU(β v + k) − m)² dv (elementwise): the clipped quadratic integrated on its active interval."""
    beta, k, m = _arrays(beta, k, m)
    z = np.clip(-k / np.where(beta == 0, 1.0, beta), 0, 1)
    lo = np.where(beta > 0, z, 0.0)
    hi = np.where(beta < 0, z, np.where(beta == 0, (k > 0) * 1.0, 1.0))
    n = np.maximum(hi - lo, 0)
    d = k - m
    return n * (d * d + d * beta * (lo + hi) + beta * beta * (lo * lo + lo * hi + hi * hi) / 3) + (1 - n) * m * m


def _pieces(breaks, nodes, weights, f):
    """Σ over the pieces between sorted `breaks` [P+1, ...] of Gauss–Legendre ∫ f(t) dt on each piece."""
    breaks = np.sort(breaks, axis=0)
    total = 0.0
    for a, b in zip(breaks[:-1], breaks[1:], strict=True):
        t = (a + b)[..., None] / 2 + (b - a)[..., None] / 2 * nodes  # [..., nodes]
        total = total + (b - a) / 2 * (f(t) @ weights)
    return total


def pair_term(alpha, beta, b, tau):
    """E[(ReLU(α u + β v + b) − τ u)²], u, v ~ U[0,1] (elementwise; β = 0 gives the one-variable term)."""
    alpha, beta, b, tau = _arrays(alpha, beta, b, tau)
    sa = np.where(alpha == 0, 1.0, alpha)
    cut = [np.clip(-x / sa, 0, 1) for x in (b, b + beta)]  # where v's active interval reaches 0 or 1
    breaks = np.stack([np.zeros_like(b), *cut, np.ones_like(b)])
    return _pieces(breaks, _X2, _W2,
                   lambda u: _inner(beta[..., None], alpha[..., None] * u + b[..., None], tau[..., None] * u))


def triple_term(alpha, beta, gamma, b):
    """E[(ReLU(α u + β v + γ w + b) − u)²], u, v, w ~ U[0,1]: `pair_term` at offset b + γw, integrated over w."""
    alpha, beta, gamma, b = _arrays(alpha, beta, gamma, b)
    sg = np.where(gamma == 0, 1.0, gamma)
    cut = [np.clip(-(b + s) / sg, 0, 1) for s in (0, alpha, beta, alpha + beta)]  # kinks of pair_term in b
    breaks = np.stack([np.zeros_like(b), *cut, np.ones_like(b)])
    return _pieces(breaks, _X3, _W3, lambda w: pair_term(alpha[..., None], beta[..., None],
                                                         b[..., None] + gamma[..., None] * w, 1.0))


def feature_error(p, a, c, b):
    """E[(ReLU(a x_f + c x_g + b) − x_f)²] for two features of density p: one feature's error in a 2 → 1 model."""
    p, a, c, b = _arrays(p, a, c, b)
    q = 1 - p
    return (q * q * np.maximum(b, 0) ** 2 + p * q * (pair_term(a, 0.0, b, 1.0) + pair_term(c, 0.0, b, 0.0))
            + p * p * pair_term(a, c, b, 1.0))


def expected_loss(W_IFH, b_IF, p_IF, imp_IF) -> np.ndarray:
    """[I] exact Σ_f I_f E[(x'_f − x_f)²]/F of relu_output models with F ≤ 3 independent U[0,1] features."""
    W_IFH, b_IF = np.asarray(W_IFH, float), np.asarray(b_IF, float)
    p_IF, imp_IF = (np.broadcast_to(np.asarray(v, float), b_IF.shape) for v in (p_IF, imp_IF))
    I, F = b_IF.shape
    if F > 3:
        raise ValueError(f"expected_loss: at most 3 features, got {F}")
    G_IFF = W_IFH @ W_IFH.transpose(0, 2, 1)
    total = np.zeros(I)
    for f in range(F):
        err = np.zeros(I)
        b = b_IF[:, f]
        for mask in range(2 ** F):
            on = [g for g in range(F) if mask >> g & 1]
            prob = np.prod([p_IF[:, g] if g in on else 1 - p_IF[:, g] for g in range(F)], axis=0)
            others = [G_IFF[:, f, g] for g in on if g != f]
            if not on:
                term = np.maximum(b, 0) ** 2
            elif f not in on:  # target 0: the first active feature plays u
                term = pair_term(others[0], others[1] if len(others) > 1 else 0.0, b, 0.0)
            elif len(on) <= 2:
                term = pair_term(G_IFF[:, f, f], others[0] if others else 0.0, b, 1.0)
            else:
                term = triple_term(G_IFF[:, f, f], others[0], others[1], b)
            err += prob * term
        total += imp_IF[:, f] * err
    return total / F


# ---------------------------------------------------------------- 2 → 1: the global optimum

STEP, LIM = 0.05, 1.3
"""The W grid of the 2 → 1 tables: weights k·STEP, |w| ≤ LIM."""
_TABLES: dict[float, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}


def _tables(ps) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per density p: (w [N], e [N, N], b [N, N]) with e[i, j] = min_b feature_error(p, w_i², w_i w_j, b) and
    b its argmin. One density at a time, so a table (and an argmin tie) never depends on what else was asked."""
    n = int(round(LIM / STEP))
    w = np.linspace(-n * STEP, n * STEP, 2 * n + 1)
    x, y = np.meshgrid(w[n:], w, indexing="ij")  # e(x, y) = e(−x, −y): tabulate x ≥ 0 only
    mirror = lambda t: np.concatenate([t[:0:-1, ::-1], t])  # noqa: E731  rows x < 0 from x > 0
    for q in sorted({float(q) for q in ps} - set(_TABLES)):
        e, b = _best_bias(q, x * x, x * y)
        _TABLES[q] = (w, mirror(e), mirror(b))
    return [_TABLES[float(q)] for q in ps]


def _best_bias(p, a, c, iters: int = 18):
    """(min_b feature_error, argmin) per element: coarse scan of b ∈ [−1.2, 0.8], then golden-section search."""
    p, a, c = np.broadcast_arrays(p, a, c)
    bs = np.linspace(-1.2, 0.8, 11)
    i = feature_error(p[..., None], a[..., None], c[..., None], bs).argmin(-1)
    lo, hi = bs[np.maximum(i - 1, 0)], bs[np.minimum(i + 1, len(bs) - 1)]
    g = (np.sqrt(5) - 1) / 2
    x1, x2 = hi - g * (hi - lo), lo + g * (hi - lo)
    f1, f2 = feature_error(p, a, c, x1), feature_error(p, a, c, x2)
    for _ in range(iters):
        left = f1 < f2  # the minimum is in [lo, x2]
        lo, hi = np.where(left, lo, x1), np.where(left, x2, hi)
        x_new = np.where(left, hi - g * (hi - lo), lo + g * (hi - lo))
        f_new = feature_error(p, a, c, x_new)
        x1, x2, f1, f2 = (np.where(left, x_new, x2), np.where(left, x1, x_new),
                          np.where(left, f_new, f2), np.where(left, f1, f_new))
    b = (lo + hi) / 2
    return feature_error(p, a, c, b), b


def loss_2to1(p: float, r: float, z) -> float:
    """Expected loss of the 2 → 1 model z = (w0, w1, b0, b1)."""
    w0, w1, b0, b1 = z
    e = feature_error(p, [w0 * w0, w1 * w1], w0 * w1, [b0, b1])  # both features in one call
    return float(e[0] + r * e[1]) / 2


class Optimum(NamedTuple):
    """The 2 → 1 optimum: expected loss, weights, biases, kind (`KINDS`) and the extra feature's phase."""

    loss: float
    W: np.ndarray
    """[2] w0, w1 (sign fixed so that w0 ≥ 0)."""
    b: np.ndarray
    """[2] b0, b1."""
    kind: str
    phase: str


def kind_of(w0, w1) -> np.ndarray:
    """Kind of a 2 → 1 solution from its weights (elementwise): ignore, dedicate, antipodal or partial."""
    n0, n1 = np.abs(w0), np.abs(w1)
    return np.where(n1 < ZERO_NORM, "ignore", np.where(n0 < ZERO_NORM, "dedicate", np.where(
        np.minimum(n0, n1) >= REPRESENTED_NORM, "antipodal", "partial"))).astype(object)


def phase_of(w0, w1) -> np.ndarray:
    """The extra feature's phase by `analysis.phases`' rule (H = 1: its interference is w0²)."""
    return np.where(np.abs(w1) < REPRESENTED_NORM, "not_represented", np.where(
        np.square(w0) >= SUPERPOSED_INTERFERENCE, "superposition", "dedicated")).astype(object)


def _grid_best(p: float, r) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(loss, w0, w1) [R] of the grid minimum of (e(w0, w1) + r·e(w1, w0))/2 for each r (a 1-D array)."""
    w, e, _ = _tables([p])[0]
    T = e[None] + np.asarray(r, float)[:, None, None] * e.T[None]  # [R, w0, w1]
    k = T.reshape(len(T), -1).argmin(1)
    i, j = np.unravel_index(k, e.shape)
    return T.reshape(len(T), -1)[np.arange(len(T)), k] / 2, w[i], w[j]


@functools.lru_cache(maxsize=4096)
def optimum_2to1(p: float, r: float) -> Optimum:
    """The global minimum of the 2 → 1 expected loss over (w0, w1, b0, b1) at density p, importance ratio r."""
    w, e, bias = _tables([p])[0]
    i, j = np.unravel_index(np.argmin(e + r * e.T), e.shape)
    res = minimize(lambda z: loss_2to1(p, r, z), [w[i], w[j], bias[i, j], bias[j, i]], method="L-BFGS-B",
                   options={"ftol": 1e-14, "gtol": 1e-10})
    v = float(variance(p))
    exact = [(r * v / 2, [1.0, 0.0, 0.0, p / 2]), (v / 2, [0.0, 1.0, p / 2, 0.0])]  # ignore, dedicate
    loss, z = min([(float(res.fun), res.x), *exact], key=lambda t: t[0])
    W = np.asarray(z[:2]) * (1 if z[0] >= 0 else -1)
    return Optimum(loss, W, np.asarray(z[2:]), str(kind_of(*W)), str(phase_of(*W)))


def phase_2to1(p, r, what: str = "phase") -> np.ndarray:
    """Phase (or kind, what="kind") of the extra feature at the optimum, at densities p × importances r
    (broadcast together), from the tabulated grid minimum (one table per distinct density)."""
    p, r = np.broadcast_arrays(np.asarray(p, float), np.asarray(r, float))
    out = np.empty(p.shape, object)
    for q in np.unique(p):
        sel = p == q
        _, w0, w1 = _grid_best(q, r[sel])
        out[sel] = (phase_of if what == "phase" else kind_of)(w0, w1)
    return out


def candidate_losses_2to1(p, r) -> dict[str, np.ndarray]:
    """The closed-form candidates (upper bounds on the optimum): ignore r·Var/2, dedicate Var/2, and an
    antipodal pair with equal norms and bias ≤ 0, (1 + r)·G(p)/2."""
    p, r = np.broadcast_arrays(np.asarray(p, float), np.asarray(r, float))
    g = np.vectorize(lambda q: antipodal_equal(float(q))[0], otypes=[float])(p)
    v = variance(p)
    return {"ignore": r * v / 2, "dedicate": v / 2, "antipodal_equal": (1 + r) * g / 2}


@functools.lru_cache(maxsize=4096)
def antipodal_equal(p: float) -> tuple[float, float, float]:
    """(G, s, t): one feature's error in the antipodal pair W = ±√s, b = −t, minimised over s > 0, t ≥ 0."""
    def f(z):
        return float(feature_error(p, z[0], -z[0], -z[1]))
    best = min((minimize(f, z0, method="L-BFGS-B", bounds=[(1e-3, 4.0), (0.0, 2.0)],
                         options={"ftol": 1e-15, "gtol": 1e-11}) for z0 in ([1.0, 0.0], [1.0, 0.5])),
               key=lambda res: res.fun)
    return float(best.fun), float(best.x[0]), float(best.x[1])


# ---------------------------------------------------------------- 3 → 2: candidates

def triangle_loss(p: float, r: float) -> tuple[float, np.ndarray]:
    """(loss, z) of three features at 120° in 2 dims: norms n (features 0, 1), m (extra), biases b, c."""
    ang = np.deg2rad([90.0, 210.0, 330.0])
    dirs = np.stack([np.cos(ang), np.sin(ang)], 1)  # [3, 2]: extra feature first, then features 0, 1

    def f(z):
        n, m, b, c = z
        W = (dirs * np.array([m, n, n])[:, None])[None]
        return float(expected_loss(W, np.array([[c, b, b]]), p, np.array([[r, 1.0, 1.0]]))[0])
    best = minimize(f, [1.0, 1.0, 0.0, 0.0], method="Nelder-Mead", options={"xatol": 1e-6, "fatol": 1e-14})
    return float(best.fun), best.x


def losses_3to2(p: float, r: float) -> dict[str, float]:
    """Expected loss of each 3 → 2 candidate (see the module docstring) at density p, extra importance r."""
    return {"share": 2 * optimum_2to1(p, r).loss / 3, "own_dim": 2 * optimum_2to1(p, 1.0).loss / 3,
            "triangle": triangle_loss(p, r)[0]}


def phase_3to2(p, r) -> np.ndarray:
    """Phase of the extra feature at the better of the `share` and `own_dim` 3 → 2 candidates (elementwise over
    p × r broadcast), from the tabulated 2 → 1 optima (the triangle, slower, loses at every point tested)."""
    p, r = np.broadcast_arrays(np.asarray(p, float), np.asarray(r, float))
    out = np.empty(p.shape, object)
    for q in np.unique(p):
        sel = p == q
        share, w0, w1 = _grid_best(q, r[sel])
        own = _grid_best(q, [1.0])[0]
        out[sel] = np.where(share <= own, phase_of(w0, w1), "dedicated")
    return out


LINE_DENSITIES = tuple(np.geomspace(0.0085, 1.0, 18))
"""Densities at which the figures draw the theory's boundary lines (shared, so their tables are reused)."""


def boundaries(phase_fn, p, r_grid=None) -> dict[str, np.ndarray]:
    """Importance r at each change of `phase_fn(p, r)` along r, per density p: {"left|right": r [len(p)]}, NaN
    where that boundary is absent (located on a log grid of 600 points over [0.05, 20])."""
    r_grid = np.geomspace(0.05, 20, 600) if r_grid is None else np.asarray(r_grid, float)
    p = np.atleast_1d(np.asarray(p, float))
    out: dict[str, np.ndarray] = {}
    for n, q in enumerate(p):
        lab = phase_fn(np.full(len(r_grid), q), r_grid)
        for k in np.flatnonzero(lab[1:] != lab[:-1]):
            key = f"{lab[k]}|{lab[k + 1]}"
            out.setdefault(key, np.full(len(p), np.nan))[n] = np.sqrt(r_grid[k] * r_grid[k + 1])
    return out


# ---------------------------------------------------------------- agreement

def near_boundary(phase_YX: np.ndarray) -> np.ndarray:
    """[Y, X] True where a 4-neighbour of the cell has a different phase (excluded from the agreement)."""
    ph = np.asarray(phase_YX)
    out = np.zeros(ph.shape, bool)
    out[1:] |= ph[1:] != ph[:-1]
    out[:-1] |= ph[:-1] != ph[1:]
    out[:, 1:] |= ph[:, 1:] != ph[:, :-1]
    out[:, :-1] |= ph[:, :-1] != ph[:, 1:]
    return out


def agreement(empirical_YX: np.ndarray, theory_YX: np.ndarray) -> tuple[float, int]:
    """(share of cells away from theoretical boundaries whose empirical phase equals the theory, cells)."""
    keep = ~near_boundary(theory_YX)
    n = int(keep.sum())
    if not n:
        return float("nan"), 0
    return float((np.asarray(empirical_YX)[keep] == np.asarray(theory_YX)[keep]).mean()), n

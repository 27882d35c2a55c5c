"""Exact O(active) sampling of the firing features, in numpy, one chunk of samples at a time.

Top-level features. Given the copula latent a = √ρ u_g of a (sample, factor g) pair, its features fire
independently with probability p_f(a) = Φ((t_f − sign_f a)/s), s = √(1−ρ) (a = 0 without a copula). u's
range is cut into K = GRID + 2 bins (GRID equal bins over ±GRID_SD plus the two tails); on bin k each feature
gets the bounds q_kf = sup p_f ≥ p_f(a) ≥ inf p_f. A cell fires with probability q iff a unit-rate Poisson
process lands in an interval of hazard h = −log(1 − q), so each (k, group) has its cells' hazards laid end to
end on one increasing axis (`ends`), and a pair is sampled as:
1. one uniform decides whether the pair has any candidate: P(none | g) = Σ_k P(k) e^{−H_kg}, exact over the
   latent, so the ~60% of pairs with none cost one compare and never draw their latent;
2. the others reuse that uniform to draw (k, first candidate cell) | alive from one table, then walk: after a
   hit in cell c the next point is end(c) + Exp(1) (memoryless, so a cell is never hit twice); each step is a
   guided table look-up (`GuidedSearch`), O(1) per candidate;
3. candidates are kept with probability p_f(a) / q_kf: kept outright when the uniform is below the bin's
   inf p / q (most), and only the rest draw the pair's exact a from the normal truncated to bin k.
Every step is exact (no clipping: the tail bins bound p by 1 or p(±GRID_SD)); Q_MAX caps probabilities at
1 − 1e-12 so hazards stay finite.

Hierarchy children fire given their parent's firing (one draw picks among mutually exclusive siblings).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import ndtr, ndtri

GRID = 256
"""Equal latent bins over ±GRID_SD (plus two tail bins) of the copula tables."""
GRID_SD = 6.0
"""The equal bins span ±GRID_SD standard deviations of the latent."""
Q_MAX = 1 - 1e-12
"""Probabilities are capped here so every hazard is finite (p = 1 fires with probability 1 − 1e-12)."""


def _normal_mass(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """P(lo ≤ u < hi) for u ~ N(0, 1), accurate in both tails."""
    upper = lo >= 0
    return np.where(upper, ndtr(-lo) - ndtr(-hi), ndtr(hi) - ndtr(lo))


class TopSampler:
    """Tables for the top-level features: `prob` [T] marginal firing probabilities, `factor` [T] the latent
    factor each loads on and `sign` [T] (±1), so its shift is sign · √ρ · u_factor; rho = 0 means independent
    features (one group). `order` [T] sorts features by group; positions returned index into it."""

    def __init__(self, prob, factor, sign, rho: float):
        prob = np.asarray(prob, dtype=np.float64)
        factor = np.asarray(factor, dtype=np.int64)
        sign = np.asarray(sign, dtype=np.float64)
        self.rho, s = float(rho), math.sqrt(1 - rho)
        if self.rho == 0:
            factor = np.zeros_like(factor)
        G, T = int(factor.max()) + 1, len(prob)
        self.order = np.argsort(factor, kind="stable")  # [T] sorted position → top-level index
        counts = np.bincount(factor, minlength=G)
        ge = np.cumsum(counts)
        gs = ge - counts
        self.thresh = ndtri(prob[self.order])  # [T] t_f = Φ⁻¹(p_f)
        self.sign = sign[self.order]  # [T]
        if self.rho > 0:
            e = np.linspace(-GRID_SD, GRID_SD, GRID + 1)
            lo_K, hi_K = np.r_[-np.inf, e], np.r_[e, np.inf]  # [K] latent bins (u units)
            P_K = _normal_mass(lo_K, hi_K)
            sd = math.sqrt(self.rho)
            plus = self.sign > 0  # p decreases in a for + features, increases for − ones
            a_sup = np.where(plus, sd * lo_K[:, None], -sd * hi_K[:, None])  # [K, T] shift where p is largest
            a_inf = np.where(plus, sd * hi_K[:, None], -sd * lo_K[:, None])
            with np.errstate(invalid="ignore"):  # t = ∞ (p = 1) minus an infinite shift: p stays 1
                sup_KT = np.nan_to_num(ndtr((self.thresh - a_sup) / s), nan=1.0)
                inf_KT = np.nan_to_num(ndtr((self.thresh - a_inf) / s), nan=1.0)
            # a | bin k by inversion on the side of the bin nearer 0 (accurate tails): a = sgn·sd·Φ⁻¹(A + V·B)
            up = lo_K >= 0
            self.inv_sgn = np.where(up, -sd, sd)
            self.inv_A = np.where(up, ndtr(-hi_K), ndtr(lo_K))
            self.inv_B = P_K
        else:
            P_K = np.ones(1)
            sup_KT = inf_KT = prob[self.order][None]
        K = len(P_K)
        self.Q = np.minimum(sup_KT, Q_MAX).ravel()  # [K·T] candidate probability of cell k·T + pos
        self.R = np.minimum(inf_KT.ravel() / self.Q, 1.0)  # [K·T] kept outright below this
        haz_KT = -np.log1p(-self.Q.reshape(K, T))
        cum = np.concatenate([np.zeros((K, 1)), np.cumsum(haz_KT, 1)], 1)  # [K, T+1]
        row_off = np.cumsum(cum[:, -1]) - cum[:, -1]  # [K] where row k starts on the flat axis
        self.ends = (cum[:, 1:] + row_off[:, None]).ravel()  # [K·T] increasing: cell ends, row by row
        self.stop_KG = cum[:, ge] + row_off[:, None]  # [K, G] its end (== ends of its last cell)
        self.H_KG = cum[:, ge] - cum[:, gs]  # [K, G] its total hazard
        alive_KG = P_K[:, None] * -np.expm1(-self.H_KG)  # P(bin k and at least one candidate)
        alive_G = alive_KG.sum(0)
        self.p_dead = np.minimum(np.exp(-self.H_KG).T @ P_K, 1.0)  # [G] P(no candidate in the pair)
        self.p_dead[counts == 0] = 2.0  # a factor without features never fires
        # (bin k, first candidate i) | alive, per group: mass P(k) e^{−hazard before i} (1 − e^{−h_i}), laid
        # out as G rows of K·Tmax entries (padding has no mass) so one look-up draws both
        Tmax = int(counts.max())
        i_I = np.arange(Tmax)
        cell_GI = np.minimum(gs[:, None] + i_I, np.maximum(ge - 1, gs)[:, None])  # [G, Tmax] sorted position
        before_KGI = cum[:, cell_GI] - cum[:, gs][:, :, None]  # hazard of the group before cell i
        mass_KGI = P_K[:, None, None] * np.exp(-before_KGI) * -np.expm1(-haz_KT[:, cell_GI])
        mass_KGI *= i_I < counts[:, None]
        mass_GE = mass_KGI.transpose(1, 0, 2).reshape(G, K * Tmax)
        C_GE = np.cumsum(mass_GE, 1) / np.where(alive_G > 0, alive_G, 1.0)[:, None]
        self.first_search = GuidedSearch((np.arange(G)[:, None] + C_GE).ravel(), rows=G)
        k_GE = np.repeat(np.arange(K), Tmax)[None].repeat(G, 0)  # [G, K·Tmax]
        self.k_E = k_GE.ravel()
        self.cell_E = (k_GE * T + np.tile(cell_GI, K)).ravel()  # flat cell index k·T + position
        self.stop_E = self.stop_KG[k_GE, np.arange(G)[:, None]].ravel()
        self.KT_ = K * Tmax
        self.K, self.T, self.G = K, T, G
        self.search = GuidedSearch(self.ends, 4 * T, rows=K)

    def sample(self, m: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """(row [A], sorted position [A]) of the firing top-level cells of m samples, sorted by row."""
        G, K, T = self.G, self.K, self.T
        U = rng.random((m, G))
        row, g = np.nonzero(self.p_dead <= U)  # [W] walkers: pairs with at least one candidate
        pd = self.p_dead[g]
        # reuse the uniform: given alive, (U − p_dead) / (1 − p_dead) is uniform again; it picks (k, first cell)
        e = self.first_search((U[row, g] - pd) / (1 - pd) + g, g, right=False)
        np.minimum(e, g * self.KT_ + (self.KT_ - 1), out=e)  # round-off past a row's end
        k, c, stop = self.k_E[e], self.cell_E[e], self.stop_E[e]
        w, kw = np.arange(len(row)), k
        hits_w, hits_c = [], []
        while len(w):
            hits_w.append(w)
            hits_c.append(c)
            key = self.ends[c] + rng.standard_exponential(len(c))
            live = np.flatnonzero(key < stop)
            w, kw, key, stop = w[live], kw[live], key[live], stop[live]
            c = self.search(key, kw)
        # lay the hits out walker by walker: the i-th hit of walker w goes to first[w] + i
        count = np.zeros(len(row), dtype=np.int64)
        for hw in hits_w:
            count[hw] += 1
        first = np.cumsum(count) - count
        cell = np.empty(int(count.sum()), dtype=np.int64)
        for i, (hw, hc) in enumerate(zip(hits_w, hits_c, strict=True)):
            cell[first[hw] + i] = hc
        walker = np.repeat(np.arange(len(row)), count)
        if K > 1:
            cell, walker = self._thin(cell, walker, k, rng)
        return row[walker], cell - k[walker] * T

    def _thin(self, cell, walker, k, rng):
        """Keep each candidate with probability p_f(a) / q_kf; the pair's exact a is drawn only when needed."""
        u = rng.random(len(cell))
        keep = u < self.R[cell]
        gray = np.flatnonzero(~keep)
        if len(gray):
            wg = walker[gray]  # sorted
            new = np.r_[True, wg[1:] != wg[:-1]]
            kw = k[wg[new]]
            a = self.inv_sgn[kw] * ndtri(self.inv_A[kw] + rng.random(len(kw)) * self.inv_B[kw])
            a = a[np.cumsum(new) - 1]
            pos = cell[gray] % self.T
            p = ndtr((self.thresh[pos] - self.sign[pos] * a) / math.sqrt(1 - self.rho))
            keep[gray] = u[gray] * self.Q[cell[gray]] < p
        return cell[keep], walker[keep]


class GuidedSearch:
    """searchsorted(sorted_, x, side='right') (the first i with sorted_[i] > x; side='left': ≥ x), clamped to
    the last index, in O(1) per query: a guide table over equal-width bins gives a lower bound (the number of
    entries in lower bins), then a short vectorised forward scan (a binary search for the few queries still
    unresolved). With `rows` > 1 the array is that many equal-length rows, row r covering (end of row r − 1,
    end of row r], each with its own `bins` bins, and a query names its row: rows of very different lengths
    then all resolve in a step or two."""

    def __init__(self, sorted_: np.ndarray, bins: int | None = None, rows: int = 1):
        self.a, self.n = np.asarray(sorted_, dtype=np.float64), len(sorted_)
        a_RL = self.a.reshape(rows, -1)
        self.bins = a_RL.shape[1] if bins is None else bins  # per row
        self.off = np.r_[0.0, a_RL[:-1, -1]]  # [rows] where each row starts
        self.scale = self.bins / np.maximum(a_RL[:, -1] - self.off, 1e-300)  # [rows]
        b = np.clip(np.floor((a_RL - self.off[:, None]) * self.scale[:, None]), 0, self.bins).astype(np.int64)
        b += np.arange(rows)[:, None] * (self.bins + 1)
        count = np.bincount(b.ravel(), minlength=rows * (self.bins + 1))
        self.guide = np.minimum(np.cumsum(count) - count, self.n - 1)

    def __call__(self, x: np.ndarray, row: np.ndarray | None = None, right: bool = True) -> np.ndarray:
        if row is None:
            b = (x * self.scale[0]).astype(np.int64)
            np.clip(b, 0, self.bins, out=b)
        else:
            b = ((x - self.off[row]) * self.scale[row]).astype(np.int64)
            np.clip(b, 0, self.bins, out=b)
            b += row * (self.bins + 1)
        idx = self.guide[b]
        below = np.less_equal if right else np.less  # entry i is still left of the answer
        active = np.flatnonzero(below(self.a[idx], x))
        for _ in range(4):
            if not len(active):
                return idx
            i = np.minimum(idx[active] + 1, self.n - 1)
            idx[active] = i
            active = active[below(self.a[i], x[active]) & (i < self.n - 1)]
        if len(active):  # the few queries in crowded bins: a plain binary search
            idx[active] = np.searchsorted(self.a, x[active], side="right" if right else "left")
        return np.minimum(idx, self.n - 1)


class ChildSampler:
    """Children of one hierarchy level given firing parents: `kids` [P, branching] child features of each
    parent, `cond` [P, branching] P(child | parent), `parent_of` [n_features] each feature's parent."""

    def __init__(self, kids, cond, parent_of, n_features: int, exclusive: bool):
        self.kids = np.asarray(kids, dtype=np.int64)
        self.cond = np.asarray(cond, dtype=np.float64)
        self.cum = np.cumsum(self.cond, 1)
        self.exclusive = exclusive
        self.slot_of = np.full(n_features, -1, dtype=np.int64)  # parent feature → row of `kids`
        self.slot_of[np.asarray(parent_of)[self.kids[:, 0]]] = np.arange(len(self.kids))

    def __call__(self, rows: np.ndarray, feats: np.ndarray, rng: np.random.Generator):
        """(row, feature) of the firing children, in the parents' (row) order."""
        slot = self.slot_of[feats]
        has = np.flatnonzero(slot >= 0)
        pr, ps = rows[has], slot[has]
        if self.exclusive:  # one draw picks at most one sibling
            pick = (rng.random(len(ps))[:, None] >= self.cum[ps]).sum(1)
            ok = pick < self.kids.shape[1]
            return pr[ok], self.kids[ps[ok], pick[ok]]
        a, b = np.nonzero(rng.random((len(ps), self.kids.shape[1])) < self.cond[ps])
        return pr[a], self.kids[ps[a], b]

"""Ground-truth datasets in memory and on disk (safetensors, validated on load, nothing pickled).

File layout (one `.safetensors` file):
- `hidden` [n_samples, d] float32 — required: the activations an SAE is trained on.
- `feature_vectors` [n_features, d] float32 — optional: the true feature directions.
- true activations, optional, either dense `feature_acts` [n_samples, n_features] float32 or the sparse COO
  triple `feature_acts_rows` [nnz] int64, `feature_acts_cols` [nnz] int64, `feature_acts_values` [nnz]
  float32.
- `feature_parent` [n_features] int64 (−1 = no parent) and `feature_density` [n_features] float32 — optional.
- safetensors metadata `toymodels_dataset`: JSON describing how the data was made (and `n_features`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from toymodels.errors import DataFileError, short_repr
from toymodels.io import load_tensors, save_tensors

META_KEY = "toymodels_dataset"
MAX_FEATURES = 2**31 - 1
"""Largest n_features a file may claim (feature indices are int64 but dense tensors index with int32 sizes)."""


@dataclass
class GroundTruthDataset:
    """Activations with their ground truth: h_n = Σ_f acts[n, f] · feature_vectors[f] (for synthetic data)."""

    hidden: torch.Tensor
    """[n_samples, d] float32 activations."""
    feature_vectors: torch.Tensor | None = None
    """[n_features, d] true directions (unit norm for synthetic data; rows of W for toy models)."""
    acts_rows: torch.Tensor | None = None
    """[nnz] sample index of each true activation (COO, any order)."""
    acts_cols: torch.Tensor | None = None
    """[nnz] feature index of each true activation."""
    acts_values: torch.Tensor | None = None
    """[nnz] magnitude of each true activation."""
    n_features: int | None = None
    """Number of true features (needed when only the COO triple is given)."""
    parent: torch.Tensor | None = None
    """[n_features] parent feature of each feature in a hierarchy, −1 for none (enables absorption)."""
    density: torch.Tensor | None = None
    """[n_features] true marginal firing probabilities, if known."""
    meta: dict = field(default_factory=dict)
    """How the data was made (JSON-ready)."""

    def __post_init__(self):
        if self.n_features is None and self.feature_vectors is not None:
            self.n_features = self.feature_vectors.shape[0]

    @property
    def n_samples(self) -> int:
        return self.hidden.shape[0]

    @property
    def has_acts(self) -> bool:
        return self.acts_rows is not None

    def true_acts(self, n: int | None = None) -> torch.Tensor:
        """Dense [n, n_features] true activations of the first n samples (all by default)."""
        n = self.n_samples if n is None else min(n, self.n_samples)
        if not self.has_acts:
            raise DataFileError("this dataset has no true feature activations (feature_acts)")
        from toymodels.budget import FLOAT, check_memory

        check_memory(FLOAT * n * self.n_features, f"true activations ({n} samples × {self.n_features} features)")
        keep = self.acts_rows < n
        out = torch.zeros(n, self.n_features)
        out[self.acts_rows[keep], self.acts_cols[keep]] = self.acts_values[keep]
        return out

    def mean_l0(self) -> float:
        """Mean number of active true features per sample."""
        return len(self.acts_values) / self.n_samples if self.has_acts else float("nan")

    @classmethod
    def from_dense(cls, hidden, feature_vectors=None, acts=None, **kw) -> GroundTruthDataset:
        """Build from a dense [n_samples, n_features] activation matrix."""
        if acts is None:
            return cls(hidden=hidden, feature_vectors=feature_vectors, **kw)
        r, c = acts.nonzero(as_tuple=True)
        return cls(hidden=hidden, feature_vectors=feature_vectors, acts_rows=r, acts_cols=c,
                   acts_values=acts[r, c],
                   n_features=acts.shape[1], **kw)


def save_dataset(path, ds: GroundTruthDataset, dense_acts: bool = False) -> Path:
    """Write `ds` to one safetensors file (true acts as a COO triple unless `dense_acts`)."""
    t = {"hidden": ds.hidden.float()}
    if ds.feature_vectors is not None:
        t["feature_vectors"] = ds.feature_vectors.float()
    if ds.has_acts:
        if dense_acts:
            t["feature_acts"] = ds.true_acts()
        else:
            t.update(feature_acts_rows=ds.acts_rows.long(), feature_acts_cols=ds.acts_cols.long(),
                     feature_acts_values=ds.acts_values.float())
    if ds.parent is not None:
        t["feature_parent"] = ds.parent.long()
    if ds.density is not None:
        t["feature_density"] = ds.density.float()
    meta = dict(ds.meta, n_features=ds.n_features)
    save_tensors(path, t, metadata={META_KEY: json.dumps(meta, sort_keys=True)})
    return Path(path)


def load_dataset(path) -> GroundTruthDataset:
    """Read and validate a dataset file; any problem is a one-line DataFileError naming the tensor."""
    from safetensors import safe_open

    t = load_tensors(path, required=("hidden",))
    try:
        with safe_open(str(path), "pt") as f:
            raw = (f.metadata() or {}).get(META_KEY, "{}")
        meta = json.loads(raw)
    except (json.JSONDecodeError, OSError) as e:
        raise DataFileError(f"{path}: metadata {META_KEY} is not valid JSON ({e})") from None
    if not isinstance(meta, dict):
        raise DataFileError(f"{path}: metadata {META_KEY} must be a JSON object, got {type(meta).__name__}")
    h = t["hidden"]
    _want(path, "hidden", h, 2, torch.float32)
    n, d = h.shape
    if n < 1 or d < 1:
        raise DataFileError(f"{path}: hidden is empty (shape {list(h.shape)})")
    if not bool(torch.isfinite(h).all()):
        raise DataFileError(f"{path}: hidden contains NaN or inf")
    V = t.get("feature_vectors")
    n_features = meta.get("n_features")
    if n_features is not None and not (isinstance(n_features, int) and not isinstance(n_features, bool)
                                       and 1 <= n_features <= MAX_FEATURES):
        raise DataFileError(f"{path}: metadata n_features must be an integer in [1, {MAX_FEATURES}], "
                            f"got {short_repr(n_features)}")
    if V is not None:
        _want(path, "feature_vectors", V, 2, torch.float32)
        if V.shape[1] != d:
            raise DataFileError(f"{path}: feature_vectors has {V.shape[1]} columns but hidden has d={d}")
        if V.shape[0] < 1 or not bool(torch.isfinite(V).all()):
            raise DataFileError(f"{path}: feature_vectors must be a non-empty tensor of finite numbers")
        n_features = V.shape[0]
    kw = {}
    if "feature_acts" in t:
        A = t["feature_acts"]
        _want(path, "feature_acts", A, 2, torch.float32)
        if A.shape[0] != n or (n_features is not None and A.shape[1] != n_features):
            raise DataFileError(f"{path}: feature_acts has shape {list(A.shape)}, "
                                f"expected [{n}, {n_features}]")
        n_features = A.shape[1]
        if not bool(torch.isfinite(A).all()):
            raise DataFileError(f"{path}: feature_acts contains NaN or inf")
        r, c = A.nonzero(as_tuple=True)
        kw = dict(acts_rows=r, acts_cols=c, acts_values=A[r, c])
    elif any(k.startswith("feature_acts_") for k in t):
        for k, dt in (("rows", torch.int64), ("cols", torch.int64), ("values", torch.float32)):
            if f"feature_acts_{k}" not in t:
                raise DataFileError(f"{path}: sparse feature_acts needs feature_acts_{k} as well")
            _want(path, f"feature_acts_{k}", t[f"feature_acts_{k}"], 1, dt)
        r, c, v = t["feature_acts_rows"], t["feature_acts_cols"], t["feature_acts_values"]
        if not len(r) == len(c) == len(v):
            raise DataFileError(f"{path}: feature_acts_rows/cols/values lengths differ "
                                f"({len(r)}, {len(c)}, {len(v)})")
        if n_features is None:
            raise DataFileError(f"{path}: sparse feature_acts need n_features (feature_vectors or metadata)")
        bad_rows = int(r.min()) < 0 or int(r.max()) >= n if len(r) else False
        if bad_rows or (len(c) and (int(c.min()) < 0 or int(c.max()) >= n_features)):
            raise DataFileError(f"{path}: feature_acts indices out of range "
                                f"(rows < {n}, cols < {n_features})")
        if not bool(torch.isfinite(v).all()):
            raise DataFileError(f"{path}: feature_acts_values contains NaN or inf")
        kw = dict(acts_rows=r, acts_cols=c, acts_values=v)
    parent = t.get("feature_parent")
    if parent is not None:
        _want(path, "feature_parent", parent, 1, torch.int64)
        if n_features is not None and len(parent) != n_features:
            raise DataFileError(f"{path}: feature_parent has {len(parent)} entries, expected {n_features}")
        if len(parent) and (int(parent.min()) < -1 or int(parent.max()) >= len(parent)
                            or bool((parent == torch.arange(len(parent))).any())):
            raise DataFileError(f"{path}: feature_parent entries must be −1 or the index of another feature "
                                f"(in [0, {len(parent) - 1}])")
    density = t.get("feature_density")
    if density is not None:
        _want(path, "feature_density", density, 1, torch.float32)
        if (n_features is not None and len(density) != n_features) or not bool(
                ((density >= 0) & (density <= 1)).all()):
            raise DataFileError(f"{path}: feature_density must hold {n_features} probabilities in [0, 1]")
    return GroundTruthDataset(hidden=h, feature_vectors=V, n_features=n_features, parent=parent,
                              density=density,
                              meta=meta, **kw)


def _want(path, name: str, x: torch.Tensor, ndim: int, dtype: torch.dtype) -> None:
    if x.ndim != ndim or x.dtype != dtype:
        raise DataFileError(f"{path}: {name} must be a {ndim}-D {str(dtype).removeprefix('torch.')} tensor, "
                            f"got {x.ndim}-D {str(x.dtype).removeprefix('torch.')} of shape {list(x.shape)}")

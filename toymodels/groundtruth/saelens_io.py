"""SAELens `SyntheticModel`s in and out: read one (the object, or its saved folder, e.g. SynthSAEBench-16k) into a
toymodels dictionary that samples the same law (saelens_law.py), and write a law=saelens dictionary as a folder
that `SyntheticModel.load_from_disk` reads.

    from toymodels.groundtruth.saelens_io import read_saelens, write_saelens
    d = read_saelens("path/to/synth-sae-bench-16k-v2")     # or a SyntheticModel object
    ds = d.sample(100_000)                                   # a GroundTruthDataset, scored as any other
    write_saelens(Dictionary(SyntheticConfig(law="saelens", ...)), "out/model")

A saved folder holds `synthetic_model_config.json` (the SAELens config), `synthetic_model.safetensors`
(feature_vectors, bias, firing_probabilities after compensation, correlation_factor/diag if correlated) and
`hierarchy.json` (nested nodes: feature_index, mutually_exclusive_children, scale_children_by_parent, children).
The per-feature magnitudes are not saved: SAELens regenerates them from the config with seeds seed + 2 (means)
and seed + 1 (spreads); reading a folder regenerates them the same way. Reading needs no sae_lens; nothing is
unpickled. A folder or object this cannot represent is a one-line DataFileError.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from toymodels.errors import DataFileError, short_repr
from toymodels.groundtruth.saelens_law import SAELensDictionary, magnitude_law

CONFIG, WEIGHTS, HIERARCHY = "synthetic_model_config.json", "synthetic_model.safetensors", "hierarchy.json"
MAGNITUDES = {"constant": ("value", None), "linear": ("start", "end"), "exponential": ("start", "end"),
              "folded_normal": ("mean", "std")}


def _magnitudes(where, spec, n: int, seed) -> torch.Tensor:
    """SAELens's per-feature magnitudes from a config entry (a number or a generator dict)."""
    if isinstance(spec, (int, float)) and not isinstance(spec, bool):
        return torch.full((n,), float(spec))
    if not isinstance(spec, dict) or spec.get("generator_name") not in MAGNITUDES:
        raise DataFileError(f"{where}: magnitudes must be a number or a generator in {', '.join(MAGNITUDES)}, "
                            f"got {short_repr(spec)}")
    name = spec["generator_name"]
    a, b = MAGNITUDES[name]
    if name == "folded_normal":
        if seed is None:
            raise DataFileError(f"{where}: folded_normal magnitudes need the config's seed to be regenerated")
        if spec.get("min_value") is not None or spec.get("max_value") is not None:
            lo, hi = spec.get("min_value"), spec.get("max_value")
            return magnitude_law(name, spec[a], spec[b], n, seed).clamp(min=lo, max=hi)
    try:
        return magnitude_law(name, float(spec[a]), float(spec[b]) if b else 0.0, n, seed)
    except (KeyError, TypeError, ValueError):
        raise DataFileError(f"{where}: bad {name} magnitude generator {short_repr(spec)}") from None


def _tree(where, roots: list, F: int):
    """(parent, exclusive, scale) [F] arrays from SAELens's nested hierarchy nodes."""
    parent = np.full(F, -1, dtype=np.int64)
    exclusive, scale = np.zeros(F, dtype=bool), np.zeros(F, dtype=bool)
    seen = np.zeros(F, dtype=bool)
    stack = [(node, -1) for node in roots]
    while stack:
        node, par = stack.pop()
        idx = node.get("feature_index") if isinstance(node, dict) else None
        if not isinstance(idx, int) or isinstance(idx, bool) or not 0 <= idx < F or seen[idx]:
            raise DataFileError(f"{where}: every hierarchy node needs its own feature_index in [0, {F - 1}] "
                                f"(organisational nodes are not supported), got {short_repr(idx)}")
        seen[idx], parent[idx] = True, par
        kids = node.get("children") or []
        exclusive[idx] = bool(node.get("mutually_exclusive_children")) and len(kids) >= 2
        scale[idx] = bool(node.get("scale_children_by_parent"))
        stack.extend((k, idx) for k in kids)
    return parent, exclusive, scale


def _check(where, name, x, shape) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or tuple(x.shape) != shape or not bool(torch.isfinite(x.float()).all()):
        got = list(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise DataFileError(f"{where}: {name} must be a finite tensor of shape {list(shape)}, got {got}")
    return x.detach().float().cpu()


def _build(where, cfg: dict, w: dict, hierarchy: dict | None, mean=None, std=None) -> SAELensDictionary:
    try:
        F, D = int(cfg["num_features"]), int(cfg["hidden_dim"])
    except (KeyError, TypeError, ValueError):
        raise DataFileError(f"{where}: config needs integer num_features and hidden_dim") from None
    if F < 1 or D < 1:
        raise DataFileError(f"{where}: num_features and hidden_dim must be ≥ 1, got {F} and {D}")
    seed = cfg.get("seed")
    V = _check(where, "feature_vectors", w.get("feature_vectors"), (F, D))
    prob = _check(where, "firing_probabilities", w.get("firing_probabilities"), (F,)).double()
    if bool(((prob < 0) | (prob > 1)).any()):
        raise DataFileError(f"{where}: firing_probabilities must lie in [0, 1]")
    bias = _check(where, "bias", w["bias"], (D,)) if w.get("bias") is not None else None
    factor = None
    if w.get("correlation_factor") is not None:
        factor = w["correlation_factor"]
        factor = _check(where, "correlation_factor", factor, (F, factor.shape[-1] if factor.ndim == 2 else -1))
        diag = _check(where, "correlation_diag", w.get("correlation_diag"), (F,))
        if not torch.allclose(factor.square().sum(1) + diag, torch.ones(F), atol=1e-4) or bool((diag <= 0).any()):
            raise DataFileError(f"{where}: correlation_factor rows and correlation_diag must give a unit diagonal "
                                "with positive diag")
    mean = _magnitudes(where, cfg.get("mean_firing_magnitudes", 1.0), F, None if seed is None else seed + 2) \
        if mean is None else _check(where, "mean_firing_magnitudes", mean, (F,))
    std = _magnitudes(where, cfg.get("std_firing_magnitudes", 0.0), F, None if seed is None else seed + 1) \
        if std is None else _check(where, "std_firing_magnitudes", std, (F,))
    roots = (hierarchy or {}).get("roots", [])
    if not isinstance(roots, list):
        raise DataFileError(f"{where}: hierarchy roots must be a list")
    parent, exclusive, scale = _tree(where, roots, F)
    if bool((mean[np.flatnonzero(scale)] <= 0).any()):
        raise DataFileError(f"{where}: scale_children_by_parent needs positive mean magnitudes of the parents")
    d = SAELensDictionary.from_arrays(V, prob.numpy(), mean, std, parent, exclusive, scale, factor, bias,
                                      seed=int(seed or 0))
    d.saelens_config = cfg
    return d


def read_saelens(source) -> SAELensDictionary:
    """A law=saelens dictionary equal to a SAELens SyntheticModel (the object or a saved folder)."""
    if not isinstance(source, (str, Path)):  # a SyntheticModel (duck-typed: sae_lens need not be importable here)
        try:
            cfg, ag = source.cfg.to_dict(), source.activation_generator
            w = {"feature_vectors": source.feature_dict.feature_vectors, "bias": source.feature_dict.bias,
                 "firing_probabilities": ag.firing_probabilities}
            if getattr(ag, "correlation_matrix", None) is not None:
                raise DataFileError("SyntheticModel: a full correlation matrix is not supported (low-rank only)")
            if source.correlation_matrix is not None:
                w["correlation_factor"], w["correlation_diag"] = source.correlation_matrix
            hier = source.hierarchy.to_dict() if source.hierarchy is not None else None
            return _build("SyntheticModel", cfg, w, hier, ag.mean_firing_magnitudes, ag.std_firing_magnitudes)
        except AttributeError as e:
            raise DataFileError(f"not a SAELens SyntheticModel or folder ({e})") from None
    from toymodels.io import load_tensors, read_json

    path = Path(source)
    if not path.is_dir():
        raise DataFileError(f"{path}: not a folder (a saved SAELens SyntheticModel is a folder with {CONFIG})")
    cfg = read_json(path / CONFIG)
    if not isinstance(cfg, dict):
        raise DataFileError(f"{path / CONFIG}: must be a JSON object")
    w = load_tensors(path / WEIGHTS, required=("feature_vectors", "firing_probabilities"))
    hier = read_json(path / HIERARCHY) if (path / HIERARCHY).exists() else None
    if hier is not None and not isinstance(hier, dict):
        raise DataFileError(f"{path / HIERARCHY}: must be a JSON object with roots")
    return _build(str(path), cfg, w, hier)


def saelens_config(d: SAELensDictionary) -> dict:
    """The SAELens SyntheticModelConfig dict of `d` (its own if it was read from SAELens)."""
    if getattr(d, "saelens_config", None) is not None:
        return d.saelens_config
    c = d.cfg
    firing = {"zipf": {"generator_name": "zipfian", "exponent": c.zipf_exponent, "max_prob": c.p_max,
                       "min_prob": c.p_min},
              "linear": {"generator_name": "linear", "max_prob": c.p_max, "min_prob": c.p_min},
              "constant": {"generator_name": "constant", "probability": c.p_max}}[c.firing]

    def mag(kind, a, b):
        if kind == "constant":
            return float(a)
        keys = MAGNITUDES[kind]
        return {"generator_name": kind, keys[0]: a, keys[1]: b} | (
            {"min_value": None, "max_value": None} if kind == "folded_normal" else {})

    hier = None
    if c.n_roots:
        hier = {"total_root_nodes": c.n_roots, "max_depth": c.depth - 1,
                "branching_factor": c.branching if c.branching_max is None else [c.branching, c.branching_max],
                "mutually_exclusive_portion": c.mutually_exclusive_portion if c.mutually_exclusive else 0.0,
                "mutually_exclusive_min_depth": c.mutually_exclusive_min_depth,
                "mutually_exclusive_max_depth": c.mutually_exclusive_max_depth,
                "compensate_probabilities": c.compensate_probabilities,
                "scale_children_by_parent": c.scale_children_by_parent}
    corr = None if d.factor is None else {"rank": c.correlation_rank, "correlation_scale": c.correlation_scale,
                                          "seed": None}
    return {"num_features": c.n_features, "hidden_dim": c.d_model, "firing_probability": firing,
            "hierarchy": hier, "orthogonalization": None, "correlation": corr,
            "std_firing_magnitudes": mag(c.magnitude_std_law, c.magnitude_std, c.magnitude_std_end),
            "mean_firing_magnitudes": mag(c.magnitude_mean, c.magnitude_max, c.magnitude_min),
            "bias": float(c.bias) if c.bias else False, "dtype": "float32", "seed": c.seed}


def write_saelens(d, path) -> Path:
    """Write a law=saelens dictionary as a SAELens SyntheticModel folder (SyntheticModel.load_from_disk reads
    it and samples the same law: its magnitudes regenerate from the config's seed to the same values)."""
    from toymodels.io import save_tensors, write_json

    if not isinstance(d, SAELensDictionary):
        raise DataFileError("only a law=saelens dictionary can be written as a SAELens SyntheticModel (the "
                            "toymodels law's conditional hierarchy and |N| magnitudes have no SAELens form)")
    cfg = saelens_config(d)
    if d.cfg.seed >= 2**63 - 2 and getattr(d, "saelens_config", None) is None:
        raise DataFileError(f"seed {d.cfg.seed}: too large for SAELens (its seeds + 2 must fit in int64)")
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    F, D = d.vectors.shape
    w = {"feature_vectors": d.vectors, "bias": d.bias if d.bias is not None else torch.zeros(D),
         "firing_probabilities": torch.as_tensor(d.prob, dtype=torch.float32)}
    if d.factor is not None:
        w["correlation_factor"] = d.factor
        w["correlation_diag"] = (1 - d.factor.double().square().sum(1)).float()
    save_tensors(path / WEIGHTS, w)
    write_json(path / CONFIG, cfg)
    par = d.parent.numpy()
    if (par >= 0).any():
        kids: dict[int, list[int]] = {}
        for f in np.flatnonzero(par >= 0):
            kids.setdefault(int(par[f]), []).append(int(f))

        def node(f: int) -> dict:
            return {"feature_index": f, "mutually_exclusive_children": bool(d.exclusive[f]),
                    "scale_children_by_parent": bool(d.scale[f]), "feature_id": None,
                    "children": [node(k) for k in kids.get(f, [])]}

        roots = [int(f) for f in np.flatnonzero(par < 0) if int(f) in kids]
        write_json(path / HIERARCHY, {"roots": [node(f) for f in roots]})
    elif (path / HIERARCHY).exists():
        (path / HIERARCHY).unlink()
    return path

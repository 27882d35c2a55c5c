"""SAELens on-disk layout: `cfg.json` + `sae_weights.safetensors`, loadable by `sae_lens.SAE.load_from_disk`.

Exported SAEs compute in the data's own units (training normalisation is folded in, so
`normalize_activations` is "none"). Our own provenance (variant, config, training history) rides along in
`cfg.json["metadata"]` and `history.json`, which SAELens ignores."""

from __future__ import annotations

from pathlib import Path

import torch

from toymodels.config import from_dict, to_dict
from toymodels.errors import ConfigError, DataFileError
from toymodels.io import environment, load_tensors, read_json, save_tensors, write_json
from toymodels.sae.base import SAEConfig, TrainedSAE
from toymodels.sae.registry import get_variant, variant_names

SAELENS_VERSION = "6.0.0"
"""Layout version we write (SAELens ≥ 6 reads it without its pre-6 conversions)."""
TENSORS = {"standard": ("W_enc", "b_enc", "W_dec", "b_dec"), "topk": ("W_enc", "b_enc", "W_dec", "b_dec"),
           "abstopk": ("W_enc", "b_enc", "W_dec", "b_dec"),
           "jumprelu": ("W_enc", "b_enc", "W_dec", "b_dec", "threshold"),
           "gated": ("W_enc", "W_dec", "b_dec", "b_gate", "b_mag", "r_mag"),
           "matching_pursuit": ("W_dec", "b_dec")}
"""SAELens tensor names per architecture (matching_pursuit is tied: its encoder is W_decᵀ)."""
_DEFAULT_VARIANT = {"standard": "relu", "topk": "topk", "abstopk": "abstopk", "jumprelu": "jumprelu",
                    "gated": "gated", "matching_pursuit": "matching_pursuit"}
_K_ARCHS = ("topk", "abstopk")


def export_saelens(sae: TrainedSAE, out_dir) -> Path:
    """Write `sae` as a SAELens folder (atomic writes); returns the folder."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"out: {out} exists and is not a folder")
    d_sae, d_in = sae.W_dec.shape
    cfg = {"d_in": int(d_in), "d_sae": int(d_sae), "dtype": "float32", "device": "cpu",
           "apply_b_dec_to_input": bool(sae.apply_b_dec_to_input), "normalize_activations": "none",
           "reshape_activations": "none", "architecture": sae.architecture,
           "metadata": {"sae_lens_version": SAELENS_VERSION, "sae_lens_training_version": SAELENS_VERSION,
                        "toymodels_variant": sae.cfg.variant, "toymodels_config": to_dict(sae.cfg),
                        "toymodels_scale": sae.scale, "toymodels_environment": environment()}}
    if sae.architecture in _K_ARCHS:
        cfg.update(k=int(sae.k), rescale_acts_by_decoder_norm=False)
    if sae.architecture == "matching_pursuit":
        cfg.update(max_iterations=int(sae.k), residual_threshold=float(sae.residual_threshold),
                   stop_on_duplicate_support=True)
    names = TENSORS[sae.architecture]
    save_tensors(out / "sae_weights.safetensors", {k: v.float() for k, v in sae.tensors().items() if k in names})
    write_json(out / "cfg.json", cfg)
    if sae.history:
        write_json(out / "history.json", sae.history)
    return out


def load_saelens(path) -> TrainedSAE:
    """Read a SAELens folder (ours or any standard/topk/jumprelu/gated SAE) back as a TrainedSAE."""
    path = Path(path)
    cfg_path = path / "cfg.json"
    if not path.is_dir():
        raise DataFileError(f"{path}: not a folder (expected cfg.json + sae_weights.safetensors)")
    cfg = read_json(cfg_path)
    if not isinstance(cfg, dict):
        raise DataFileError(f"{cfg_path}: expected a JSON object")
    arch = cfg.get("architecture", "standard")
    if arch not in TENSORS:
        raise DataFileError(f"{cfg_path}: architecture {arch!r} not supported "
                            f"(accepted: {', '.join(TENSORS)})")
    for key in ("d_in", "d_sae"):
        if not isinstance(cfg.get(key), int) or cfg[key] < 1:
            raise DataFileError(f"{cfg_path}: {key} must be an integer ≥ 1, got {cfg.get(key)!r}")
    if cfg.get("normalize_activations", "none") != "none":
        raise DataFileError(f"{cfg_path}: normalize_activations={cfg['normalize_activations']!r} unsupported "
                            "(only 'none')")
    D, L = cfg["d_in"], cfg["d_sae"]
    wpath = path / "sae_weights.safetensors"
    raw = load_tensors(wpath)
    if "log_threshold" in raw and "threshold" not in raw:
        raw["threshold"] = raw.pop("log_threshold").exp()
    missing = [n for n in TENSORS[arch] if n not in raw]
    if missing:
        raise DataFileError(f"{wpath}: missing tensor(s) {', '.join(missing)} for architecture {arch}; "
                            f"found {', '.join(sorted(raw))}")
    shapes = {"W_enc": (D, L), "W_dec": (L, D), "b_dec": (D,), "b_enc": (L,), "threshold": (L,),
              "b_gate": (L,), "b_mag": (L,), "r_mag": (L,)}
    t = {}
    for n in TENSORS[arch]:
        if tuple(raw[n].shape) != shapes[n]:
            raise DataFileError(f"{wpath}: {n} has shape {list(raw[n].shape)}, expected {list(shapes[n])} "
                                f"(d_in={D}, d_sae={L})")
        if not raw[n].is_floating_point() or not bool(torch.isfinite(raw[n]).all()):
            raise DataFileError(f"{wpath}: {n} must be finite floats")
        t[n] = raw[n].float()
    k = cfg.get("k") if arch in _K_ARCHS else None
    if arch in _K_ARCHS and (not isinstance(k, int) or not 1 <= k <= L):
        raise DataFileError(f"{cfg_path}: k must be an integer in [1, d_sae={L}] for {arch}, got {k!r}")
    mp = {}
    if arch == "matching_pursuit":
        k = cfg.get("max_iterations") or D  # SAELens: None → d_in
        thr = cfg.get("residual_threshold", 1e-2)
        if not isinstance(k, int) or k < 1 or not isinstance(thr, (int, float)) or thr < 0:
            raise DataFileError(f"{cfg_path}: max_iterations must be an integer ≥ 1 and residual_threshold a "
                                f"number ≥ 0, got {k!r}, {thr!r}")
        if not cfg.get("stop_on_duplicate_support", True):
            raise DataFileError(f"{cfg_path}: stop_on_duplicate_support=false is not supported")
        t["W_enc"] = t["W_dec"].T.clone()
        mp = {"residual_threshold": float(thr)}
    if arch in _K_ARCHS and cfg.get("rescale_acts_by_decoder_norm"):
        n_L = t["W_dec"].norm(dim=-1)  # fold: same function with unit-norm decoder rows
        t["W_dec"], t["W_enc"], t["b_enc"] = t["W_dec"] / n_L[:, None], t["W_enc"] * n_L, t["b_enc"] * n_L
    meta = cfg.get("metadata") or {}
    variant = meta.get("toymodels_variant")
    try:  # a variant not registered in this process (a plugin not loaded) reads as its architecture's default
        if "toymodels_config" in meta and variant in variant_names():
            sae_cfg = from_dict(get_variant(variant).config, meta["toymodels_config"])
        else:
            sae_cfg = SAEConfig(variant=_DEFAULT_VARIANT[arch], d_in=D, d_sae=L, **({"k": min(k, L)} if k else {}))
    except ConfigError as e:
        raise DataFileError(f"{cfg_path}: metadata.toymodels_config is invalid ({e})") from None
    history = read_json(path / "history.json") if (path / "history.json").is_file() else {}
    return TrainedSAE(cfg=sae_cfg, architecture=arch,
                      apply_b_dec_to_input=bool(cfg.get("apply_b_dec_to_input", True)),
                      k=k, scale=float(meta.get("toymodels_scale", 1.0)), history=history, **mp, **t)

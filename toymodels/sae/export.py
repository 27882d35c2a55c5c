"""SAELens on-disk layout: `cfg.json` + `sae_weights.safetensors`, loadable by `sae_lens.SAE.load_from_disk`.

Exported SAEs compute in the data's own units (training normalisation is folded in, so
`normalize_activations` is "none"). Our own provenance (variant, config, training history) rides along in
`cfg.json["metadata"]` and `history.json`, which SAELens ignores."""

from __future__ import annotations

from pathlib import Path

import torch

from toymodels.config import _is_int, _is_num, from_dict, to_dict
from toymodels.errors import ConfigError, DataFileError, short_repr
from toymodels.io import environment, load_tensors, read_json
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


def export_saelens(sae: TrainedSAE, out_dir, key: str | None = None) -> Path:
    """Write `sae` as a SAELens folder, as one transaction (`toymodels.outdir`: a reader sees the complete old
    SAE or the complete new one); `key` (recorded in manifest.json) identifies the run for resuming. Returns
    the folder."""
    from toymodels.outdir import lock, transaction

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
                   stop_on_duplicate_support=bool(sae.stop_on_duplicate_support))
    names = TENSORS[sae.architecture]
    with lock(out), transaction(out, meta={"kind": "sae", "key": key}) as tx:
        tx.save_tensors("sae_weights.safetensors", {k: v.float() for k, v in sae.tensors().items() if k in names})
        tx.write_json("cfg.json", cfg)
        if sae.history:
            tx.write_json("history.json", sae.history)
        else:
            tx.remove("history.json")
    return out


def load_saelens(path) -> TrainedSAE:
    """Read a SAELens folder (ours or any standard/topk/jumprelu/gated SAE) back as a TrainedSAE."""
    from toymodels.outdir import check_finished, verify

    path = Path(path)
    cfg_path = path / "cfg.json"
    if not path.is_dir():
        raise DataFileError(f"{path}: not a folder (expected cfg.json + sae_weights.safetensors)")
    seen = check_finished(path)
    cfg = read_json(cfg_path)
    if not isinstance(cfg, dict):
        raise DataFileError(f"{cfg_path}: expected a JSON object")
    arch = cfg.get("architecture", "standard")
    if not isinstance(arch, str) or arch not in TENSORS:
        raise DataFileError(f"{cfg_path}: architecture {short_repr(arch)} not supported "
                            f"(accepted: {', '.join(TENSORS)})")
    for key in ("d_in", "d_sae"):
        if not _is_int(cfg.get(key)) or cfg[key] < 1:
            raise DataFileError(f"{cfg_path}: {key} must be an integer ≥ 1, got {short_repr(cfg.get(key))}")
    for key in ("apply_b_dec_to_input", "rescale_acts_by_decoder_norm"):
        if not isinstance(cfg.get(key, False), bool):
            raise DataFileError(f"{cfg_path}: {key} must be true or false, got {short_repr(cfg[key])}")
    if not isinstance(cfg.get("metadata") or {}, dict):
        raise DataFileError(f"{cfg_path}: metadata must be a JSON object, got {type(cfg['metadata']).__name__}")
    if cfg.get("normalize_activations", "none") not in ("none", None):
        raise DataFileError(f"{cfg_path}: normalize_activations={short_repr(cfg['normalize_activations'])} "
                            "unsupported (only 'none')")
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
    if arch in _K_ARCHS and (not _is_int(k) or not 1 <= k <= L):
        raise DataFileError(f"{cfg_path}: k must be an integer in [1, d_sae={L}] for {arch}, got {short_repr(k)}")
    mp = {}
    if arch == "matching_pursuit":
        k = cfg.get("max_iterations") or D  # SAELens: None → d_in
        thr = cfg.get("residual_threshold", 1e-2)
        if not _is_int(k) or k < 1 or not _is_num(thr) or thr < 0:
            raise DataFileError(f"{cfg_path}: max_iterations must be an integer ≥ 1 and residual_threshold a "
                                f"number ≥ 0, got {short_repr(k)}, {short_repr(thr)}")
        dup = cfg.get("stop_on_duplicate_support", True)
        if not isinstance(dup, bool):
            raise DataFileError(f"{cfg_path}: stop_on_duplicate_support must be true or false, got {short_repr(dup)}")
        t["W_enc"] = t["W_dec"].T.clone()
        mp = {"residual_threshold": float(thr), "stop_on_duplicate_support": dup}
    if arch in _K_ARCHS and cfg.get("rescale_acts_by_decoder_norm"):
        n_L = t["W_dec"].norm(dim=-1)  # fold: same function with unit-norm decoder rows
        t["W_dec"], t["W_enc"], t["b_enc"] = t["W_dec"] / n_L[:, None], t["W_enc"] * n_L, t["b_enc"] * n_L
    meta = cfg.get("metadata") or {}
    variant = meta.get("toymodels_variant")
    try:  # a variant not registered in this process (a plugin not loaded) reads as its architecture's default
        own = meta.get("toymodels_config")
        if own is not None and not isinstance(own, dict):
            raise ConfigError(f"must be a JSON object, got {type(own).__name__}")
        if own is not None and variant in variant_names():
            sae_cfg = from_dict(get_variant(variant).config, own)
        else:
            sae_cfg = SAEConfig(variant=_DEFAULT_VARIANT[arch], d_in=D, d_sae=L, **({"k": min(k, L)} if k else {}))
    except ConfigError as e:
        raise DataFileError(f"{cfg_path}: metadata.toymodels_config is invalid ({e})") from None
    if (sae_cfg.d_in, sae_cfg.d_sae) != (D, L):
        raise DataFileError(f"{cfg_path}: metadata.toymodels_config says d_in={sae_cfg.d_in}, d_sae={sae_cfg.d_sae} "
                            f"but the file says d_in={D}, d_sae={L}")
    scale = meta.get("toymodels_scale", 1.0)
    if not _is_num(scale) or scale <= 0:
        raise DataFileError(f"{cfg_path}: metadata.toymodels_scale must be a number > 0, got {short_repr(scale)}")
    history = read_json(path / "history.json") if (path / "history.json").is_file() else {}
    if not isinstance(history, dict):
        raise DataFileError(f"{path / 'history.json'}: expected a JSON object, got {type(history).__name__}")
    verify(path, ("cfg.json", "sae_weights.safetensors"), seen)  # refuses a half-replaced folder
    return TrainedSAE(cfg=sae_cfg, architecture=arch,
                      apply_b_dec_to_input=cfg.get("apply_b_dec_to_input", True),
                      k=k, scale=float(scale), history=history, **mp, **t)

"""The variant registry: name → (config dataclass, packed module). Built-ins register on import of toymodels.sae;
a user's variant registers the same way from their own code and is then trained, scored, benchmarked and exported
like the built-ins.

How to add a variant (one file; see relu.py for the shortest built-in, README "Bring your own SAE" for a complete
outside example):

1. Config: a `@dataclass` subclassing `SAEConfig` (shared fields: d_in, d_sae, seed, name, b_dec_init,
   init_scale), or a family base that already has what you need: `PenaltyConfig` (a sparsity coefficient with
   warm-up and `target_l0`, penalty.py), `TopKFamilyConfig` (k, k_start annealing, aux-k loss, topk.py). Declare
   only the new fields, each with a docstring, and validate them in `__post_init__` (call super first) with
   `toymodels.errors.check`, so a bad value is one line naming the field. Class attributes (not fields):
   `sparsity_field` (the field a benchmark sweeps; None if none) and `pack_fields` (fields that must be equal
   for two SAEs to share one packed module, e.g. prefix sizes; per-SAE numbers go through `per_sae`).
   Exact L0: the classmethod `l0_settings(target)` returns the fields that train at that L0 (PenaltyConfig:
   `target_l0`, run by PenaltySAE's controller through `sparsity_coeff(frac)`; TopK family: k = target);
   the base returns None and the benchmark then sweeps `sparsity_field` and interpolates.
2. Module: a `PackedSAE` subclass (or `TopKFamily`/`PenaltySAE` mixin + PackedSAE) holding K SAEs with a
   leading instance dim (W_enc_KDL, W_dec_KLD, b_enc_KL, b_dec_KD from the base). Implement `encode(x_BD)` →
   [K, B, L] and `loss_terms(x_BD, frac)` → ({name: [K] loss}, [K, L] firing counts); override `inference(i)`
   when the SAELens form is not `standard` with the base tensors (it returns (architecture, tensors, extra
   cfg)). Extra [K, L] parameters named `*_KL` are reset by resampling via `latent_init`. Per-SAE numbers:
   `self.per_sae("field")` is a [K] tensor, so one pack trains SAEs with different coefficients.
3. Register: `@register_variant("name", MyConfig)` on the module class. The name then works everywhere:
   `SAEConfig(variant="name", ...)`, `toymodels sae train ... variant=name` and `toymodels benchmark run
   variants=[...,name]` (with `--plugin my_file.py` for code outside the package).
4. Built-in? Import its module in toymodels/sae/__init__.py. tests/test_sae.py iterates `builtin_variants()`
   (defaults plus k=3 where the config has k), so packing == one by one and the SAELens round trip cover it;
   add its planted-recovery settings to tests/test_sae_recovery.py and it to sweeps/benchmark_tiny.yaml.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import sys
from pathlib import Path
from typing import NamedTuple

from toymodels.errors import ConfigError, check

DEFAULT_VARIANT = "topk"
"""The variant `SAEConfig(...)` builds when none is named."""


class Variant(NamedTuple):
    name: str
    config: type
    """The variant's SAEConfig subclass."""
    module: type
    """Its PackedSAE subclass."""


_REGISTRY: dict[str, Variant] = {}


def register_variant(name: str, config: type, module: type | None = None):
    """Register variant `name` (config dataclass + packed module). Use as a decorator on the module class,
    `@register_variant("name", MyConfig)`, or call with the module. Re-registering a name is an error unless it
    is the same classes reloaded (same module and qualified names)."""
    from toymodels.sae.base import PackedSAE, SAEConfig

    def add(mod: type) -> type:
        check(isinstance(name, str) and name.isidentifier(), "variant", "an identifier-like name", name)
        check(isinstance(config, type) and issubclass(config, SAEConfig) and dataclasses.is_dataclass(config),
              f"variant {name}: config", "a @dataclass subclass of SAEConfig", config)
        check(isinstance(mod, type) and issubclass(mod, PackedSAE), f"variant {name}: module",
              "a subclass of PackedSAE", mod)
        old = _REGISTRY.get(name)
        if old is not None and (_qual(old.config), _qual(old.module)) != (_qual(config), _qual(mod)):
            raise ConfigError(f"variant: {name!r} is already registered (by {_qual(old.module)})")
        for other in _REGISTRY.values():
            if other.config is config and other.name != name:
                raise ConfigError(f"variant {name}: config {config.__name__} already belongs to {other.name}; "
                                  "subclass it (one config class per variant)")
        config.variant = name
        mod.config_class = config
        _REGISTRY[name] = Variant(name, config, mod)
        return mod

    return add if module is None else add(module)


def _qual(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def variant_names() -> tuple[str, ...]:
    """Registered variants, built-ins first, in registration order."""
    return tuple(_REGISTRY)


def builtin_variants() -> tuple[str, ...]:
    """The variants defined inside toymodels.sae (not registered by a plugin)."""
    return tuple(n for n, v in _REGISTRY.items() if v.module.__module__.startswith("toymodels.sae."))


def get_variant(name) -> Variant:
    """The registered variant `name`; unknown names are a one-line ConfigError listing the known ones."""
    check(name in _REGISTRY, "variant", f"one of {', '.join(_REGISTRY)} (or a registered plugin)", name)
    return _REGISTRY[name]


def config_fields(name: str) -> set[str]:
    """Names of the config fields of variant `name`."""
    return {f.name for f in dataclasses.fields(get_variant(name).config)}


def make_config(variant: str = DEFAULT_VARIANT, **fields):
    """The config of `variant` from keyword fields; a key the variant does not have is a one-line error."""
    cls = get_variant(variant).config
    names = config_fields(variant)
    for key in fields:
        if key not in names:
            raise ConfigError(f"{key}: not a field of variant {variant}; its fields: {', '.join(sorted(names))}")
    return cls(**fields)


def load_plugin(spec: str) -> None:
    """Import a user's variant definitions: a .py file path or an importable module name."""
    if spec.endswith(".py"):
        path = Path(spec)
        if not path.is_file():
            raise ConfigError(f"plugin: {spec} is not a file")
        name = f"toymodels_plugin_{path.stem}"
        mod_spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(mod_spec)
        sys.modules[name] = module
        mod_spec.loader.exec_module(module)
        return
    try:
        importlib.import_module(spec)
    except ModuleNotFoundError as e:
        raise ConfigError(f"plugin: cannot import {spec!r} ({e})") from None

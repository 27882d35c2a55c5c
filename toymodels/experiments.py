"""Named experiments: the YAML files in `sweeps/`, composed with Hydra (schema + YAML + override strings).

    from toymodels.experiments import compose, list_experiments
    cfg = compose("phase_2to1", ["grid.n=20", "train.restarts=5"])   # DictConfig, type-checked by its schema
    print(list_experiments())                                          # {name: (kind, description)}

Every experiment YAML has a top-level `kind:` (e.g. `sweep`); its schema dataclass is registered in Hydra's
ConfigStore under the name `<kind>_schema` (see `SCHEMAS`) and the YAML starts with
`defaults: [<kind>_schema, _self_]`, so an unknown key or a value of the wrong type is an error. Hydra's own
messages are multi-line; here they become one-line `ConfigError`s that name the key.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path

import yaml

from toymodels.errors import ConfigError

SWEEPS_DIR = Path(__file__).resolve().parent.parent / "sweeps"
"""Default folder of experiment YAMLs (the repository's `sweeps/`); TOYMODELS_SWEEPS_DIR overrides it."""

SCHEMAS = {
    "sweep": "toymodels.sweep:SweepConfig",
    "benchmark": "toymodels.groundtruth.benchmark:BenchmarkConfig",
    "atlas": "toymodels.groundtruth.atlas:AtlasConfig",
}
"""kind → "module:Dataclass" schema, registered in the ConfigStore as `<kind>_schema`."""


def sweeps_dir() -> Path:
    return Path(os.environ.get("TOYMODELS_SWEEPS_DIR") or SWEEPS_DIR)


def register_schemas() -> None:
    """Register the core schemas (`toymodels.config.register_configs`) and every experiment-kind schema."""
    from hydra.core.config_store import ConfigStore

    from toymodels.config import register_configs

    register_configs()
    cs = ConfigStore.instance()
    for kind in SCHEMAS:
        cs.store(name=f"{kind}_schema", node=_schema(kind))


def _schema(kind: str):
    target = SCHEMAS.get(kind)
    if target is None:
        return None
    module, _, cls = target.partition(":")
    return getattr(importlib.import_module(module), cls)


def list_experiments(kind: str | None = None) -> dict[str, tuple[str, str]]:
    """{name: (kind, first line of description)} for every readable YAML in `sweeps_dir()` (optionally of one
    kind); broken files are left out (see `broken_experiments`)."""
    out = {}
    for name, (raw, problem) in _scan().items():
        if problem:
            continue
        k = str(raw.get("kind", "?"))
        if kind is None or k == kind:
            lines = str(raw.get("description", "")).strip().splitlines()
            out[name] = (k, lines[0] if lines else "")
    return out


def broken_experiments() -> dict[str, str]:
    """{file name: what is wrong} for every YAML in `sweeps_dir()` that cannot be an experiment."""
    return {f"{name}.yaml": problem for name, (_, problem) in _scan().items() if problem}


def _scan() -> dict[str, tuple[dict, str]]:
    """{name: (parsed mapping, problem or "")} for every YAML in `sweeps_dir()`."""
    out = {}
    for path in sorted(sweeps_dir().glob("*.yaml")):
        try:
            raw = yaml.safe_load(path.read_text())
        except yaml.YAMLError as e:
            out[path.stem] = ({}, f"not valid YAML ({first(e)})")
            continue
        except (OSError, UnicodeDecodeError) as e:
            out[path.stem] = ({}, f"unreadable ({first(e)})")
            continue
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            out[path.stem] = ({}, f"must be a mapping of keys to values, not a {type(raw).__name__}")
        elif not isinstance(raw.get("kind", "?"), str):
            out[path.stem] = ({}, f"kind must be a string, got {raw.get('kind')!r}")
        else:
            out[path.stem] = (raw, "")
    return out


def compose(name: str, overrides: list[str] | tuple[str, ...] = (), kind: str | None = None):
    """Compose experiment `name` with Hydra override strings (e.g. "grid.n=20") into a DictConfig.

    `kind`: if given, the experiment must be of that kind. Unknown experiments, unknown keys, unparsable
    overrides and type errors raise a one-line ConfigError.
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    known = list_experiments()
    broken = broken_experiments().get(f"{name}.yaml")
    if broken:
        raise ConfigError(f"experiment: {sweeps_dir() / name}.yaml is broken: {broken}")
    if name not in known:
        raise ConfigError(f"experiment: unknown name {name!r}; available: {', '.join(known) or '(none)'} "
                          f"(YAML files in {sweeps_dir()})")
    if kind is not None and known[name][0] != kind:
        raise ConfigError(f"experiment: {name!r} is of kind {known[name][0]!r}, expected {kind!r}")
    register_schemas()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(version_base="1.3", config_dir=str(sweeps_dir()), job_name=name):
            cfg = hydra_compose(config_name=name, overrides=list(overrides))
        schema = _schema(known[name][0])
        if schema is not None:  # keys added with +key=value that the schema does not have
            _check_keys(cfg, schema)
        return cfg
    except ConfigError:
        raise
    except Exception as e:  # Hydra/OmegaConf errors: many types, multi-line messages
        raise ConfigError(one_line_error(e, overrides)) from None
    finally:
        GlobalHydra.instance().clear()


def first(x) -> str:
    """First line of an exception's message."""
    return str(x).strip().splitlines()[0] if str(x).strip() else type(x).__name__


def _check_keys(cfg, schema, prefix: str = "") -> None:
    import dataclasses

    fields = {f.name: f for f in dataclasses.fields(schema)}
    for key in cfg:
        if key == "hydra":
            continue
        if key not in fields:
            raise ConfigError(f"{prefix}{key}: unknown key for {schema.__name__}; "
                              f"valid keys: {', '.join(fields)}")
        value = cfg[key]
        if hasattr(value, "keys") and dataclasses.is_dataclass(_field_type(schema, key)):
            _check_keys(value, _field_type(schema, key), f"{prefix}{key}.")


def _field_type(schema, key):
    import typing

    return typing.get_type_hints(schema).get(key)


def one_line_error(e: BaseException, overrides=()) -> str:
    """`key: reason` in one line from a Hydra/OmegaConf error (whose messages span several lines)."""
    chain, c = [], e
    while c is not None and len(chain) < 10:
        chain.append(c)
        c = c.__cause__ or c.__context__
    keyed = next((c for c in chain if getattr(c, "full_key", None)), None)
    if keyed is not None:
        return f"{keyed.full_key}: {first(keyed)}"
    override = getattr(e, "override", None)
    if override:
        key = override.split("=")[0].lstrip("+~") if "=" in override else override
        return f"{key}: cannot parse override {override!r} ({first(chain[1] if len(chain) > 1 else e)})"
    text = first(e)
    key = next((o.split("=")[0].lstrip("+~") for o in overrides if o.split("=")[0].lstrip("+~") in text),
               "override")
    return text if text.startswith(f"{key}:") else f"{key}: {text}"


def to_container(cfg) -> dict:
    """A composed DictConfig as plain resolved Python containers."""
    from omegaconf import OmegaConf

    return OmegaConf.to_container(cfg, resolve=True)


def to_object(cfg):
    """A composed DictConfig as its schema dataclass instance (nested dataclasses built and validated)."""
    from omegaconf import OmegaConf

    try:
        return OmegaConf.to_object(cfg)
    except ConfigError:
        raise
    except Exception as e:
        inner = e.__cause__ or e
        if isinstance(inner, ConfigError):
            raise inner from None
        raise ConfigError(one_line_error(e)) from None

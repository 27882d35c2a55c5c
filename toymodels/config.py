"""Dataclass configs for toy models and their training, validated on construction.

`ToyConfig` says *what* is trained (features, model, the grid of instances); `TrainConfig` says *how*.
Both are plain dataclasses that Hydra/OmegaConf can use as structured-config schemas (`register_configs`).

Per-instance × per-feature quantities (density, importance) follow numpy broadcasting to `[instance, feature]`:
a scalar applies everywhere, a 1-D list is **per feature**, and a 2-D list is `[instance][feature]` (use a column
`[[d1], [d2], ...]` for one value per instance). The number of instances is the broadcast's leading size.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

from toymodels.errors import ConfigError, check

MODELS = ("relu_output", "linear", "hidden_relu", "abs_value")
STRUCTURES = ("independent", "correlated", "anticorrelated", "hierarchical")
MAGNITUDES = ("uniform", "symmetric")
SCHEDULES = ("constant", "cosine")


@dataclass
class ToyConfig:
    """The features, the model and the instances trained together as one tensor program."""

    n_features: int = 5
    """Number of sparse input features n (≥ 1)."""
    n_hidden: int = 2
    """Hidden dimensions m (≥ 1). For tied models m < n is where superposition lives; m ≥ n is allowed."""
    model: str = "relu_output"
    """One of relu_output (x' = ReLU(WᵀWx + b)), linear, hidden_relu (privileged basis), abs_value."""
    density: Any = 1.0
    """Per-feature probability 1−S of being non-zero, in (0, 1]; scalar, [feature] or [instance][feature]."""
    importance: Any = 1.0
    """Loss weight per feature, ≥ 0; scalar, [feature] or [instance][feature]. Multiplied by importance_decay**i."""
    importance_decay: float = 1.0
    """Importance of feature i is importance · importance_decay**i (the paper uses 0.9, 0.7, ...); > 0."""
    n_instances: int | None = None
    """Instances (configurations) trained at once. None: inferred from density/importance, else they must agree."""
    structure: str = "independent"
    """Feature sets: independent, correlated (a set shares one on/off draw), anticorrelated (a set is active with
    probability = density and then exactly one uniformly chosen member is on), hierarchical (the first member of a
    set is the parent; each child fires with probability child_prob, only when its parent fires)."""
    set_size: int = 2
    """Features per set for correlated/anticorrelated/hierarchical structure; must divide n_features."""
    child_prob: float = 0.5
    """Hierarchical structure: probability that a child fires given its parent fires, in (0, 1]."""
    magnitude: str | None = None
    """Magnitude law of active features: uniform U[0,1] or symmetric U[−1,1]. None: symmetric for abs_value."""
    normalize: bool = False
    """Scale every non-zero sample x to unit L2 norm (Henighan et al. 2023's finite-data setup); such configs
    train on the autograd path."""
    hidden_bias: Any = None
    """hidden_relu and abs_value only: None, no hidden bias (the paper's models); a number, or one per instance
    ([I] list), adds a trainable per-neuron bias, h = ReLU(W x + b_hidden), initialised to that value (Jermyn et
    al. 2022: a negative init gives monosemantic neurons); such configs train on the autograd path."""

    def __post_init__(self):
        check_types(self)
        check(_is_int(self.n_features) and self.n_features >= 1, "n_features", "an integer ≥ 1", self.n_features)
        check(_is_int(self.n_hidden) and self.n_hidden >= 1, "n_hidden", "an integer ≥ 1", self.n_hidden)
        check(self.model in MODELS, "model", f"one of {', '.join(MODELS)}", self.model)
        check(self.structure in STRUCTURES, "structure", f"one of {', '.join(STRUCTURES)}", self.structure)
        check(self.magnitude is None or self.magnitude in MAGNITUDES, "magnitude",
              f"one of {', '.join(MAGNITUDES)} or null", self.magnitude)
        check(_is_num(self.importance_decay) and self.importance_decay > 0, "importance_decay", "a number > 0",
              self.importance_decay)
        check(_is_num(self.child_prob) and 0 < self.child_prob <= 1, "child_prob", "in (0, 1]", self.child_prob)
        check(isinstance(self.normalize, bool), "normalize", "true or false", self.normalize)
        if self.hidden_bias is not None:
            arr = np.asarray(_plain(self.hidden_bias), dtype=object)  # object: a ragged list is not a numpy error
            hb = arr.reshape(-1)
            ok = arr.ndim <= 1 and hb.size >= 1 and all(_is_num(v) for v in hb)
            check(ok and self.model in ("hidden_relu", "abs_value"), "hidden_bias",
                  "null, or a number or [instance] list of numbers, with model hidden_relu or abs_value",
                  self.hidden_bias)
        if self.structure != "independent":
            check(_is_int(self.set_size) and self.set_size >= 1 and self.n_features % self.set_size == 0,
                  "set_size", f"an integer ≥ 1 that divides n_features={self.n_features}", self.set_size)
        from toymodels.budget import check_memory

        rows = max(_rows(self.density), _rows(self.importance))
        check_memory(48 * rows * self.n_features, f"density/importance grids ({rows} × n_features={self.n_features})")
        dens, imp = self._grid("density"), self._grid("importance")
        check(bool(np.all((dens > 0) & (dens <= 1))), "density", "in (0, 1] (density = 1 − sparsity)",
              _worst(dens, (dens > 0) & (dens <= 1)))
        check(bool(np.all(imp >= 0)), "importance", "≥ 0", _worst(imp, imp >= 0))
        hb = self.hidden_bias_array(1)
        n = max(dens.shape[0], imp.shape[0], len(hb))
        for name, rows in (("density", dens.shape[0]), ("importance", imp.shape[0]), ("hidden_bias", len(hb) or 1)):
            check(rows in (1, n), name, f"broadcastable to {n} instances", f"{rows} rows")
        if self.n_instances is not None:
            check(_is_int(self.n_instances) and self.n_instances >= 1, "n_instances", "an integer ≥ 1",
                  self.n_instances)
            check(n in (1, self.n_instances), "n_instances",
                  f"equal to the {n} instances given by density/importance", self.n_instances)

    def _grid(self, name: str) -> np.ndarray:
        """`name` as a float64 array [instance or 1, n_features], checked for shape."""
        raw = getattr(self, name)
        try:
            arr = np.asarray(_plain(raw), dtype=np.float64)
        except (TypeError, ValueError):
            raise ConfigError(f"{name}: must be a number or a (nested) list of numbers, got {raw!r}") from None
        check(arr.ndim <= 2 and np.isfinite(arr).all(), name, "a finite scalar, [feature] or [instance][feature]",
              f"shape {arr.shape}" if arr.ndim > 2 else raw)
        try:
            return np.broadcast_to(arr, (arr.shape[0] if arr.ndim == 2 else 1, self.n_features))
        except ValueError:
            raise ConfigError(f"{name}: shape {arr.shape} does not broadcast to [instance, "
                              f"n_features={self.n_features}] (a 1-D list is per feature)") from None

    @property
    def instances(self) -> int:
        """Number of instances (configurations) in this batch."""
        return self.n_instances or max(self._grid("density").shape[0], self._grid("importance").shape[0],
                                       len(self.hidden_bias_array(1)))

    def hidden_bias_array(self, n: int | None = None) -> np.ndarray:
        """[instance] initial hidden biases (broadcast to `n`, default the instances); empty if hidden_bias is None."""
        if self.hidden_bias is None:
            return np.zeros(0)
        hb = np.asarray(_plain(self.hidden_bias), dtype=np.float64).reshape(-1)
        n = self.instances if n is None else n
        return np.broadcast_to(hb, (max(n, len(hb)),)).copy() if len(hb) == 1 else hb

    def density_array(self) -> np.ndarray:
        """Density broadcast to [instance, feature] (float64)."""
        return np.broadcast_to(self._grid("density"), (self.instances, self.n_features)).copy()

    def importance_array(self) -> np.ndarray:
        """Importance · decay**i broadcast to [instance, feature] (float64)."""
        decay = float(self.importance_decay) ** np.arange(self.n_features)
        return np.broadcast_to(self._grid("importance") * decay, (self.instances, self.n_features)).copy()

    @property
    def magnitude_law(self) -> str:
        return self.magnitude or ("symmetric" if self.model == "abs_value" else "uniform")


@dataclass
class TrainConfig:
    """How the instances are optimised (defaults are the paper's settings)."""

    steps: int = 10_000
    """Optimiser steps (≥ 1)."""
    batch_size: int = 1024
    """Samples per step per instance (≥ 1)."""
    lr: float = 1e-3
    """Peak AdamW learning rate (> 0)."""
    weight_decay: float = 0.01
    """AdamW decoupled weight decay (torch's default, as in the paper's notebook). Negative values grow the
    weights (Liu, Liu & Gore 2025 use them to force strong superposition)."""
    schedule: str = "constant"
    """Learning-rate schedule: constant, or cosine (linear warm-up then cosine decay to lr·min_lr_frac)."""
    warmup_steps: int = 0
    """Linear warm-up steps (≥ 0, < steps)."""
    min_lr_frac: float = 0.0
    """Cosine schedule: final lr as a fraction of lr, in [0, 1]."""
    init_scale: float = 1.0
    """Multiplies the Xavier-normal weight init (> 0); a small init (e.g. 0.03) makes learning go from saddle to
    saddle, with features jumping between discrete dimensionalities (the learning-dynamics figure)."""
    restarts: int = 1
    """Best-of-N: train N copies of every instance from different inits and keep the lowest-loss one (≥ 1)."""
    seed: int = 0
    """Seeds init and data; the whole batch (all instances × restarts) is reproducible bit for bit from it."""
    eval_batches: int = 4
    """Fresh batches (shared by all restarts) that score the final loss used to pick the best restart (≥ 1)."""
    eval_mode: str = "sampled"
    """How the final loss (and so the kept restart) is scored: sampled (eval_batches fresh batches), or exact
    (the closed-form expected loss, `toymodels.theory.expected_loss`; relu_output with ≤ 3 independent U[0,1]
    features). At density 0.01 a 1,024-sample eval holds ~0.3 co-active pairs, too few to rank restarts."""
    log_every: int = 100
    """Record the per-instance loss (mean over the last log_every steps) every log_every steps (≥ 1)."""
    snapshot_every: int = 0
    """If > 0, keep a copy of the weights every snapshot_every steps (for learning-dynamics plots)."""
    sparse_sampling: str = "auto"
    """auto: sample only non-zero rows when that is much cheaper (independent features); always; never."""
    on_divergence: str = "raise"
    """raise: stop with an error naming the instance on a NaN/inf loss; mark: keep training the others and report
    the diverged instances' loss as NaN."""
    backward: str = "auto"
    """auto: hand-derived gradients and the fast batch-last data path for tied models (relu_output, linear,
    hidden_relu), autograd for abs_value; autograd: plain torch autograd everywhere (the slow reference path)."""
    dataset_size: Any = None
    """None: a fresh batch every step (infinite data). An integer T, or one per instance ([I] list): each instance
    trains full-batch on its own fixed set of T samples drawn once (restarts share it; batch_size is then unused),
    restarts are picked by their training-set loss and `final_loss` is the loss on fresh samples (the test loss;
    Henighan et al. 2023). Instances with equal T are trained as one tensor."""
    progress: bool = True
    """Show a progress bar (it is hidden anyway when stderr is not a terminal or under CI)."""
    device: str = "auto"
    """Where to train: auto (CUDA when present, else CPU; TOYMODELS_DEVICE overrides), cpu, cuda, cuda:N or mps.
    The CPU keeps its numpy-backed fast path; other devices train on the torch path (autograd, torch sampling on
    the device, dense batches unless sparse_sampling=always). Results come back on the CPU either way."""

    def __post_init__(self):
        from toymodels.device import check_device

        check_types(self)
        check_device(self.device)
        for name, lo in (("steps", 1), ("batch_size", 1), ("restarts", 1), ("eval_batches", 1),
                         ("log_every", 1), ("warmup_steps", 0), ("snapshot_every", 0)):
            value = getattr(self, name)
            check(_is_int(value) and value >= lo, name, f"an integer ≥ {lo}", value)
        check(_is_seed(self.seed), "seed", SEED_RANGE, self.seed)
        check(isinstance(self.progress, bool), "progress", "true or false", self.progress)
        check(_is_num(self.lr) and self.lr > 0, "lr", "a number > 0", self.lr)
        check(_is_num(self.weight_decay), "weight_decay", "a finite number", self.weight_decay)
        sizes = _plain(self.dataset_size) if self.dataset_size is not None else 1
        sizes = sizes if isinstance(sizes, list) else [sizes]
        ok = len(sizes) >= 1 and all(_is_int(v) and v >= 1 for v in sizes)
        check(ok, "dataset_size", "null, an integer ≥ 1 or a list of them (one per instance)", self.dataset_size)
        check(_is_num(self.init_scale) and self.init_scale > 0, "init_scale", "a number > 0", self.init_scale)
        check(_is_num(self.min_lr_frac) and 0 <= self.min_lr_frac <= 1, "min_lr_frac", "in [0, 1]",
              self.min_lr_frac)
        check(self.schedule in SCHEDULES, "schedule", f"one of {', '.join(SCHEDULES)}", self.schedule)
        check(self.warmup_steps < self.steps, "warmup_steps", f"< steps={self.steps}", self.warmup_steps)
        check(self.sparse_sampling in ("auto", "always", "never"), "sparse_sampling", "auto, always or never",
              self.sparse_sampling)
        check(self.on_divergence in ("raise", "mark"), "on_divergence", "raise or mark", self.on_divergence)
        check(self.backward in ("auto", "autograd"), "backward", "auto or autograd", self.backward)
        check(self.eval_mode in ("sampled", "exact"), "eval_mode", "sampled or exact", self.eval_mode)


def from_dict(cls, values: dict, where: str = ""):
    """Build dataclass `cls` from a plain dict, naming unknown keys and bad values in one-line errors."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        valid = ", ".join(sorted(names))
        raise ConfigError(f"{where}{unknown[0]}: unknown key for {cls.__name__}; valid keys: {valid}")
    return cls(**values)


def to_dict(cfg) -> dict:
    """A JSON-ready dict of a config dataclass (numpy arrays become lists)."""
    return {k: _plain(v) for k, v in dataclasses.asdict(cfg).items()}


def register_configs() -> None:
    """Register the schemas in Hydra's ConfigStore (group `schema`), so YAML experiments are type-checked."""
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    cs.store(group="schema", name="toy", node=ToyConfig)
    cs.store(group="schema", name="train", node=TrainConfig)


def _plain(v):
    """Lists/arrays/OmegaConf containers → nested Python lists of floats; scalars unchanged."""
    if hasattr(v, "tolist"):
        return v.tolist()
    if isinstance(v, (list, tuple)) or type(v).__name__ == "ListConfig":
        return [_plain(x) for x in v]
    return v


SEED_MAX = 2**63 - 1
"""Largest seed accepted anywhere (torch generators take 64-bit seeds; streams add small offsets)."""
SEED_RANGE = "an integer in [0, 2^63 − 1]"


def _is_seed(v) -> bool:
    return _is_int(v) and 0 <= v <= SEED_MAX


def _rows(raw) -> int:
    """Leading size of a density/importance value (1 unless it is a 2-D list), without building its grid."""
    try:
        shape = np.shape(_plain(raw))
    except (TypeError, ValueError):
        return 1
    return shape[0] if len(shape) == 2 else 1


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _is_num(v) -> bool:
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
        return False
    return isinstance(v, (int, np.integer)) or bool(np.isfinite(v))  # Python ints of any size are finite


def _worst(arr: np.ndarray, ok: np.ndarray):
    """The first offending value, for error messages."""
    bad = arr[~ok]
    return float(bad.flat[0]) if bad.size else None



def check_types(cfg, prefix: str = "") -> None:
    """Check every field of dataclass `cfg` against its annotation (int, float, str, bool, list[...], dict, a nested
    config, Optional, Any) before any range check runs, so a wrong type is a one-line ConfigError naming the field
    (`grid.x.lo`), never a TypeError from a comparison. Integers are accepted where floats are."""
    import typing

    hints = typing.get_type_hints(type(cfg))
    for f in dataclasses.fields(cfg):
        _check_type(getattr(cfg, f.name), hints.get(f.name, Any), prefix + f.name)


def _check_type(value, hint, name: str) -> None:
    import types
    import typing

    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:
            return _check_type(value, options[0], name)
        return
    if dataclasses.is_dataclass(hint):
        check(isinstance(value, hint), name, f"a {hint.__name__} mapping", value)
        return check_types(value, f"{name}.")
    base = origin or hint
    ok = {int: _is_int, float: lambda v: _is_int(v) or isinstance(v, (float, np.floating)),
          bool: lambda v: isinstance(v, (bool, np.bool_)), str: lambda v: isinstance(v, str),
          list: lambda v: isinstance(v, (list, tuple)) or type(v).__name__ == "ListConfig",
          tuple: lambda v: isinstance(v, (list, tuple)) or type(v).__name__ == "ListConfig",
          dict: lambda v: hasattr(v, "keys") and hasattr(v, "items")}.get(base)
    if ok is None:
        return
    words = {int: "an integer", float: "a number", bool: "true or false", str: "a string", list: "a list",
             tuple: "a list", dict: "a mapping"}
    check(ok(value), name, words[base], value)
    if base in (list, tuple) and args and args[0] in (int, float, str):
        for v in value:
            _check_type(v, args[0], f"{name}[]")

"""toymodels: Toy Models of Superposition trained many-at-once, and a ground-truth benchmark for SAEs.

    from toymodels import ToyConfig, TrainConfig, train
    result = train(ToyConfig(n_features=5, n_hidden=2, density=0.05), TrainConfig(restarts=5))
    print(result.summary())

The names below are imported on first use (PEP 562), so `import toymodels.cli` does not load torch before the
command line is parsed: a Ctrl-C during start-up reaches the CLI's handler instead of printing a traceback.
"""

import importlib
import sys
import types

__version__ = "0.1.0"

_LAZY = {
    "toymodels.analysis": ("dimensions_per_feature", "feature_dimensionality", "feature_norms", "feature_table",
                           "gram", "instance_table", "interference", "phases"),
    "toymodels.config": ("ToyConfig", "TrainConfig"),
    "toymodels.errors": ("ConfigError", "DataFileError", "DivergenceError", "ToyModelsError"),
    "toymodels.io": ("load_result", "save_result"),
    "toymodels.train": ("TrainResult", "train"),
}
_WHERE = {name: module for module, names in _LAZY.items() for name in names}

__all__ = [
    "ToyConfig", "TrainConfig", "TrainResult", "train", "save_result", "load_result",
    "gram", "feature_norms", "interference", "feature_dimensionality", "dimensions_per_feature", "phases",
    "feature_table", "instance_table", "ToyModelsError", "ConfigError", "DataFileError", "DivergenceError",
]


def __getattr__(name: str):
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'toymodels' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))


class _Package(types.ModuleType):
    def __setattr__(self, name, value):
        if name in _WHERE and isinstance(value, types.ModuleType):
            return  # importing the submodule toymodels.train must not shadow the function `train`
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package

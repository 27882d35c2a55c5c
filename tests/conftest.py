"""Shared fixtures."""

import os

import pandas as pd
import pytest
import torch

# The suite checks CPU results byte for byte: on a GPU machine `device=auto` would mean CUDA, so pin it to the
# CPU unless TOYMODELS_DEVICE is set (TOYMODELS_DEVICE=cuda runs the suite's default-device code on the GPU).
os.environ.setdefault("TOYMODELS_DEVICE", "cpu")


@pytest.fixture(scope="session")
def tables():
    """Each figure's quick-mode table (seed 0, one torch thread), computed once per test session."""
    cache = {}

    def get(name: str) -> pd.DataFrame:
        from toymodels.paper import load

        if name not in cache:
            before = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                cache[name] = load(name).compute(quick=True, seed=0)
            finally:
                torch.set_num_threads(before)
        return cache[name]

    return get


@pytest.fixture
def assert_packed_equals_alone():
    """Check that training SAE configs together (packed) equals training each alone: tensors and loss history."""

    def check(cfgs, X, tc):
        from toymodels.sae import train_saes

        together = train_saes(cfgs, X, tc)
        for cfg, a in zip(cfgs, together, strict=True):
            (b,) = train_saes([cfg], X, tc)
            for name, t in a.tensors().items():
                torch.testing.assert_close(t, b.tensors()[name], rtol=1e-4, atol=1e-5, msg=f"{cfg.label} {name}")
            assert a.history["loss"] == pytest.approx(b.history["loss"], rel=1e-4)

    return check

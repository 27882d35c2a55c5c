"""Shared fixtures."""

import pandas as pd
import pytest
import torch


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

"""Independent random streams from one user seed.

`torch.Generator().manual_seed(s)` gives the same numbers to everyone who uses seed s: a ground-truth dictionary
drawn with seed 0 and an SAE decoder initialised with seed 0 would be the *same* matrix, so the SAE would start
at the answer. Every stream in the package that could meet another is drawn from (seed, purpose) instead."""

from __future__ import annotations

import hashlib

import torch


def generator(seed: int, purpose: str) -> torch.Generator:
    """A torch.Generator seeded from a hash of (seed, purpose): same inputs, same stream; another purpose or a
    plain `manual_seed(seed)` gives an unrelated one."""
    digest = hashlib.sha256(f"toymodels:{purpose}:{int(seed)}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))

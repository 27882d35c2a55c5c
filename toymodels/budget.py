"""Estimate before allocating: every command sizes what it is about to build and refuses, in one line with the
estimate and the limit, what cannot fit the machine, instead of dying in the allocator (or swapping for hours).

The limit is the memory available now: /proc/meminfo's MemAvailable, lowered to the cgroup's remaining allowance
inside a container (memory.max − memory.current). Estimates count the large tensors a command holds at once
(weights, optimiser state, one step's activations), not Python's overhead, so they err towards letting a run
start. `TOYMODELS_NO_MEMORY_CHECK=1` (or `toymodels --no-memory-check`) skips the check for users who know better,
e.g. with swap or memory that the estimate does not see.
"""

from __future__ import annotations

import os
from pathlib import Path

from toymodels.errors import ResourceError

OVERRIDE = "TOYMODELS_NO_MEMORY_CHECK"
"""Environment variable that turns the memory check off (1, true or yes)."""
FLOAT = 4
"""Bytes per float32 element."""


def check_enabled() -> bool:
    return os.environ.get(OVERRIDE, "").strip().lower() not in ("1", "true", "yes")


def available_bytes() -> int | None:
    """Memory this process can still use (bytes), or None where the platform does not say."""
    avail = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                avail = int(line.split()[1]) * 1024
                break
    except (OSError, ValueError, IndexError):
        pass
    if avail is None:
        try:
            avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return None
    try:  # cgroup v2 limit of this container, if any
        root = Path("/sys/fs/cgroup")
        limit = (root / "memory.max").read_text().strip()
        if limit != "max":
            avail = min(avail, int(limit) - int((root / "memory.current").read_text()))
    except (OSError, ValueError):
        pass
    return max(int(avail), 0)


def human(nbytes: float) -> str:
    """1.2 GB, 340 MB, 5.0 TB (powers of 1000)."""
    for unit, size in (("PB", 1e15), ("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if nbytes >= size:
            return f"{nbytes / size:.1f} {unit}"
    return f"{int(nbytes)} B"


def check_memory(nbytes: float, what: str) -> None:
    """Raise ResourceError(`what`: needs about X, more than the Y available) unless `nbytes` fits."""
    if not check_enabled():
        return
    avail = available_bytes()
    if avail is not None and nbytes > avail:
        raise ResourceError(f"{what}: needs about {human(nbytes)} of memory, more than the {human(avail)} available "
                            f"on this machine; use smaller sizes (or set {OVERRIDE}=1 to try anyway)")


def train_bytes(K: int, F: int, H: int, B: int, *, I: int | None = None, steps: int = 1, log_every: int = 1,
                snapshot_every: int = 0) -> int:
    """Peak memory of `train()` on K = instances × restarts models of F features in H dims with batch B: weights
    with gradients, optimiser moments and the fast path's augmented copies (~8 K·F·(H+1)), one step's
    activations (~6 K·F·B inputs, outputs, errors, gradients; 2 K·(H+1)·B hidden), weight snapshots and loss
    history."""
    I = K if I is None else I
    snaps = (steps // snapshot_every + 2) * I * F * H if snapshot_every else 0
    history = (steps // log_every + 1) * K
    return FLOAT * (8 * K * F * (H + 1) + 6 * K * F * B + 2 * K * (H + 1) * B + snaps + history) + 32 * I * F


def sae_bytes(widths_inputs: list[tuple[int, int]], batch: int) -> int:
    """Peak memory of training SAEs of (d_sae L, d_in D) together with batch B: per SAE 2·L·D + L + D weights ×
    4 (weights, gradients, two Adam moments) and ~6 B·L activations of a step (pre-activations, activations, masks
    and their gradients)."""
    return FLOAT * sum(4 * (2 * L * D + L + D) + 6 * batch * L + 2 * batch * D for L, D in widths_inputs)


def score_bytes(n: int, n_features: int, n_latents: int, d: int) -> int:
    """Peak memory of scoring an SAE on n samples: dense true activations [n, F], latent activations and their
    masks ([n, L], ~4 copies), reconstructions [n, d] and the |cos| matrix [F, L]."""
    return FLOAT * (n * n_features + 4 * n * n_latents + 2 * n * d + 2 * n_features * n_latents)

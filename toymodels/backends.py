"""Where sweep batches run: joblib's local backends (loky, threading, sequential), a Dask cluster or a Ray
cluster (local, or reached at an address), each behind one context manager, plus Ray tasks yielded as they finish."""

from __future__ import annotations

import contextlib

from toymodels.errors import ConfigError

BACKENDS = ("loky", "threading", "sequential", "dask", "ray")

DASK_CONNECT_TIMEOUT = 5.0
"""Seconds to wait for a Dask scheduler at `address` before giving up with one line."""


@contextlib.contextmanager
def quiet_on_interrupt():
    """On Ctrl-C, silence what tearing down a worker pool or cluster logs and warns (closing a half-started Dask
    cluster logs tracebacks, pools warn about killed workers): the CLI prints its one line instead."""
    import logging
    import warnings

    try:
        yield
    except KeyboardInterrupt:
        warnings.simplefilter("ignore")
        for name in ("distributed", "asyncio", "tornado", "joblib", "ray", ""):
            logging.getLogger(name).setLevel(logging.CRITICAL + 1)
        raise


@contextlib.contextmanager
def backend(name: str, n_jobs: int, address: str | None, gpu: bool = False):
    """joblib parallel_config for backend `name` (starting a local Dask/Ray cluster if no `address`); yields the
    n_jobs to pass to joblib.Parallel. On a GPU, loky/threading run sequentially in the process that owns it."""
    with quiet_on_interrupt(), _backend_config(name, n_jobs, address, gpu) as jobs, quiet_on_interrupt():
        yield jobs


@contextlib.contextmanager
def _backend_config(name: str, n_jobs: int, address: str | None, gpu: bool):
    import joblib

    if name == "dask":
        from dask.distributed import Client, LocalCluster

        with contextlib.ExitStack() as stack:
            if address:
                try:
                    client = Client(address, timeout=DASK_CONNECT_TIMEOUT)
                except (OSError, TimeoutError, ValueError, TypeError) as e:
                    raise ConfigError(f"address: cannot reach a Dask scheduler at {address!r} within "
                                      f"{DASK_CONNECT_TIMEOUT:g}s ({' '.join(str(e).split())[:120]}); start one "
                                      "(dask scheduler) or leave address unset for a local cluster") from None
                stack.enter_context(client)
            else:
                n = n_jobs if n_jobs > 0 else None
                cluster = stack.enter_context(LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                                                           host="127.0.0.1", dashboard_address=None))
                stack.enter_context(Client(cluster))
            with joblib.parallel_config(backend="dask"):
                yield -1
        return
    if name == "ray":
        import ray
        from ray.util.joblib import register_ray

        ray.init(address=address, ignore_reinit_error=True)
        register_ray()
        with joblib.parallel_config(backend="ray"):
            yield -1
        return
    if name in ("loky", "threading") and gpu:
        with joblib.parallel_config(backend="sequential"):  # one process owns the GPU; its batches are wide
            yield 1
        return
    with joblib.parallel_config(backend=name):
        yield n_jobs


def check_backend(cfg) -> None:
    """The backend's package is installed (one line on how to install it, not an ImportError)."""
    import importlib.util

    need = {"dask": ("distributed", "dask"), "ray": ("ray", "ray")}.get(cfg.backend)
    if need and importlib.util.find_spec(need[0]) is None:
        raise ConfigError(f"backend: {cfg.backend} is not installed; install it with pip install "
                          f"'toymodels[{need[1]}]' (or pip install '{need[1]}'), or use backend=loky")


def ray_unordered(fn, items: list):
    """fn of every item as Ray tasks, yielded as they finish (Ray's joblib backend cannot return results
    unordered or one by one, and a killed sweep should keep every batch that finished)."""
    import ray

    task = ray.remote(num_cpus=1)(fn)
    pending = [task.remote(b) for b in items]
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        yield ray.get(done[0])

"""Where tensor programs run: the `device` option (auto, cpu, cuda, cuda:N, mps) and SAE training `precision`.

`auto` is CUDA when torch sees a GPU, else CPU; the environment variable TOYMODELS_DEVICE, when set, says what
`auto` means (e.g. TOYMODELS_DEVICE=cpu pins a GPU machine's test suite to the CPU). Asking for a device this
machine does not have is one line (`ConfigError`), not a CUDA traceback.

Every trainer runs on the resolved device and hands back CPU tensors, so saving, analysis and scoring code never
sees a device. On the CPU the numpy-backed fast paths run as before; elsewhere the trainers take their torch code
paths (torch generators on the device, no host round trip per step).
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import re

import torch

from toymodels.errors import ConfigError, check

DEVICE_HELP = "auto, cpu, cuda, cuda:N or mps"
PRECISIONS = ("float32", "tf32", "bf16")
"""SAE training precision: float32 (default, exact), tf32 (TensorFloat-32 matmuls on CUDA; no effect on CPU),
bf16 (bfloat16 autocast of the SAEs' dense encoder and decoder products, outputs back in float32; weights,
optimiser state and every other op stay float32, so variant code never sees a bfloat16 tensor)."""
_BF16: contextvars.ContextVar = contextvars.ContextVar("toymodels_bf16", default=None)
_SYNTAX = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def check_device(value, field: str = "device") -> None:
    """`value` is a device name (syntax only; availability is checked by `resolve` when work starts)."""
    check(isinstance(value, str) and bool(_SYNTAX.match(value)), field, f"one of {DEVICE_HELP}", value)


def check_precision(value, field: str = "precision") -> None:
    check(value in PRECISIONS, field, f"one of {', '.join(PRECISIONS)}", value)


def resolve(value: str = "auto", field: str = "device") -> torch.device:
    """The torch.device `value` names on this machine; a one-line ConfigError if it is not available here."""
    check_device(value, field)
    if value == "auto":
        env = os.environ.get("TOYMODELS_DEVICE", "").strip()
        if env and env != "auto":
            return resolve(env, "TOYMODELS_DEVICE")
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(value)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            why = "torch was built without CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise ConfigError(f"{field}: {value} is not available on this machine ({why}, torch "
                              f"{torch.__version__}); use {field}=cpu or {field}=auto")
        n = torch.cuda.device_count()
        if dev.index is not None and dev.index >= n:
            raise ConfigError(f"{field}: {value} is not available on this machine (it has {n} CUDA device(s): "
                              f"cuda:0 to cuda:{n - 1})")
    if dev.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ConfigError(f"{field}: mps is not available on this machine (Apple GPUs only); use {field}=cpu or "
                          f"{field}=auto")
    return dev


def cpu_fast_paths(dev: torch.device) -> bool:
    """Whether work on `dev` takes the CPU-only code paths (numpy samplers, CPU-only kernels): on the CPU, unless
    TOYMODELS_TORCH_PATH=1 asks for the device-agnostic torch paths there too (how the tests exercise, on a
    machine without a GPU, the code that runs on one)."""
    return torch.device(dev).type == "cpu" and os.environ.get("TOYMODELS_TORCH_PATH", "") in ("", "0")


def hash_fields(device: str, precision: str = "float32") -> dict:
    """What a result's cache key says about where it was computed: nothing for the CPU at float32 (keys made
    before the device option stay valid), else the device kind it resolves to and the precision."""
    dev = resolve(device)
    kind = "cpu" if cpu_fast_paths(dev) else "torch-cpu" if dev.type == "cpu" else dev.type
    return ({} if kind == "cpu" else {"device": kind}) | ({} if precision == "float32" else {"precision": precision})


def describe(dev) -> str:
    """Provenance string: `cpu`, or e.g. `cuda:0 (NVIDIA H200)`."""
    dev = torch.device(dev)
    if dev.type == "cuda":
        i = dev.index if dev.index is not None else torch.cuda.current_device()
        return f"cuda:{i} ({torch.cuda.get_device_name(i)})"
    return str(dev)


@contextlib.contextmanager
def precision_context(precision: str, dev: torch.device):
    """Run the enclosed forward passes at `precision` on `dev` (float32: unchanged)."""
    check_precision(precision)
    dev = torch.device(dev)
    if precision == "float32":
        yield
    elif precision == "tf32":
        before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        try:
            yield
        finally:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before
    else:
        token = _BF16.set(dev.type)
        try:
            yield
        finally:
            _BF16.reset(token)


def matmul_autocast():
    """Inside `precision_context("bf16", ...)`: bfloat16 autocast for one dense product (the caller casts its
    output back to float32); elsewhere a no-op."""
    kind = _BF16.get()
    return contextlib.nullcontext() if kind is None else torch.autocast(device_type=kind, dtype=torch.bfloat16)


def synchronize(dev) -> None:
    """Wait for queued kernels (for honest timings on asynchronous devices)."""
    dev = torch.device(dev)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    elif dev.type == "mps":
        torch.mps.synchronize()


def unavailable_reason() -> str | None:
    """None when a CUDA GPU is usable here, else why not (one line)."""
    try:
        resolve("cuda")
    except ConfigError as e:
        return str(e).split(": ", 1)[1].split("; use ")[0]
    return None


__all__ = ["DEVICE_HELP", "PRECISIONS", "ConfigError", "check_device", "check_precision", "cpu_fast_paths",
           "describe", "hash_fields", "matmul_autocast", "precision_context", "resolve", "synchronize",
           "unavailable_reason"]

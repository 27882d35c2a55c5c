"""Safe, atomic persistence: safetensors for tensors, JSON for configs. Nothing is ever unpickled.

Every write goes to a temporary file in the destination folder and is renamed into place (`os.replace` is
atomic on POSIX), so an interrupted run never leaves a half-written file under the final name.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from toymodels.config import ToyConfig, TrainConfig, from_dict, to_dict
from toymodels.errors import ConfigError, DataFileError

_UMASK = os.umask(0o022)
os.umask(_UMASK)

FORMAT_VERSION = 1
"""Bumped when the on-disk layout changes incompatibly; loading checks it."""


@contextlib.contextmanager
def temp_beside(path: str | os.PathLike, then=None):
    """Yield a temporary path beside `path`. When the block ends, the file is given the umask's permissions,
    fsynced and handed to `then(tmp)` (e.g. a rename); on any failure it is removed and an OSError names `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        yield Path(tmp)
        # mkstemp (and safetensors, which recreates the file) make 0600 files; results are meant to be shared
        os.chmod(tmp, 0o666 & ~_UMASK)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        if then is not None:
            then(Path(tmp))
    except BaseException as e:
        if tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        if isinstance(e, OSError):
            _name_destination(e, path)
        raise


def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside `path`; on success rename it to `path`, on failure remove it."""
    return temp_beside(path, then=lambda tmp: os.replace(tmp, path))


def _name_destination(e: OSError, path: Path) -> None:
    """Make an OSError about the temporary file (or about no file: a failed write) name the destination."""
    name = None if e.filename is None else os.path.basename(os.fsdecode(e.filename))
    if name is None or (name.startswith(f".{path.name}.") and name.endswith(".tmp")):
        e.filename, e.filename2 = str(path), None


def check_out_path(value, field: str = "out") -> None:
    """A config's output path may be absolute (an explicit choice) but a relative one must not climb out of the
    working directory with `..`: a shared experiment file cannot make a run write outside its results folder."""
    if value is None:
        return
    p = Path(str(value))
    if not p.is_absolute() and os.path.normpath(p).split(os.sep)[0] == "..":
        raise ConfigError(f"{field}: must stay inside the working directory (no leading '..'), got {str(value)!r}")


def safe_join(root, *parts: str) -> Path:
    """root / parts, refusing names (from configs or files) that would land outside root."""
    root = Path(root).resolve()
    path = root.joinpath(*parts).resolve()
    if path != root and root not in path.parents:
        raise ConfigError(f"{'/'.join(parts)}: path escapes the output folder {root}")
    return path


def write_text(path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_json(path) -> dict:
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise DataFileError(f"{path}: file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataFileError(f"{path}: not valid JSON ({e.msg if hasattr(e, 'msg') else e})") from None


def save_tensors(path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    with atomic_path(path) as tmp:
        try:
            save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp), metadata=metadata)
        except SafetensorError as e:  # an I/O failure inside safetensors' Rust writer: report it as the OSError
            raise _os_error_of(e, path) from None


def _os_error_of(e: Exception, path) -> Exception:
    """safetensors reports I/O failures as "... (os error 28)": the OSError with that errno and `path`."""
    import re

    m = re.search(r"os error (\d+)", str(e))
    if not m:
        return e
    code = int(m.group(1))
    return OSError(code, os.strerror(code), str(path))


def load_tensors(path, required: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
    """Load a safetensors file; a missing, truncated, pickled or otherwise malformed file is a DataFileError."""
    from toymodels.budget import check_memory

    path = Path(path)
    if path.is_dir():
        raise DataFileError(f"{path}: is a folder, expected a .safetensors file")
    if not path.is_file():
        raise DataFileError(f"{path}: file not found")
    check_memory(path.stat().st_size, f"loading {path}")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise DataFileError(f"{path}: not a valid safetensors file ({str(e).splitlines()[0][:120]})") from None
    missing = [k for k in required if k not in tensors]
    if missing:
        raise DataFileError(f"{path}: missing tensor(s) {', '.join(missing)}; found {', '.join(sorted(tensors))}")
    return tensors


def environment() -> dict[str, str]:
    """Versions needed to rerun a result exactly."""
    import numpy

    from toymodels import __version__

    return {"toymodels": __version__, "torch": torch.__version__, "numpy": numpy.__version__,
            "python": platform.python_version(), "torch_threads": str(torch.get_num_threads())}


def save_result(result, out_dir, extra: dict[str, str] | None = None) -> Path:
    """Write a TrainResult as `weights.safetensors` + `config.json` (configs, losses, versions) in `out_dir`,
    plus `extra` text files ({name: text}), as one transaction (`toymodels.outdir`): a reader sees the complete
    previous result or the complete new one, never a mix."""
    from toymodels.outdir import lock, transaction

    out = Path(out_dir)
    tensors = {f"model.{k}": v for k, v in result.model.state_dict().items()}
    tensors.update(final_loss=result.final_loss, restart_loss=result.restart_loss, best_restart=result.best_restart,
                   loss_history=result.loss_history, history_steps=result.history_steps)
    with lock(out), transaction(out, meta={"kind": "train"}) as tx:
        tx.save_tensors("weights.safetensors", tensors)
        tx.write_json("config.json", {
            "format_version": FORMAT_VERSION, "toy": to_dict(result.config), "train": to_dict(result.train),
            "meta": result.meta, "environment": environment(),
        })
        for name, text in (extra or {}).items():
            tx.write_text(name, text)
    return out


def load_result(out_dir):
    """Load what `save_result` wrote (weights into a model of the recorded config)."""
    from toymodels.models import empty_model
    from toymodels.outdir import check_finished, verify
    from toymodels.train import TrainResult

    out = Path(out_dir)
    seen = check_finished(out)
    info = read_json(out / "config.json")
    version = info.get("format_version")
    if version != FORMAT_VERSION:
        raise DataFileError(f"{out}: results format_version {version!r} is not supported "
                            f"(this toymodels reads version {FORMAT_VERSION})")
    cfg, tc = from_dict(ToyConfig, info["toy"], "toy."), from_dict(TrainConfig, info["train"], "train.")
    tensors = load_tensors(out / "weights.safetensors", ("final_loss", "restart_loss", "best_restart"))
    model = empty_model(cfg, cfg.instances)
    state = {k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")}
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise DataFileError(f"{out / 'weights.safetensors'}: weights do not match the config "
                            f"({str(e).splitlines()[-1].strip()[:160]})") from None
    verify(out, ("config.json", "weights.safetensors"), seen)  # hashes last: specific errors above first
    return TrainResult(config=cfg, train=tc, model=model, final_loss=tensors["final_loss"],
                       restart_loss=tensors["restart_loss"], best_restart=tensors["best_restart"],
                       history_steps=tensors.get("history_steps", torch.zeros(0)),
                       loss_history=tensors.get("loss_history", torch.zeros(0)), meta=info.get("meta", {}))

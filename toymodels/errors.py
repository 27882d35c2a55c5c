"""Exceptions that the CLI turns into one clear line (and a non-zero exit) instead of a traceback."""

import errno
import os


class ToyModelsError(Exception):
    """Base class: any error a user can fix from its message alone."""


class ConfigError(ToyModelsError, ValueError):
    """A configuration value is invalid. The message names the field and the accepted range."""


class DataFileError(ToyModelsError):
    """A dataset, weights or results file is missing, malformed, truncated or from an incompatible version."""


class DivergenceError(ToyModelsError, FloatingPointError):
    """Training produced a NaN/inf loss. The message names the instance(s) and the step."""


class ResourceError(ToyModelsError):
    """What a command is about to build cannot fit the machine (memory, or a count past a sane bound). The message
    gives the estimate and the limit; `TOYMODELS_NO_MEMORY_CHECK=1` skips the memory check."""


def check(cond: bool, field: str, accepted: str, value=None) -> None:
    """Raise ConfigError(`field`: accepted range, got value) unless `cond` holds."""
    if not cond:
        got = "" if value is None else f", got {short_repr(value)}"
        raise ConfigError(f"{field}: must be {accepted}{got}")


def short_repr(value, limit: int = 80) -> str:
    """repr(value), cut to `limit` characters (a 400-entry list must not flood a one-line error)."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]} ... ({len(text)} characters)"


_OS_ADVICE = {
    errno.ENOSPC: "no space left on the device; free some space or write somewhere else",
    errno.EDQUOT: "disk quota exceeded; free some space or write somewhere else",
    errno.EROFS: "the file system is read-only; write somewhere else",
    errno.EACCES: "permission denied; choose a location you can write to (or read from) or fix its permissions",
    errno.EPERM: "operation not permitted; choose a location you can write to or fix its permissions",
    errno.EEXIST: "exists and is not a folder; choose another output folder or remove that file",
    errno.ENOTDIR: "a part of this path is a file, not a folder; choose another path",
    errno.EISDIR: "is a folder where a file is expected; choose another file name or remove the folder",
    errno.ENOENT: "no such file or folder",
    errno.ENAMETOOLONG: "the name is too long; choose a shorter path",
    errno.EMFILE: "too many open files; raise the limit (ulimit -n) or run fewer jobs at once",
    errno.ENFILE: "too many open files on the system; try again with fewer jobs",
    errno.EIO: "input/output error on the device; check the disk",
    errno.ENOMEM: "out of memory; use smaller sizes",
}


def describe_os_error(e: OSError) -> str:
    """One line for an OSError: the path it concerns and what to do (`path: advice`)."""
    advice = _OS_ADVICE.get(e.errno) or (e.strerror or str(e) or type(e).__name__)
    path = e.filename2 if e.filename2 is not None else e.filename
    return f"{os.fsdecode(path)}: {advice}" if path is not None else advice

"""Output folders a reader can trust: staged writes committed under a content manifest, one writer at a time.

Every command that writes several related files (train, sae train, benchmark run, figures) writes them through a
`transaction(folder)`:

1. each file is staged as a hidden temp file beside its final name (all the slow work: training is long done,
   serialising and plotting happen here); a kill or a full disk now leaves the old output untouched;
2. commit: `manifest.json` is replaced by a marker saying "incomplete", the staged files are renamed into
   place (milliseconds), and `manifest.json` is rewritten last with every output file's SHA-256.

Readers (`load_result`, `load_saelens` and so the scorer, `load_benchmark`, `verify_gallery`) call `verify`:
a folder whose manifest is incomplete, or whose files do not match it, is refused in one line. A folder with no
manifest at all (written by another tool, e.g. a SAELens SAE, or by toymodels < 0.x) is read as before.

`lock(path)` makes a command the only writer of a folder (or file) while it runs: a second writer is refused in
one line naming the holder (pid, host, command). The lock is an `flock` on a hidden file, which the kernel drops
when its holder dies, so a lock left by a killed process is simply taken over.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import signal
import socket
import sys
import time
from pathlib import Path

from toymodels.errors import ConfigError, DataFileError, ToyModelsError
from toymodels.io import _UMASK, atomic_path, read_json, temp_beside

MANIFEST = "manifest.json"
LOCK = ".toymodels.lock"
FORMAT = "toymodels-manifest/1"

FAULT_HOOK = None
"""Tests set this to a callable(point) run at every fault point (e.g. to snapshot the folder)."""
_hits: dict[str, int] = {}


def fault_point(point: str) -> None:
    """A place where a kill is tested. `TOYMODELS_KILL_AT=point` (or `point#n`, the n-th time) sends SIGKILL."""
    if FAULT_HOOK is not None:
        FAULT_HOOK(point)
    want = os.environ.get("TOYMODELS_KILL_AT")
    if want and want.split("#")[0] == point:
        _hits[point] = _hits.get(point, 0) + 1
        if "#" not in want or int(want.split("#")[1]) == _hits[point]:
            os.kill(os.getpid(), signal.SIGKILL)


class FolderInUse(ToyModelsError):
    """Another live process is writing the same output folder."""


def sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_manifest(folder) -> dict | None:
    """The folder's manifest, or None when it has none (a folder not written through a transaction)."""
    path = Path(folder) / MANIFEST
    if not path.exists():
        return None
    m = read_json(path)
    if not isinstance(m, dict) or m.get("format") != FORMAT or not isinstance(m.get("files"), dict):
        raise DataFileError(f"{path}: not a toymodels manifest (expected format {FORMAT!r})")
    return m


def check_finished(folder) -> dict | None:
    """Refuse a folder whose last write was interrupted (cheap: no hashing); return its manifest or None.
    Loaders call this first, so an interrupted write is reported as such, and `verify` last."""
    folder = Path(folder)
    m = read_manifest(folder)
    if m is not None and not m.get("complete"):
        raise DataFileError(f"{folder}: incomplete output (a write was interrupted, see {MANIFEST}); "
                            "rerun the command that wrote it")
    return m


_UNSET = object()


def verify(folder, required: tuple[str, ...] = (), seen=_UNSET) -> dict | None:
    """Refuse (DataFileError, one line) a folder whose last write did not finish or whose files do not match
    its manifest; return the manifest (None for a folder without one, which is accepted as before).

    `seen`: the manifest `check_finished` returned before the caller read the files; if another run committed
    since, what was read may mix both runs, so that is refused too."""
    folder = Path(folder)
    m = check_finished(folder)
    if seen is not _UNSET and m != seen:
        raise DataFileError(f"{folder}: another run replaced this output while it was being read; read it again")
    if m is None:
        return None
    for name in required:
        if name not in m["files"]:
            raise DataFileError(f"{folder / name}: not part of the output recorded in {MANIFEST} "
                                "(left from another run?)")
    for name, digest in m["files"].items():
        path = folder / name
        if not path.is_file():
            raise DataFileError(f"{path}: missing, but listed in {folder / MANIFEST}; "
                                "rerun the command that wrote it")
        if sha256(path) != digest:
            raise DataFileError(f"{path}: does not match {folder / MANIFEST} (changed or replaced after it was "
                                "written); rerun the command that wrote it")
    return m


def is_complete(folder, key: str | None = None) -> bool:
    """True when `folder` holds a verified, complete output (whose manifest meta.key equals `key`, if given)."""
    try:
        m = verify(folder)
    except DataFileError:
        return False
    return m is not None and (key is None or m.get("meta", {}).get("key") == key)


class Transaction:
    """Stage an output folder's files, then commit them under a new manifest (see the module docstring)."""

    def __init__(self, folder, meta: dict | None = None, keep: bool = False):
        self.folder = Path(folder)
        self.meta = meta or {}
        self.keep = keep  # keep the previous output's other files (a partial update, e.g. figures --only)
        self.staged: dict[str, tuple[Path, str]] = {}  # name → (temp path, sha256)
        self.adopted: dict[str, str] = {}
        self.removed: set[str] = set()
        try:  # we hold the folder's lock (callers take it), so this stays true until commit
            self.old = read_manifest(self.folder)
        except DataFileError:
            self.old = None  # an unreadable manifest: treated as no previous output
        self.old_files = dict(self.old["files"]) if self.old else {}
        self.pending = set(self.old.get("pending", [])) if self.old and not self.old.get("complete") else set()

    def _carried(self) -> list[str]:
        """With keep: the earlier output's files this commit leaves as they are (not those an interrupted
        commit may have half-replaced; they are re-hashed at commit, so a file restored by e.g. git counts)."""
        if not self.keep:
            return []
        return [n for n in self.old_files if n not in self.pending and (self.folder / n).is_file()]

    def planned(self) -> set[str]:
        """The files the manifest will list after commit (given what is staged so far)."""
        carried = set(self._carried())
        return (carried | set(self.adopted) | set(self.staged)) - self.removed

    @contextlib.contextmanager
    def file(self, name: str):
        """Yield a temp path to write `name` (relative to the folder) into; it is renamed at commit."""

        def stage(tmp: Path) -> None:
            old = self.staged.pop(name, None)
            if old:
                os.unlink(old[0])
            self.staged[name] = (tmp, sha256(tmp))

        with temp_beside(self.folder / name, then=stage) as tmp:
            yield tmp
        fault_point("staged")

    def write_text(self, name: str, text: str) -> None:
        with self.file(name) as tmp:
            tmp.write_text(text)

    def write_json(self, name: str, obj) -> None:
        self.write_text(name, json.dumps(obj, indent=2, sort_keys=True) + "\n")

    def save_tensors(self, name: str, tensors: dict, metadata: dict | None = None) -> None:
        from safetensors.torch import save_file

        with self.file(name) as tmp:
            save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp), metadata=metadata)

    def remove(self, name: str) -> None:
        """`name` is no longer part of the output (deleted at commit if present)."""
        self.removed.add(name)

    def adopt(self, name: str) -> None:
        """List an existing file, as it is, in the new manifest (for folders written before manifests)."""
        if (self.folder / name).is_file():
            self.adopted[name] = sha256(self.folder / name)

    def abort(self) -> None:
        for tmp, _ in self.staged.values():
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        self.staged.clear()

    def commit(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        old_files, pending = self.old_files, self.pending
        new = {n: h for n, (_, h) in self.staged.items()}
        fault_point("commit")
        # from here until the final manifest the folder reads as incomplete
        self._write_manifest({"complete": False, "files": {**old_files, **self.adopted},
                              "pending": sorted(pending | set(new) | self.removed)})
        fault_point("marked")
        for name, (tmp, _) in list(self.staged.items()):
            os.replace(tmp, self.folder / name)
            del self.staged[name]
            fault_point("renamed")
        carried = {n: sha256(self.folder / n) for n in self._carried() if n not in new}
        files = {n: h for n, h in {**carried, **self.adopted, **new}.items() if n not in self.removed}
        stale = (set(old_files) | pending | self.removed) - set(files)  # our outputs that are no longer valid
        stale |= {str(p.relative_to(self.folder)) for n in new  # temp files of killed earlier writers
                  for p in (self.folder / n).parent.glob(f".{Path(n).name}.*.tmp")}
        for name in stale:
            with contextlib.suppress(FileNotFoundError, IsADirectoryError):
                os.unlink(self.folder / name)
        self._write_manifest({"complete": True, "files": files})
        fault_point("committed")

    def _write_manifest(self, body: dict) -> None:
        with atomic_path(self.folder / MANIFEST) as tmp:
            tmp.write_text(json.dumps({"format": FORMAT, **body, "meta": self.meta}, indent=1, sort_keys=True)
                           + "\n")


@contextlib.contextmanager
def transaction(folder, meta: dict | None = None, keep: bool = False):
    """`with transaction(folder) as tx: tx.write_text(...)`: commit on success; on error the old output stays."""
    tx = Transaction(folder, meta, keep)
    try:
        yield tx
        tx.commit()
    finally:
        tx.abort()


_held: dict[str, list] = {}  # lock file → [fd, depth]: a process may re-enter its own lock


@contextlib.contextmanager
def lock(path, file: bool = False):
    """Hold the output folder `path` (or, with file=True, the single output file) for this process; refuse in
    one line if another live process holds it."""
    path = Path(path)
    if not file and path.exists() and not path.is_dir():
        raise ConfigError(f"{path}: exists and is not a folder; choose another output folder")
    created = not file and not path.exists()
    lf = path.parent / f".{path.name}.lock" if file else path / LOCK
    lf.parent.mkdir(parents=True, exist_ok=True)
    key = str(lf.resolve())
    if key in _held:
        _held[key][1] += 1
        try:
            yield
        finally:
            _held[key][1] -= 1
        return
    fd = _acquire(lf, path)
    _held[key] = [fd, 1]
    try:
        yield
    finally:
        del _held[key]
        with contextlib.suppress(OSError):
            os.unlink(lf)
        if fd >= 0:
            os.close(fd)  # closing drops the flock
        if created and path.is_dir():
            with contextlib.suppress(OSError):
                path.rmdir()  # a folder made only for the lock, left empty by a failed run


def _acquire(lf: Path, target: Path) -> int:
    while True:
        fd = os.open(lf, os.O_RDWR | os.O_CREAT, 0o666 & ~_UMASK)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = _describe(lf)
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise FolderInUse(f"{target}: in use by another toymodels writer ({holder}); wait for it to "
                                  "finish or choose another output") from None
            return -1  # this filesystem has no locks: run unlocked rather than not at all
        try:  # the holder may have removed the file between our open and flock: lock the current one
            same = os.fstat(fd).st_ino == os.stat(lf).st_ino
        except FileNotFoundError:
            same = False
        if not same:
            os.close(fd)
            continue
        info = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S"),
                "command": " ".join(["toymodels", *sys.argv[1:]])[:200]}
        os.ftruncate(fd, 0)
        os.write(fd, (json.dumps(info) + "\n").encode())
        return fd


def _describe(lf: Path) -> str:
    try:
        info = json.loads(lf.read_text() or "{}")
        return f"pid {info['pid']} on {info['host']}, since {info['since']}: {info['command']}"
    except (OSError, ValueError, KeyError, TypeError):
        return f"lock file {lf}"

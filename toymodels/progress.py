"""Progress bars that show an ETA on a terminal; in pipes, logs and CI, one plain line every `HEARTBEAT_SECONDS`
instead (`desc: 1200/5000 (24%), 2m10s elapsed, about 6m50s left`), so a long piped run is never silent."""

import os
import sys
import time

from tqdm.auto import tqdm

HEARTBEAT_SECONDS = 30.0
"""Seconds between the one-line progress reports of a run whose bar is hidden (stderr not a terminal, or CI)."""


def progress_enabled() -> bool:
    """TOYMODELS_PROGRESS=1/0 forces bars on/off; otherwise on only for an interactive stderr outside CI."""
    forced = os.environ.get("TOYMODELS_PROGRESS")
    if forced is not None:
        return forced not in ("0", "", "false", "no")
    return sys.stderr.isatty() and not os.environ.get("CI")


def progress(iterable=None, *, total=None, desc=None, enabled: bool | None = None, **kw):
    """A tqdm bar (iterable or manual `update`) that respects `progress_enabled()`. Where the bar is hidden only
    because stderr is not a terminal (`enabled=None`, TOYMODELS_PROGRESS not 0), it reports one line every
    `HEARTBEAT_SECONDS` instead; `enabled=False` (the caller's progress=False) is silent."""
    show = progress_enabled() if enabled is None else enabled
    if not show and enabled is None and os.environ.get("TOYMODELS_PROGRESS") is None:
        return Heartbeat(iterable, total=total, desc=desc)
    return tqdm(iterable, total=total, desc=desc, disable=not show, dynamic_ncols=True, leave=False, **kw)


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class Heartbeat:
    """The subset of tqdm's interface the package uses (iterate, update, set_postfix_str, close, context manager),
    printing a one-line status to stderr at most every `HEARTBEAT_SECONDS`."""

    def __init__(self, iterable=None, total=None, desc=None):
        self.iterable, self.desc, self.n = iterable, desc or "progress", 0
        self.total = total if total is not None else (len(iterable) if hasattr(iterable, "__len__") else None)
        self.start = self.last = time.monotonic()

    def __iter__(self):
        for item in self.iterable:
            yield item
            self.update(1)

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self.last >= HEARTBEAT_SECONDS:
            self.last = now
            elapsed = now - self.start
            if self.total:
                left = elapsed * (self.total - self.n) / max(self.n, 1)
                status = (f"{self.n}/{self.total} ({100 * self.n / self.total:.0f}%), {_duration(elapsed)} "
                          f"elapsed, about {_duration(left)} left")
            else:
                status = f"{self.n} done, {_duration(elapsed)} elapsed"
            print(f"{self.desc}: {status}", file=sys.stderr, flush=True)

    def set_postfix_str(self, *args, **kw) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

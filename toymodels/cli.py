"""The `toymodels` command. Each subcommand lives beside the code it drives and registers itself here.

Every failure is one line on stderr: errors a user can fix (bad config, malformed file, divergence, a size that
cannot fit, an unwritable or full output location) exit 2; anything else is reported as a bug and exits 1.
`--debug` (anywhere on the command line) shows the traceback instead. Ctrl-C exits 130 with one line, also during
start-up: the heavy imports (torch, pandas) happen inside `main`.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import threading
from pathlib import Path

from toymodels.errors import ConfigError, ToyModelsError, describe_os_error

# modules with `register(subparsers)`; each adds its subcommand parser(s) with `set_defaults(func=...)`
COMMAND_MODULES = [
    "toymodels.cli",  # train
    "toymodels.sae.cli",  # sae train
    "toymodels.paper.cli",  # figures
    "toymodels.sweep",  # sweep, experiments
    "toymodels.bench",  # bench
    "toymodels.groundtruth.cli",  # benchmark, dataset
]

DESCRIPTION = "Toy Models of Superposition, trained many at once, and a ground-truth benchmark for SAEs."
TOUR = """a five-minute tour (each command has --help with examples):
  toymodels train n_features=5 n_hidden=2 density=0.05 restarts=5   # the pentagon, in seconds
  toymodels figures --quick --out /tmp/figs                          # the paper's gallery, quick mode
  toymodels experiments && toymodels sweep phase_2to1 grid.n=12      # a phase diagram sweep (resumable)
  toymodels dataset make data.safetensors n_samples=100000           # ground truth for SAEs
  toymodels sae train data.safetensors --out runs/saes variant=[topk,jumprelu]
  toymodels benchmark run --experiment benchmark_tiny                # a small SAE leaderboard
"""

EXAMPLES = """examples:
  toymodels train n_features=5 n_hidden=2 density=0.05 restarts=5
  toymodels train n_features=20 n_hidden=5 importance_decay=0.7 "density=[[1],[0.1],[0.01]]" --out runs/basic
"""


def parse_overrides(items: list[str]) -> dict:
    """`key=value` strings → dict; values are parsed as YAML (numbers, lists, null, strings)."""
    import yaml

    out = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"{item}: expected key=value")
        try:
            out[key.strip()] = _numbers(yaml.safe_load(raw)) if raw.strip() else None
        except yaml.YAMLError:
            raise ConfigError(f"{key}: cannot parse value {raw!r}") from None
    return out


def _numbers(value):
    """YAML 1.1 reads `1e-3` as a string; turn numeric-looking strings (also inside lists) into floats."""
    if isinstance(value, list):
        return [_numbers(v) for v in value]
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def split_overrides(values: dict, *classes) -> list[dict]:
    """Route each key to the first dataclass that has a field of that name; unknown keys are an error."""
    import dataclasses

    parts = [{} for _ in classes]
    for key, value in values.items():
        for part, cls in zip(parts, classes, strict=True):
            if key in {f.name for f in dataclasses.fields(cls)}:
                part[key] = value
                break
        else:
            valid = sorted({f.name for cls in classes for f in dataclasses.fields(cls)})
            raise ConfigError(f"{key}: unknown key; valid keys: {', '.join(valid)}")
    return parts


def register(sub) -> None:
    p = sub.add_parser("train", help="train one configuration (many instances) and print its summary",
                       description="Train a ToyConfig × TrainConfig given as key=value overrides.",
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("overrides", nargs="*", help="key=value for any ToyConfig or TrainConfig field")
    p.add_argument("--out", type=Path, help="folder for weights.safetensors, config.json and summary.csv")
    p.set_defaults(func=_train)


def _train(args) -> None:
    import contextlib

    from toymodels.outdir import lock

    with lock(args.out) if args.out else contextlib.nullcontext():  # one writer per --out for the whole run
        _train_locked(args)


def _train_locked(args) -> None:
    import pandas as pd

    from toymodels.config import ToyConfig, TrainConfig
    from toymodels.io import save_result
    from toymodels.train import train

    toy_kw, train_kw = split_overrides(parse_overrides(args.overrides), ToyConfig, TrainConfig)
    result = train(ToyConfig(**toy_kw), TrainConfig(**train_kw))
    table = result.summary()
    with pd.option_context("display.max_rows", 200, "display.width", 120):
        print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"trained {result.config.instances} instance(s) × {result.train.restarts} restart(s), "
          f"{result.train.steps} steps in {result.seconds:.1f}s "
          f"({result.meta['model_steps_per_s']:.0f} model-steps/s, {result.meta['sampler']} sampler)")
    if args.out:
        save_result(result, args.out, extra={"summary.csv": table.to_csv(index=False)})
        print(f"saved to {args.out}/ (weights.safetensors, config.json, summary.csv, manifest.json)")


GLOBAL_FLAGS = {"--debug": "show full tracebacks (accepted anywhere on the command line)",
                "--no-memory-check": "skip the memory estimate check (same as TOYMODELS_NO_MEMORY_CHECK=1)"}
"""Flags accepted anywhere on the command line (before or after the subcommand); `main` takes them out."""
INTERRUPTED = "toymodels: interrupted; finished results are saved, rerun to resume where supported"


class Parser(argparse.ArgumentParser):
    """argparse whose usage errors are one line (the usage block is one `--help` away)."""

    def error(self, message: str):
        self.exit(2, f"toymodels: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="toymodels", description=DESCRIPTION, epilog=TOUR,
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    for flag, text in GLOBAL_FLAGS.items():
        parser.add_argument(flag, action="store_true", help=text)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMAND_MODULES:
        importlib.import_module(module).register(sub)
    return parser


_SIGINTS: list[int] = []
"""SIGINTs received during `main`: a library that swallows the KeyboardInterrupt (a bare `except` around an
optional import) cannot lose a Ctrl-C that arrived while the imports ran."""


def _on_sigint(signum, frame):
    _SIGINTS.append(signum)
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    real_cli = argv is None
    main_thread = threading.current_thread() is threading.main_thread()
    _SIGINTS.clear()
    previous = signal.signal(signal.SIGINT, _on_sigint) if main_thread else None
    try:
        return _main(argv, real_cli)
    finally:
        if main_thread:  # None: a handler set outside Python
            signal.signal(signal.SIGINT, signal.default_int_handler if previous is None else previous)


def _main(argv: list[str] | None, real_cli: bool) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    flags = {a for a in argv if a in GLOBAL_FLAGS}
    argv = [a for a in argv if a not in GLOBAL_FLAGS]
    debug = "--debug" in flags or os.environ.get("TOYMODELS_DEBUG") == "1"
    if "--no-memory-check" in flags:
        os.environ["TOYMODELS_NO_MEMORY_CHECK"] = "1"
    try:
        return _run(argv)
    except SystemExit:
        raise
    except BaseException as e:  # the parser's imports (torch, scipy) are inside too: Ctrl-C at start-up lands here
        if debug:
            raise
        if interrupted(e):
            print(INTERRUPTED, file=sys.stderr, flush=True)
            if real_cli:  # atexit handlers (pool and cluster teardown) must not add lines after this one
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stderr.fileno())
            return 130
        code, line = error_line(e)
        print(f"toymodels: error: {line}", file=sys.stderr)
        return code


def _run(argv: list[str]) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help (0) or a usage error (2, already printed as one line)
        return e.code if isinstance(e.code, int) else 2
    if _SIGINTS:  # a Ctrl-C during the imports that something swallowed
        raise KeyboardInterrupt
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    args.func(args)
    return 0


def interrupted(e: BaseException) -> bool:
    """A Ctrl-C, also one that surfaced as another error (an extension module's import fails with ImportError
    "initialization failed" caused by the KeyboardInterrupt)."""
    seen = 0
    while e is not None and seen < 20:
        if isinstance(e, KeyboardInterrupt):
            return True
        e, seen = e.__cause__ or e.__context__, seen + 1
    return False


def error_line(e: BaseException) -> tuple[int, str]:
    """(exit status, one-line message) for an exception that ended a command: 2 for what the user can fix,
    1 for a bug."""
    if isinstance(e, ToyModelsError):
        return 2, str(e)
    if isinstance(e, OSError):
        return 2, describe_os_error(e)
    text = " ".join(str(e).split())
    if isinstance(e, MemoryError) or "can't allocate memory" in text or "not enough memory" in text:
        return 2, ("ran out of memory; use smaller sizes (the size check estimated that it would fit: please "
                   "report this with --debug)")
    return 1, (f"unexpected {type(e).__name__}: {text[:160] or '(no message)'}; this is a bug in toymodels: rerun "
               "with --debug for the traceback and report it")


if __name__ == "__main__":
    sys.exit(main())

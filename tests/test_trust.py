"""Issue 7: bad input gives one clear line, nothing half-written is trusted, nothing is unpickled."""

import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from toymodels import ToyConfig, TrainConfig, load_result, save_result, train
from toymodels.cli import main
from toymodels.errors import DataFileError
from toymodels.io import load_tensors, save_tensors

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    out = tmp_path_factory.mktemp("saved")
    save_result(train(ToyConfig(n_features=4, n_hidden=2), TrainConfig(steps=20, progress=False)), out)
    return out


def _corrupt(saved: Path, tmp: Path, what: str) -> Path:
    """A copy of a saved result with one thing broken."""
    import shutil

    bad = tmp / "bad"
    shutil.copytree(saved, bad)
    w, c = bad / "weights.safetensors", bad / "config.json"
    if what == "truncated_weights":
        w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    elif what == "garbage_weights":
        w.write_bytes(b"\x00" * 100)
    elif what == "missing_weights":
        w.unlink()
    elif what == "bad_json":
        c.write_text("{not json")
    elif what == "old_version":
        info = json.loads(c.read_text())
        info["format_version"] = 0
        c.write_text(json.dumps(info))
    elif what == "wrong_shape":
        info = json.loads(c.read_text())
        info["toy"]["n_features"] = 7
        c.write_text(json.dumps(info))
    elif what == "unknown_key":
        info = json.loads(c.read_text())
        info["toy"]["sparsity"] = 0.9
        c.write_text(json.dumps(info))
    return bad


# (argv, the field or file the one-line message must name)
BAD_CLI = [
    (["train", "density=0"], "density"),
    (["train", "density=-0.5"], "density"),
    (["train", "density=1.01"], "density"),
    (["train", "density=nan"], "density"),
    (["train", "density=abc"], "density"),
    (["train", "density=[0.1,0.2,0.3]"], "density"),
    (["train", "density=[[[0.1]]]"], "density"),
    (["train", "importance=-1"], "importance"),
    (["train", "importance_decay=0"], "importance_decay"),
    (["train", "n_hidden=0"], "n_hidden"),
    (["train", "n_hidden=-3"], "n_hidden"),
    (["train", "n_hidden=2.5"], "n_hidden"),
    (["train", "n_features=0"], "n_features"),
    (["train", "n_features=five"], "n_features"),
    (["train", "n_instances=3", "density=[[0.1],[0.2]]"], "n_instances"),
    (["train", "model=mlp"], "model"),
    (["train", "structure=nested"], "structure"),
    (["train", "structure=correlated", "set_size=2"], "set_size"),
    (["train", "magnitude=gaussian"], "magnitude"),
    (["train", "child_prob=0"], "child_prob"),
    (["train", "steps=0"], "steps"),
    (["train", "batch_size=-1"], "batch_size"),
    (["train", "lr=0"], "lr"),
    (["train", "lr=-1e-3"], "lr"),
    (["train", "weight_decay=abc"], "weight_decay"),  # negative decay is allowed (Liu, Liu & Gore 2025)
    (["train", "restarts=0"], "restarts"),
    (["train", "seed=-1"], "seed"),
    (["train", "schedule=linear"], "schedule"),
    (["train", "warmup_steps=20", "steps=10"], "warmup_steps"),
    (["train", "min_lr_frac=2"], "min_lr_frac"),
    (["train", "on_divergence=ignore"], "on_divergence"),
    (["train", "n_featurs=5"], "n_featurs"),
    (["train", "density"], "density"),
    (["train", "steps=1", "lr=1e38", "importance=1e38"], "instance 0"),
    (["sweep", "no_such_experiment"], "no_such_experiment"),
    (["sweep", "phase_2to1", "grid.n=0"], "grid.n"),
    (["sweep", "phase_2to1", "grid.nn=3"], "grid.nn"),
    (["sweep", "phase_2to1", "train.lr=-1"], "lr"),
    (["sweep", "phase_2to1", "train.restarts=0"], "restarts"),
    (["sweep", "phase_2to1", "toy.density=2"], "density"),
    (["sweep", "phase_2to1", "backend=mpi"], "backend"),
    (["sweep", "phase_2to1", "out=../../outside"], "out"),
    (["benchmark", "run", "widths=[0]"], "widths"),
    (["benchmark", "run", "out=../outside"], "out"),
    (["dataset", "make", "unused.safetensors", "n_features=-1"], "n_features"),
    (["dataset", "make", "unused.safetensors", "p_max=2"], "p_max"),
    (["figures", "--only", "no_such_figure"], "no_such_figure"),
    (["sae", "train", "DATA", "--out", "saes", "name=../../outside", "steps=1"], "escapes the output folder"),
]


@pytest.mark.parametrize("argv, field", BAD_CLI, ids=[" ".join(a) for a, _ in BAD_CLI])
def test_bad_cli_input_is_one_clear_line(argv, field, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing may be written, but if it were, it lands here
    save_tensors(tmp_path / "DATA", {"hidden": torch.rand(64, 4)})  # a valid dataset for the sae rows
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("toymodels: error: "), err
    assert field in err, err


CORRUPTIONS = ["truncated_weights", "garbage_weights", "missing_weights", "bad_json", "old_version", "wrong_shape",
               "unknown_key"]


@pytest.mark.parametrize("what", CORRUPTIONS)
def test_malformed_result_folders_are_refused_clearly(saved, tmp_path, what):
    bad = _corrupt(saved, tmp_path, what)
    with pytest.raises((DataFileError, ValueError)) as info:
        load_result(bad)
    msg = str(info.value)
    assert "\n" not in msg and len(msg) < 300, msg
    assert any(s in msg for s in ("weights.safetensors", "config.json", "format_version", "n_features",
                                  "sparsity", str(bad))), msg


def test_cli_error_has_no_traceback_and_exits_nonzero():
    proc = subprocess.run([sys.executable, "-m", "toymodels.cli", "train", "density=-1"],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "toymodels: error: density: must be in (0, 1] (density = 1 − sparsity), got -1.0"]


def test_debug_flag_shows_the_traceback():
    proc = subprocess.run([sys.executable, "-m", "toymodels.cli", "--debug", "train", "density=-1"],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode != 0 and "Traceback" in proc.stderr


class Boom:
    """Unpickling this would create the file named in `flag` (proof of code execution)."""

    def __init__(self, flag):
        self.flag = flag

    def __reduce__(self):
        return (Path.write_text, (Path(self.flag), "pwned"))


def test_planted_pickle_is_refused_not_executed(saved, tmp_path):
    bad = _corrupt(saved, tmp_path, "none")
    flag = tmp_path / "executed"
    with open(bad / "weights.safetensors", "wb") as f:
        pickle.dump({"model.W": Boom(str(flag))}, f)
    torch.save({"model.W": Boom(str(flag))}, tmp_path / "also.pt")
    with pytest.raises(DataFileError, match="not a valid safetensors file"):
        load_result(bad)
    with pytest.raises(DataFileError):
        load_tensors(tmp_path / "also.pt")
    assert not flag.exists()


WRITER = """
import sys, torch
from toymodels.io import save_tensors
big = {"hidden": torch.ones(4_000_000)}
print("ready", flush=True)
while True:
    save_tensors(sys.argv[1], big)
"""


def test_sigkill_during_write_never_leaves_a_trusted_partial_file(tmp_path):
    """Kill a writer mid-write many times: the final name is always absent or complete and valid."""
    target = tmp_path / "data.safetensors"
    for attempt in range(4):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(target)], stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(0.05 + 0.07 * attempt)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        if target.exists():
            t = load_tensors(target, required=("hidden",))
            assert t["hidden"].shape == (4_000_000,) and bool((t["hidden"] == 1).all())
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != target.name]
    assert all(name.startswith(".") for name in leftovers), leftovers  # only hidden temp files, never trusted
    save_tensors(target, {"hidden": torch.zeros(3)})  # a later run writes over it normally
    assert load_tensors(target)["hidden"].tolist() == [0.0, 0.0, 0.0]


def test_atomic_writes_respect_the_umask(tmp_path):
    """mkstemp makes 0600 files; shared result folders need the usual umask permissions."""
    from toymodels.io import write_text

    write_text(tmp_path / "a.txt", "x")
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o666 & ~_current_umask()


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _subcommands(parser):
    """Every (path, parser) pair of the CLI, nested subcommands included."""
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield [name], sub
                for path, subsub in _subcommands(sub):
                    yield [name, *path], subsub


def test_every_command_has_help_with_examples():
    from toymodels.cli import build_parser

    commands = list(_subcommands(build_parser()))
    assert {"train", "figures", "sweep", "experiments", "sae", "benchmark", "dataset", "bench"} <= {
        path[0] for path, _ in commands}
    for path, sub in commands:
        text = sub.format_help()
        has_own = "examples:" in text
        has_parent = any("examples:" in p.format_help() for q, p in commands if q == path[:1])
        assert has_own or has_parent, f"toymodels {' '.join(path)} --help has no examples"

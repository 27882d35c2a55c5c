"""Issue 18, items 4–6: multi-file outputs are all-old or all-new, killed runs resume, one writer per folder.

Kill tests snapshot the output folder at every fault point (`toymodels.outdir.fault_point`: after each staged
file, before and after the "incomplete" marker, after each rename, after the manifest, after each SAE pack).
Every write is synchronous and closed at those points, so a snapshot is exactly what a SIGKILL there leaves
behind; `test_train_sigkill_*` checks that with a real SIGKILL. Each snapshot must be refused by every reader or
equal one complete run's output, and a rerun from it must complete."""

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from toymodels import ToyConfig, TrainConfig, load_result, outdir, save_result, train
from toymodels.cli import main
from toymodels.errors import ConfigError, DataFileError
from toymodels.outdir import MANIFEST, transaction, verify

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def snapshots(tmp_path, monkeypatch):
    """snapshots(folder) → list of (fault point, copy of `folder` at that point), filled while code runs."""
    taken = []

    def start(folder: Path):
        def hook(point):
            dest = tmp_path / "snaps" / f"{len(taken):03d}-{point}"
            if folder.exists():
                shutil.copytree(folder, dest, symlinks=True)
            else:
                dest.mkdir(parents=True)
            taken.append((point, dest))
        monkeypatch.setattr(outdir, "FAULT_HOOK", hook)
        return taken

    yield start
    monkeypatch.setattr(outdir, "FAULT_HOOK", None)


def _files(folder: Path) -> dict[str, bytes]:
    """Every visible file under `folder` (temp files are dot-prefixed and never read)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)}


# ---------------------------------------------------------------------------------------------- the mechanism
def test_transaction_commits_all_files_or_none(tmp_path):
    out = tmp_path / "o"
    with transaction(out) as tx:
        tx.write_text("a.txt", "old a")
        tx.write_text("sub/b.txt", "old b")
        tx.write_text("gone.txt", "only in the old run")
    assert verify(out)["files"].keys() == {"a.txt", "sub/b.txt", "gone.txt"}
    with pytest.raises(OSError), transaction(out) as tx:  # fails while staging: nothing changes
        tx.write_text("a.txt", "new a")
        assert (out / "a.txt").read_text() == "old a"  # staged files are invisible until commit
        raise OSError(errno.ENOSPC, "No space left on device")
    assert (out / "a.txt").read_text() == "old a" and verify(out) is not None
    assert [p.name for p in out.iterdir() if p.name.endswith(".tmp")] == []  # temp files cleaned up
    with transaction(out) as tx:
        tx.write_text("a.txt", "new a")
        tx.write_text("sub/b.txt", "new b")
    assert not (out / "gone.txt").exists()  # an earlier run's file that this run did not write is removed
    (out / "sub/b.txt").write_text("edited")
    with pytest.raises(DataFileError, match=r"sub/b.txt: does not match .*manifest.json"):
        verify(out)
    m = json.loads((out / MANIFEST).read_text())
    (out / MANIFEST).write_text(json.dumps({**m, "complete": False}))
    with pytest.raises(DataFileError, match="incomplete output"):
        verify(out)
    assert verify(tmp_path) is None  # a folder without a manifest (e.g. a SAELens SAE) is read as before


# -------------------------------------------------------------------------------------------------- train
def _result(seed, n_features=4):
    return train(ToyConfig(n_features=n_features, n_hidden=2), TrainConfig(steps=15, seed=seed, progress=False))


def _same(a, b) -> bool:
    sa, sb = a.model.state_dict(), b.model.state_dict()
    return a.config == b.config and a.train == b.train and sa.keys() == sb.keys() and all(
        torch.equal(sa[k], sb[k]) for k in sa) and torch.equal(a.final_loss, b.final_loss)


def test_train_rerun_killed_at_every_point_is_old_new_or_refused(tmp_path, snapshots):
    """The issue's case: `train` rerun into an earlier result's folder, killed mid-write."""
    old, new = _result(0), _result(1, n_features=5)
    out = tmp_path / "run"
    save_result(old, out, extra={"summary.csv": "old\n"})
    taken = snapshots(out)
    save_result(new, out, extra={"summary.csv": "new\n"})
    points = [p for p, _ in taken]
    assert points.count("staged") == 3 and points.count("renamed") == 3 and "marked" in points
    seen = set()
    for point, snap in taken:
        try:
            got = load_result(snap)
        except DataFileError as e:
            assert "\n" not in str(e) and point in ("marked", "renamed"), (point, e)
            seen.add("refused")
            continue
        which = "old" if _same(got, old) else "new" if _same(got, new) else None
        assert which, f"{point}: load_result accepted a mix"
        assert (snap / "summary.csv").read_text() == f"{which}\n"
        seen.add(which)
    assert seen == {"old", "new", "refused"}
    outdir.FAULT_HOOK = None
    for point, snap in taken:  # a rerun always completes, and clears the killed run's temp files
        save_result(new, snap, extra={"summary.csv": "new\n"})
        assert _same(load_result(snap), new), point
        assert sorted(p.name for p in snap.iterdir()) == ["config.json", MANIFEST, "summary.csv",
                                                          "weights.safetensors"], point


def test_train_rerun_on_a_full_disk_keeps_the_old_result(tmp_path, monkeypatch):
    old = _result(0)
    out = tmp_path / "run"
    save_result(old, out)
    real = Path.write_text

    def full(self, *a, **k):
        if self.name.startswith(".config.json"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, *a, **k)

    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(OSError):
        save_result(_result(1), out)  # weights were already staged when config.json failed
    monkeypatch.undo()
    assert _same(load_result(out), old)
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "manifest.json", "weights.safetensors"]


def test_a_commit_while_a_reader_reads_is_refused_not_mixed(tmp_path, monkeypatch):
    """Another run commits between the reader's reading config.json and weights.safetensors."""
    import toymodels.io

    out = tmp_path / "run"
    save_result(_result(0), out)
    real = toymodels.io.load_tensors

    def commit_first(*a, **k):
        monkeypatch.setattr(toymodels.io, "load_tensors", real)
        save_result(_result(1), out)  # same shapes: only the manifest can tell the mix
        return real(*a, **k)

    monkeypatch.setattr(toymodels.io, "load_tensors", commit_first)
    with pytest.raises(DataFileError, match="another run replaced this output while it was being read"):
        load_result(out)
    assert _same(load_result(out), _result(1))


KILLED_TRAIN = [sys.executable, "-m", "toymodels.cli", "train", "n_features=5", "n_hidden=2", "steps=10", "seed=1"]


def test_train_sigkill_mid_commit_is_refused_then_a_rerun_completes(tmp_path):
    out = tmp_path / "run"
    old = _result(0)
    save_result(old, out)
    env = {**os.environ, "TOYMODELS_KILL_AT": "renamed#1", "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([*KILLED_TRAIN, "--out", str(out)], env=env, capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    with pytest.raises(DataFileError, match="incomplete output"):
        load_result(out)
    assert main(["train", "n_features=5", "n_hidden=2", "steps=10", "seed=1", "--out", str(out)]) == 0
    got = load_result(out)
    assert got.config.n_features == 5 and not _same(got, old)
    assert not (out / ".toymodels.lock").exists()


def test_dataset_make_over_an_old_file_on_a_full_disk_keeps_the_old_file(tmp_path, monkeypatch):
    """`dataset make` writes one file by atomic rename: a failed rewrite leaves the old dataset readable."""
    import toymodels.io
    from toymodels.groundtruth.files import load_dataset

    path = tmp_path / "d.safetensors"
    make = ["dataset", "make", str(path), "n_features=8", "d_model=4", "n_roots=0"]
    assert main([*make, "n_samples=50"]) == 0
    old = load_dataset(path).hidden

    def full(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"half a file")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(toymodels.io, "save_file", full)
    try:
        rc = main([*make, "n_samples=80"])
    except OSError:
        rc = None  # until the CLI's outer layer turns OS errors into one line
    assert rc != 0
    assert torch.equal(load_dataset(path).hidden, old)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.safetensors"]


# ------------------------------------------------------------------------------------------------ locking
HOLDER = """
import sys, time
from toymodels.outdir import lock
with lock(sys.argv[1]), lock(sys.argv[2], file=True):
    print("held", flush=True)
    time.sleep(120)
"""


def test_second_writer_is_refused_naming_the_holder_and_a_dead_holder_is_taken_over(tmp_path, capsys,
                                                                                      monkeypatch):
    monkeypatch.chdir(tmp_path)
    out, data = tmp_path / "busy", tmp_path / "data.safetensors"
    main(["dataset", "make", str(tmp_path / "d.safetensors"), "n_features=8", "d_model=4", "n_samples=64",
          "n_roots=0"])
    capsys.readouterr()
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(out), str(data)], stdout=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert proc.stdout.readline().strip() == "held"
        writers = [["train", "steps=1", "--out", str(out)],
                   ["dataset", "make", str(data), "n_features=8", "d_model=4", "n_samples=10", "n_roots=0"],
                   ["sae", "train", str(tmp_path / "d.safetensors"), "--out", str(out), "steps=1"],
                   ["benchmark", "run", "--experiment", "benchmark_tiny", f"out={out}"],
                   ["sweep", "phase_2to1", "grid.n=2", f"out={out}"],
                   ["figures", "--only", "intro", "--out", str(out)]]
        for argv in writers:
            assert main(argv) == 2, argv
            err = capsys.readouterr().err
            assert err.count("\n") == 1 and "in use by another toymodels writer" in err, (argv, err)
            assert f"pid {proc.pid} on " in err, err
        assert not data.exists() and list(out.iterdir()) == [out / ".toymodels.lock"]  # nothing was written
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert (out / ".toymodels.lock").exists()  # left by the killed holder ...
    assert main(["train", "steps=1", "--out", str(out)]) == 0  # ... and taken over
    assert load_result(out).train.steps == 1


# ---------------------------------------------------------------------------------------------- sae train
def _sae_data(path: Path) -> Path:
    g = torch.Generator().manual_seed(0)
    feats = torch.nn.functional.normalize(torch.randn(24, 8, generator=g), dim=1)
    x = ((torch.rand(1024, 24, generator=g) < 0.1) * torch.rand(1024, 24, generator=g)) @ feats
    from toymodels.io import save_tensors

    save_tensors(path, {"hidden": x.float()})
    return path


SAE_ARGS = ["variant=[topk,batchtopk]", "d_sae=16", "k=2", "batch_size=64", "log_every=5"]


def _sae_run(data, out, steps) -> int:
    return main(["sae", "train", str(data), "--out", str(out), *SAE_ARGS, f"steps={steps}"])


def _sae_tensors(folder: Path) -> dict:
    from toymodels.sae import load_saelens

    return {label: load_saelens(folder / label).tensors() for label in ("topk-16-s0", "batchtopk-16-s0")}


def _eq(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_sae_train_killed_anywhere_loads_old_new_or_refuses_and_resumes_packs(tmp_path, snapshots, capsys):
    data = _sae_data(tmp_path / "d.safetensors")
    ref_old, ref_new, out = tmp_path / "ref_old", tmp_path / "ref_new", tmp_path / "out"
    assert _sae_run(data, ref_old, 20) == 0 and _sae_run(data, ref_new, 25) == 0
    old, new = _sae_tensors(ref_old), _sae_tensors(ref_new)
    shutil.copytree(ref_old, out)
    taken = snapshots(out)
    assert _sae_run(data, out, 25) == 0  # rerun with another config into the old run's folder
    outdir.FAULT_HOOK = None
    assert [p for p, _ in taken].count("pack") == 2
    from toymodels.sae import load_saelens

    for point, snap in taken:
        for label in old:
            try:
                got = load_saelens(snap / label).tensors()
            except DataFileError as e:
                assert "\n" not in str(e) and "incomplete output" in str(e), (point, e)
                continue
            assert _eq(got, old[label]) or _eq(got, new[label]), f"{point}: {label} loads a mix"
    after_first_pack = next(s for p, s in taken if p == "pack")
    capsys.readouterr()
    assert _sae_run(data, after_first_pack, 25) == 0
    assert "1 finished pack(s) resumed" in capsys.readouterr().out
    assert all(_eq(a, b) for a, b in zip(_sae_tensors(after_first_pack).values(), new.values(), strict=True))
    mid_commit = next(s for p, s in taken if p == "renamed")
    assert _sae_run(data, mid_commit, 25) == 0
    assert all(_eq(a, b) for a, b in zip(_sae_tensors(mid_commit).values(), new.values(), strict=True))


def test_sae_train_sigkill_after_a_pack_resumes_it(tmp_path, capsys):
    data, out = _sae_data(tmp_path / "d.safetensors"), tmp_path / "out"
    env = {**os.environ, "TOYMODELS_KILL_AT": "pack#1", "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    argv = ["sae", "train", str(data), "--out", str(out), *SAE_ARGS, "steps=20"]
    proc = subprocess.run([sys.executable, "-m", "toymodels.cli", *argv], env=env, capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    from toymodels.sae import load_saelens

    first = load_saelens(out / "topk-16-s0").tensors()  # the finished pack is complete ...
    assert not (out / "batchtopk-16-s0").exists()  # ... the other was never started
    assert main(argv) == 0
    assert "1 finished pack(s) resumed" in capsys.readouterr().out
    assert _eq(load_saelens(out / "topk-16-s0").tensors(), first)


# ------------------------------------------------------------------------------------------- benchmark run
def _bench_cfg(out, steps):
    from toymodels.groundtruth.benchmark import BenchmarkConfig
    from toymodels.groundtruth.synthetic import SyntheticConfig

    return BenchmarkConfig(dataset=SyntheticConfig(n_features=16, d_model=8, n_roots=0), n_train=1500, n_eval=300,
                           variants=["topk", "relu"], widths=[16], k=[2, 3], l1_coeff=[1.0], steps=steps,
                           batch_size=128, out=str(out), progress=False)


def test_benchmark_killed_anywhere_is_old_new_or_refused_and_resumes_to_the_same_tables(tmp_path, snapshots):
    import matplotlib

    matplotlib.use("Agg")
    from toymodels.groundtruth.benchmark import load_benchmark, run_benchmark

    out = tmp_path / "out"
    run_benchmark(_bench_cfg(out, 15))
    old = _files(out)
    taken = snapshots(out)
    run_benchmark(_bench_cfg(out, 20))
    outdir.FAULT_HOOK = None
    new = _files(out)
    assert [p for p, _ in taken].count("pack") == 2
    tables = lambda files: {k: v for k, v in files.items() if k in ("results.csv", "leaderboard.csv")}  # noqa: E731
    seen = set()
    for point, snap in taken:
        try:
            load_benchmark(snap)
        except DataFileError as e:
            assert "\n" not in str(e), e
            seen.add("refused")
            continue
        got = _files(snap)
        outputs = {k for k in got if not k.startswith("packs/")}
        which = [name for name, ref in (("old", old), ("new", new))
                 if all(got[k] == ref[k] for k in outputs if k != "run.json") and outputs == set(
                     k for k in ref if not k.startswith("packs/"))]
        assert which, f"{point}: load_benchmark accepted a mix"
        seen.add(which[0])
    assert seen == {"old", "new", "refused"}
    after_first_pack = next(s for p, s in taken if p == "pack")
    run_benchmark(_bench_cfg(after_first_pack, 20))
    assert json.loads((after_first_pack / "run.json").read_text())["packs_resumed"] == 1
    assert tables(_files(after_first_pack)) == tables(new)  # byte for byte as the uninterrupted run
    assert len(list((out / "packs").iterdir())) == 2  # the old config's packs were dropped


# ---------------------------------------------------------------------------------------------------- figures
class _FakeFigure:
    """A figure module whose output depends on the seed, so old and new files differ (and it is fast)."""

    def __init__(self, name):
        self.TITLE, self.CAPTION = f"fake {name}", "what to look for\nsettings"

    def compute(self, quick=False, seed=0):
        return pd.DataFrame({"x": [0, 1, 2], "y": [seed, seed + 1, seed * 2]})

    def plot(self, df):
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(2, 2))
        ax.plot(df.x, df.y)
        return fig


def test_figures_only_killed_anywhere_keeps_the_gallery_consistent(tmp_path, snapshots, monkeypatch):
    import toymodels.paper as paper

    monkeypatch.setattr(paper, "load", lambda name: _FakeFigure(name))
    names = ["intro", "basic", "sparsity"]
    g0, g1, out = tmp_path / "g0", tmp_path / "g1", tmp_path / "gallery"
    paper.build_gallery(names, g0, seed=0)
    shutil.copytree(g0, g1)
    paper.build_gallery(["basic"], g1, seed=1)
    ref0, ref1 = _files(g0), _files(g1)
    assert ref0.keys() == ref1.keys() and ref0["intro.png"] == ref1["intro.png"]
    assert ref0["basic.png"] != ref1["basic.png"] and ref0["data/basic.csv"] != ref1["data/basic.csv"]
    assert paper.verify_gallery(g1) == names
    shutil.copytree(g0, out)
    taken = snapshots(out)
    paper.build_gallery(["basic"], out, seed=1)
    outdir.FAULT_HOOK = None
    seen = set()
    for point, snap in taken:
        try:
            paper.verify_gallery(snap)
        except DataFileError as e:
            assert "\n" not in str(e), e
            seen.add("refused")
            continue
        got = _files(snap)
        which = [n for n, ref in (("old", ref0), ("new", ref1)) if got == ref]
        assert which, f"{point}: an accepted gallery mixes two runs"
        seen.add(which[0])
    assert seen == {"old", "new", "refused"}
    for _, snap in taken:  # a rerun completes
        paper.build_gallery(["basic"], snap, seed=1)
        assert _files(snap) == ref1


def test_figures_into_a_gallery_without_manifest_keeps_its_other_figures(tmp_path, monkeypatch, snapshots):
    import toymodels.paper as paper

    monkeypatch.setattr(paper, "load", lambda name: _FakeFigure(name))
    out = tmp_path / "g"
    paper.build_gallery(["intro", "basic"], out)
    (out / MANIFEST).unlink()  # as a gallery committed before manifests
    taken = snapshots(out)
    paper.build_gallery(["sparsity"], out, seed=2)
    outdir.FAULT_HOOK = None
    killed = next(s for p, s in taken if p == "renamed")  # killed mid-commit, then rerun
    paper.build_gallery(["sparsity"], killed, seed=2)
    for gallery in (out, killed):
        assert paper.verify_gallery(gallery) == ["intro", "basic", "sparsity"]
        assert set(json.loads((gallery / "data/provenance.json").read_text())) == {"intro", "basic", "sparsity"}


def test_lock_is_reentrant_and_leaves_no_trace(tmp_path):
    out = tmp_path / "new"
    with outdir.lock(out), outdir.lock(out):
        assert (out / ".toymodels.lock").exists()
        holder = json.loads((out / ".toymodels.lock").read_text())
        assert holder["pid"] == os.getpid() and time.strftime("%Y") in holder["since"]
    assert not out.exists()  # made only for the lock, left empty: removed
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="file: exists and is not a folder"), outdir.lock(tmp_path / "file"):
        pass

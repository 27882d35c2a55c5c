"""Issue 18: every failure is one line. OS errors, hostile configs and files, sizes that cannot fit, missing
backends, interrupts, file permissions, the README's snippets and its promises."""

import errno
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from toymodels.cli import main
from toymodels.errors import ConfigError, DataFileError, ResourceError
from toymodels.io import save_tensors

ROOT = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")


def one_line(capsys, *needles: str) -> str:
    """The single stderr line of a failed command, checked to be a proper error naming every needle."""
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("toymodels: error: "), err
    assert "this is a bug" not in err and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err
    return err


@pytest.fixture
def data(tmp_path):
    """A small dataset file (64 samples, d = 8) with ground truth."""
    from toymodels.groundtruth import Dictionary, SyntheticConfig, save_dataset

    path = tmp_path / "data.safetensors"
    save_dataset(path, Dictionary(SyntheticConfig(n_features=16, d_model=8, n_roots=2, branching=2,
                                                  depth=2)).sample(64))
    return path


@pytest.fixture
def sae_dir(tmp_path, data):
    """An exported SAE (d_in 8, 16 latents) trained for a few steps on `data`."""
    from toymodels.groundtruth import load_dataset
    from toymodels.sae import SAEConfig, SAETrainConfig, export_saelens, train_saes

    sae = train_saes([SAEConfig(variant="topk", d_in=8, d_sae=16, k=2)], load_dataset(data).hidden,
                     SAETrainConfig(steps=3, batch_size=16, progress=False))[0]
    return export_saelens(sae, tmp_path / "sae")


# ---------------------------------------------------------------- the outer layer: OS errors, bugs, --debug


def test_debug_is_accepted_after_the_subcommand():
    with pytest.raises(ConfigError, match="density"):
        main(["train", "density=-1", "--debug"])
    with pytest.raises(ConfigError, match="density"):
        main(["train", "--debug", "density=-1"])


def test_usage_errors_are_one_line(capsys):
    assert main(["train", "--no-such-option"]) == 2
    one_line(capsys, "--no-such-option", "--help")
    assert main(["benchmark"]) == 2
    one_line(capsys, "--help")


def test_out_that_is_a_file_or_below_a_file(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    Path("afile").write_text("x")
    assert main(["train", "steps=2", "--out", "afile"]) == 2
    one_line(capsys, "afile", "not a folder")
    assert main(["train", "steps=2", "--out", "afile/sub"]) == 2
    one_line(capsys, "afile/sub", "is a file, not a folder")


def test_output_file_name_that_is_a_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    Path("taken.safetensors").mkdir()
    assert main(["dataset", "make", "taken.safetensors", "n_samples=10", "n_features=8", "d_model=4"]) == 2
    one_line(capsys, "taken.safetensors", "is a folder")
    assert [p.name for p in tmp_path.iterdir()] == ["taken.safetensors"]  # no temporary file left behind


@pytest.mark.parametrize("code, words", [(errno.ENOSPC, "no space left"), (errno.EROFS, "read-only"),
                                         (errno.EACCES, "permission denied"), (errno.EDQUOT, "quota")])
def test_os_errors_while_writing_name_the_destination(code, words, tmp_path, monkeypatch, capsys):
    """Full disk, read-only file system, permission: the failing write names the final file, not its temporary."""
    import tempfile

    real = tempfile.mkstemp

    def failing(*a, **kw):
        fd, name = real(*a, **kw)
        os.close(fd)
        os.unlink(name)
        raise OSError(code, os.strerror(code), name)

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(tempfile, "mkstemp", failing)
    assert main(["train", "steps=2", "--out", "run"]) == 2
    one_line(capsys, words, str(Path("run") / "weights.safetensors"))


def test_full_disk_inside_safetensors_is_an_os_error_naming_the_file(tmp_path, monkeypatch, capsys):
    """safetensors reports ENOSPC as SafetensorError("... (os error 28)"), which must not surface raw."""
    from safetensors import SafetensorError

    import toymodels.io

    def full(*a, **kw):
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(toymodels.io, "save_file", full)
    assert main(["dataset", "make", "d.safetensors", "n_samples=10", "n_features=8", "d_model=4"]) == 2
    one_line(capsys, "d.safetensors", "no space left")
    assert list(tmp_path.iterdir()) == []


def test_full_disk_for_real(tmp_path, capsys):
    """A 64 kB tmpfs (needs root and mount; skipped elsewhere): writing into it fails with one line and the
    earlier result beside it is untouched."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here")
    try:
        save_tensors(mnt / "d.safetensors", {"hidden": torch.ones(4, 2)})
        before = (mnt / "d.safetensors").read_bytes()
        assert main(["dataset", "make", str(mnt / "d.safetensors"), "n_samples=20000", "d_model=8",
                     "n_features=16"]) == 2
        one_line(capsys, str(mnt / "d.safetensors"), "no space left")
        assert (mnt / "d.safetensors").read_bytes() == before
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_an_unexpected_exception_is_one_line_saying_bug(monkeypatch, capsys):
    import toymodels.bench

    monkeypatch.setattr(toymodels.bench, "run_bench", lambda **kw: 1 / 0)
    assert main(["bench", "--quick"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "ZeroDivisionError" in err and "bug" in err and "--debug" in err, err


def test_ctrl_c_while_importing_is_one_line(monkeypatch, capsys):
    """A Ctrl-C inside an extension module's import surfaces as ImportError("initialization failed")."""
    import importlib

    import toymodels.cli

    def interrupted_import(name, *a):
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt as e:
            raise ImportError("initialization failed") from e

    monkeypatch.setattr(toymodels.cli.importlib, "import_module", interrupted_import)
    assert main(["train"]) == 130
    assert capsys.readouterr().err.startswith("toymodels: interrupted")
    monkeypatch.setattr(toymodels.cli.importlib, "import_module", importlib.import_module)


def test_ctrl_c_swallowed_during_the_imports_still_stops_the_run(monkeypatch, capsys):
    """A library that catches the KeyboardInterrupt of a Ctrl-C during its import (a bare `except`) cannot keep
    the command running: the CLI saw the SIGINT and stops once the imports are done (seen on CI: a Ctrl-C at 1 s
    into a fresh venv's start-up was lost and the run trained on)."""
    import toymodels.cli

    real = toymodels.cli.build_parser

    def swallowing_import():
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.5)
        except BaseException:
            pass
        return real()

    monkeypatch.setattr(toymodels.cli, "build_parser", swallowing_import)
    assert main(["train", "steps=1000000"]) == 130
    assert capsys.readouterr().err.strip() == toymodels.cli.INTERRUPTED


def test_ctrl_c_at_any_moment_of_a_real_run_is_one_line():
    """SIGINT to the process group (what a terminal sends), early: usually during the imports."""
    for delay in (1.0, 3.0):  # not earlier: a signal during Python's own start-up (site) is out of our reach
        proc = subprocess.Popen([sys.executable, "-m", "toymodels.cli", "train", "steps=1000000"], env=ENV,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
        time.sleep(delay)
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=120)
        # 130, or killed by the SIGINT itself (-2, which a shell also reports as 130): seen once on a loaded CI
        # machine, after the one line was printed
        assert proc.returncode in (130, -signal.SIGINT), err
        assert err.strip().splitlines() == [
            "toymodels: interrupted; finished results are saved, rerun to resume where supported"], err


def _interrupt_when(marker: str, argv: list[str], timeout: float = 240) -> tuple[int, list[str]]:
    """Run the CLI with bars on, SIGINT its process group once `marker` is on stderr; (status, non-bar lines)."""
    env = dict(ENV, TOYMODELS_PROGRESS="1")
    proc = subprocess.Popen([sys.executable, "-m", "toymodels.cli", *argv], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)
    os.set_blocking(proc.stderr.fileno(), False)
    buf, t0 = b"", time.monotonic()
    while marker.encode() not in buf and time.monotonic() - t0 < timeout and proc.poll() is None:
        buf += proc.stderr.read() or b""
        time.sleep(0.05)
    time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGINT)
    os.set_blocking(proc.stderr.fileno(), True)
    buf += proc.stderr.read()
    proc.wait(timeout=120)
    lines = [s.strip() for s in re.split(r"[\r\n]", buf.decode(errors="replace"))]
    return proc.returncode, [s for s in lines if s and "%|" not in s and not re.search(r"\d+/\d+ \[", s)]


@pytest.mark.slow
@pytest.mark.parametrize("marker, argv", [
    # 8M samples (~8.8 GB by the memory check): long enough to interrupt, small enough for a 24 GB machine (50M
    # needed 54.8 GB and was refused there with exit 2 before any sampling)
    ("sample", ["dataset", "make", "{tmp}/d.safetensors", "n_samples=8000000"]),
    ("sweep phase_2to1", ["sweep", "phase_2to1", "grid.n=8", "out={tmp}/sweep"]),
])
def test_ctrl_c_during_dataset_make_and_sweeps_is_one_line(marker, argv, tmp_path):
    code, lines = _interrupt_when(marker, [a.format(tmp=tmp_path) for a in argv])
    assert code == 130 and lines == [
        "toymodels: interrupted; finished results are saved, rerun to resume where supported"], lines


# ---------------------------------------------------------------- validate everything read

BAD = [
    (["train", "seed=18446744073709551616"], "seed"),
    (["train", "seed=100000000000000000000000000"], "seed"),
    (["train", "progress=maybe"], "progress"),
    (["sae", "train", "{data}", "--out", "o", "betas=0.9"], "betas"),
    (["sae", "train", "{data}", "--out", "o", "betas=[0.9]"], "betas"),
    (["sae", "train", "{data}", "--out", "o", "seed=-1"], "seed"),
    (["sae", "train", "{data}", "--out", "o", "variant=matryoshka", "d_sae=16", "prefixes=[]"], "prefixes"),
    (["sae", "train", "{data}", "--out", "o", "variant=[]"], "variant"),
    (["sae", "train", "{data}", "--out", "o", "d_sae=16", "variant=matryoshka", "prefix_weights=[1,2]"],
     "prefix_weights"),
    (["benchmark", "score", "{sae}", "{data}", "--n-eval", "0"], "n_eval"),
    (["benchmark", "score", "{sae}", "{data}", "--n-eval", "-5"], "n_eval"),
    (["dataset", "make", "x.safetensors", "sample_seed=-1"], "sample_seed"),
    (["dataset", "make", "x.safetensors", "seed=1180591620717411303424"], "seed"),
    (["dataset", "make", "x.safetensors", "n_samples=2.5"], "n_samples"),
    (["sweep", "phase_2to1", "grid.x.lo=inf"], "grid.x.lo"),
    (["sweep", "phase_2to1", "grid.y.hi=nan"], "grid.y.hi"),
    (["sweep", "phase_2to1", "grid.x.log=false", "grid.x.lo=-inf"], "grid.x.lo"),
    (["benchmark", "run", "--experiment", "benchmark_tiny", "seeds=[-1]"], "seeds"),
    (["benchmark", "run", "--experiment", "benchmark_tiny", "data_seed=18446744073709551616"], "data_seed"),
    (["benchmark", "run", "--experiment", "benchmark_tiny", "k=[a]"], "k"),
    (["benchmark", "run", "--experiment", "benchmark_tiny", "resample_until=2"], "resample_until"),
    (["benchmark", "run", "--experiment", "benchmark_tiny", "sae_options={{topk: [1]}}"], "sae_options"),
    (["bench", "--only", "NOMATCH"], "only"),
    (["bench", "--threads", "0"], "threads"),
    (["figures", "--seed", "-1"], "seed"),
    (["figures", "--seed", "99999999999999999999"], "seed"),
]


@pytest.mark.parametrize("argv, field", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_values_out_of_type_or_range(argv, field, tmp_path, monkeypatch, capsys, request):
    monkeypatch.chdir(tmp_path)
    fill = {"data": "", "sae": ""}
    if any("{data}" in a or "{sae}" in a for a in argv):
        fill = {"data": str(request.getfixturevalue("data")), "sae": str(request.getfixturevalue("sae_dir"))}
    with __import__("warnings").catch_warnings():
        __import__("warnings").simplefilter("error")  # grid.x.lo=inf used to print numpy warnings
        assert main([a.format(**fill) for a in argv]) == 2
    one_line(capsys, field)


def test_python_api_rejects_floats_where_integers_belong(data):
    from toymodels import ToyConfig, TrainConfig, train
    from toymodels.groundtruth import Dictionary, SyntheticConfig, score_sae
    from toymodels.groundtruth.toydata import toy_dataset
    from toymodels.sae import SAETrainConfig
    from toymodels.sweep import SweepConfig

    for build, field in [(lambda: TrainConfig(steps=10.0), "steps"), (lambda: TrainConfig(seed=1.0), "seed"),
                         (lambda: SweepConfig(batch_points=2.5), "batch_points"),
                         (lambda: SweepConfig(n_jobs=1.5), "n_jobs"),
                         (lambda: SAETrainConfig(betas=0.9), "betas"),
                         (lambda: SAETrainConfig(seed=2**64), "seed"),
                         (lambda: Dictionary(SyntheticConfig(n_features=8, d_model=4)).sample(10.0), "n_samples"),
                         (lambda: Dictionary(SyntheticConfig(n_features=8, d_model=4)).sample(10, seed=-1),
                          "sample_seed"),
                         (lambda: score_sae(object(), data, n_eval=10.0), "n_eval")]:
        with pytest.raises(ConfigError, match=field):
            build()
    result = train(ToyConfig(n_features=3, n_hidden=2), TrainConfig(steps=2, progress=False))
    with pytest.raises(ConfigError, match="n_samples"):
        toy_dataset(result, n_samples=5.5)


def _dataset_with(tmp_path, meta=None, **tensors) -> Path:
    from safetensors.torch import save_file

    path = tmp_path / "lying.safetensors"
    t = {"hidden": torch.rand(16, 4)} | tensors
    save_file(t, str(path), metadata=None if meta is None else {"toymodels_dataset": meta})
    return path


LIES = [
    ("metadata is a list", dict(meta="[1, 2]"), "must be a JSON object"),
    ("metadata n_features is text", dict(meta='{"n_features": "many"}'), "n_features"),
    ("metadata n_features is a float", dict(meta='{"n_features": 1e9}'), "n_features"),
    ("parent out of range", dict(feature_vectors=torch.rand(3, 4), feature_parent=torch.tensor([-1, 7, 0])),
     "feature_parent"),
    ("parent is itself", dict(feature_vectors=torch.rand(3, 4), feature_parent=torch.tensor([-1, 1, 0])),
     "feature_parent"),
    ("NaN feature vectors", dict(feature_vectors=torch.tensor([[float("nan")] * 4] * 3)), "feature_vectors"),
    ("NaN true activations", dict(feature_vectors=torch.rand(3, 4), feature_acts_rows=torch.tensor([0]),
                                  feature_acts_cols=torch.tensor([1]),
                                  feature_acts_values=torch.tensor([float("nan")])), "feature_acts_values"),
    ("density out of range", dict(feature_vectors=torch.rand(3, 4), feature_density=torch.tensor([0.5, 2.0, 0.1])),
     "feature_density"),
]


@pytest.mark.parametrize("what, spec, field", LIES, ids=[w for w, _, _ in LIES])
def test_dataset_files_that_lie(what, spec, field, tmp_path, capsys):
    path = _dataset_with(tmp_path, **spec)
    assert main(["dataset", "info", str(path)]) == 2
    one_line(capsys, field, str(path))


def test_a_dataset_claiming_a_billion_features_is_refused_before_allocating(tmp_path, sae_dir, capsys):
    path = _dataset_with(tmp_path, meta='{"n_features": 1000000000}', hidden=torch.rand(4096, 8),
                         feature_acts_rows=torch.tensor([0]), feature_acts_cols=torch.tensor([5]),
                         feature_acts_values=torch.tensor([1.0]))
    assert main(["dataset", "info", str(path)]) == 0  # the claim alone is legal
    capsys.readouterr()
    assert main(["benchmark", "score", str(sae_dir), str(path)]) == 2
    one_line(capsys, "1000000000 true features", "needs about", "available")


CFG_LIES = [("architecture", ["topk"]), ("d_in", "8"), ("d_sae", True), ("apply_b_dec_to_input", "yes"),
            ("metadata", [1]), ("normalize_activations", ["none"]), ("k", 2.0)]


@pytest.mark.parametrize("key, value", CFG_LIES, ids=[k for k, _ in CFG_LIES])
def test_saelens_cfg_with_wrong_types(key, value, sae_dir, data, capsys):
    cfg = json.loads((sae_dir / "cfg.json").read_text())
    cfg[key] = value
    (sae_dir / "cfg.json").write_text(json.dumps(cfg))
    assert main(["benchmark", "score", str(sae_dir), str(data)]) == 2
    one_line(capsys, key, "cfg.json")


@pytest.mark.parametrize("key, value", [("toymodels_scale", "big"), ("toymodels_config", [1]),
                                        ("toymodels_config", {"variant": "topk", "d_in": 9, "d_sae": 16})])
def test_saelens_metadata_with_wrong_types(key, value, sae_dir, data, capsys):
    cfg = json.loads((sae_dir / "cfg.json").read_text())
    cfg["metadata"][key] = value
    (sae_dir / "cfg.json").write_text(json.dumps(cfg))
    assert main(["benchmark", "score", str(sae_dir), str(data)]) == 2
    one_line(capsys, key, "cfg.json")


def test_an_sae_that_does_not_fit_the_dataset(tmp_path, sae_dir, capsys):
    from toymodels.groundtruth import Dictionary, SyntheticConfig, save_dataset, score_sae

    wide = save_dataset(tmp_path / "wide.safetensors",
                        Dictionary(SyntheticConfig(n_features=16, d_model=12)).sample(32))
    assert main(["benchmark", "score", str(sae_dir), str(wide)]) == 2
    one_line(capsys, "does not fit", "12")
    with pytest.raises(DataFileError, match="does not fit"):
        score_sae(sae_dir, wide)


def test_a_broken_experiment_is_named_and_the_others_still_listed(tmp_path, monkeypatch, capsys):
    import shutil

    for f in (ROOT / "sweeps").glob("*.yaml"):
        shutil.copy(f, tmp_path)
    (tmp_path / "alist.yaml").write_text("- 1\n- 2\n")
    (tmp_path / "notyaml.yaml").write_text("kind: [unclosed\n")
    monkeypatch.setenv("TOYMODELS_SWEEPS_DIR", str(tmp_path))
    assert main(["experiments"]) == 0
    out, err = capsys.readouterr()
    assert "phase_2to1" in out and "benchmark_tiny" in out
    assert "alist.yaml" in err and "notyaml.yaml" in err and "Traceback" not in err
    assert main(["sweep", "alist"]) == 2
    one_line(capsys, "alist.yaml", "mapping")
    assert main(["sweep", "phase_2to1", "grid.n=0"]) == 2  # the others still compose
    one_line(capsys, "grid.n")


# ---------------------------------------------------------------- estimate before allocating

HUGE = [
    (["train", "n_features=1000000000000"], "n_features"),
    (["train", "n_features=100000", "n_hidden=1000000", "steps=1"], "train"),
    (["train", "batch_size=100000000000", "steps=1"], "batch 100000000000"),
    (["train", "restarts=1000000000", "steps=1"], "restart(s)"),
    (["sweep", "phase_2to1", "grid.n=1000000"], "grid"),
    (["dataset", "make", "x.safetensors", "n_samples=1000000000000"], "sample"),
    (["dataset", "make", "x.safetensors", "n_features=10000000000", "d_model=1000"], "dictionary"),
    (["sae", "train", "{data}", "--out", "o", "d_sae=10000000000", "k=1"], "SAE training"),
    (["benchmark", "run", "--experiment", "benchmark_tiny", "widths=[100000000000]", "k=[1]", "variants=[topk]"],
     "SAE training"),
]


@pytest.mark.parametrize("argv, what", HUGE, ids=[" ".join(a) for a, _ in HUGE])
def test_sizes_that_cannot_fit_are_refused_with_estimate_and_limit(argv, what, tmp_path, monkeypatch, capsys, data):
    monkeypatch.chdir(tmp_path)
    t0 = time.perf_counter()
    assert main([a.format(data=data) for a in argv]) == 2
    one_line(capsys, what, "needs about", "available")
    assert time.perf_counter() - t0 < 30  # refused, not attempted


def test_hierarchy_depth_is_counted_without_hanging(capsys, tmp_path):
    from toymodels.groundtruth.synthetic import SyntheticConfig, tree_size

    t0 = time.perf_counter()
    for branching in (1, 2, 4):
        with pytest.raises(ConfigError, match="n_roots"):
            SyntheticConfig(n_features=1024, n_roots=1, branching=branching, depth=10**12)
    assert time.perf_counter() - t0 < 1
    assert [tree_size(8, 4, 4, 10**6), tree_size(2, 1, 5, 100), tree_size(3, 2, 3, 10)] == [680, 10, 11]


def test_the_memory_check_can_be_overridden(monkeypatch):
    from toymodels import budget

    monkeypatch.setattr(budget, "available_bytes", lambda: 1000)
    with pytest.raises(ResourceError, match=r"needs about 2.0 kB of memory, more than the 1.0 kB available"):
        budget.check_memory(2000, "thing")
    monkeypatch.setenv("TOYMODELS_NO_MEMORY_CHECK", "1")
    budget.check_memory(2000, "thing")
    monkeypatch.delenv("TOYMODELS_NO_MEMORY_CHECK")
    assert main(["--no-memory-check", "train", "steps=1", "n_features=2"]) == 0
    assert os.environ.pop("TOYMODELS_NO_MEMORY_CHECK") == "1"


def test_estimates_are_not_below_what_training_really_holds():
    """The estimate must at least cover the tensors a run holds: a 64-instance batch's weights and one step."""
    from toymodels.budget import train_bytes

    K, F, H, B = 64, 40, 10, 256
    held = 4 * (4 * K * F * H + 3 * K * F * B)  # W, grad, two Adam moments; x, out, error of one step
    assert train_bytes(K, F, H, B) >= held


# ---------------------------------------------------------------- where it runs


def test_ray_backend_without_ray_says_how_to_install(tmp_path, monkeypatch, capsys):
    import importlib.util

    if importlib.util.find_spec("ray") is not None:
        pytest.skip("ray is installed here")
    monkeypatch.chdir(tmp_path)
    assert main(["sweep", "phase_2to1", "backend=ray", "grid.n=2"]) == 2
    one_line(capsys, "backend", "pip install")
    assert not (tmp_path / "runs").exists()


def test_unreachable_dask_scheduler_is_one_line_quickly(tmp_path, monkeypatch, capsys):
    pytest.importorskip("distributed")
    import toymodels.backends

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(toymodels.backends, "DASK_CONNECT_TIMEOUT", 1.0)
    t0 = time.perf_counter()
    assert main(["sweep", "phase_2to1", "backend=dask", "address=tcp://127.0.0.1:9", "grid.n=2",
                 "train.steps=2", "out=s"]) == 2
    assert time.perf_counter() - t0 < 20
    one_line(capsys, "address", "tcp://127.0.0.1:9")


# ---------------------------------------------------------------- permissions


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_every_written_file_honours_the_umask(tmp_path, monkeypatch, data, sae_dir, capsys):
    """safetensors recreates its file 0600; datasets, weights, SAE exports, sweep batches and figures must be
    shared like the JSON/CSV beside them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from toymodels.paper import save_figure

    monkeypatch.chdir(tmp_path)
    assert main(["train", "steps=2", "--out", "run"]) == 0
    assert main(["sweep", "phase_2to1", "grid.n=2", "train.steps=2", "train.restarts=1", "backend=sequential",
                 "out=sweep"]) == 0
    fig = plt.figure()
    save_figure(fig, tmp_path / "figs", "f")
    plt.close(fig)
    want = 0o666 & ~_umask()
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert {p.suffix for p in files} >= {".safetensors", ".json", ".csv", ".png", ".svg"}
    wrong = {str(p.relative_to(tmp_path)): oct(p.stat().st_mode & 0o777) for p in files
             if p.stat().st_mode & 0o777 != want}
    assert not wrong, wrong


# ---------------------------------------------------------------- promises the README makes


def _subcommands(parser, path=()):
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*path, name), sub
                yield from _subcommands(sub, (*path, name))


def test_every_leaf_subcommand_has_its_own_examples():
    from toymodels.cli import build_parser

    leaves = [(p, s) for p, s in _subcommands(build_parser())
              if not any(q[:len(p)] == p and len(q) > len(p) for q, _ in _subcommands(build_parser()))]
    assert len(leaves) >= 10
    missing = [" ".join(p) for p, s in leaves if "examples:" not in s.format_help()]
    assert not missing, missing


def test_piped_sae_training_reports_progress(data, tmp_path, monkeypatch, capsys):
    import toymodels.progress

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TOYMODELS_PROGRESS", raising=False)
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setattr(toymodels.progress, "HEARTBEAT_SECONDS", 0.0)
    assert main(["sae", "train", str(data), "--out", "o", "steps=10", "batch_size=16", "d_sae=16", "k=2"]) == 0
    lines = [s for s in capsys.readouterr().err.splitlines() if s.startswith("SAEs: ")]
    assert len(lines) == 10 and lines[-1].startswith("SAEs: 10/10 (100%)"), lines
    monkeypatch.setenv("TOYMODELS_PROGRESS", "0")
    assert main(["sae", "train", str(data), "--out", "o", "steps=10", "batch_size=16", "d_sae=16", "k=2"]) == 0
    assert "SAEs: " not in capsys.readouterr().err


def test_sae_train_dead_and_benchmark_dead_frac_count_the_same_window(data, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["sae", "train", str(data), "--out", "o", "steps=5", "batch_size=16", "d_sae=32", "k=1",
                 "variant=topk"]) == 0
    out = capsys.readouterr().out
    dead = int(re.search(r"^topk-32-s0 +topk +[\d.]+ +[\d.]+ +(\d+)$", out, re.M).group(1))
    assert "first 64 samples" in out
    assert main(["benchmark", "score", "o/topk-32-s0", str(data)]) == 0
    frac = float(re.search(r"dead_frac +([\d.]+)", capsys.readouterr().out).group(1))
    assert dead > 0 and dead == round(frac * 32)


def test_every_readme_python_snippet_runs(tmp_path, monkeypatch, capsys):
    """Each ```python block of README.md runs as written in a fresh namespace (a block may opt out only with a
    first line `# readme-test: skip (reason)`, for GPUs or network)."""
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert len(blocks) >= 3
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TOYMODELS_PROGRESS", "0")
    from toymodels.sae import registry  # a fresh user session: built-in variants only, as a README reader has

    monkeypatch.setattr(registry, "_REGISTRY", {n: registry.get_variant(n) for n in registry.builtin_variants()})
    for i, code in enumerate(blocks):
        first = code.splitlines()[0]
        if first.startswith("# readme-test: skip"):
            assert re.search(r"\(.+\)", first), f"block {i}: say why it is skipped"
            continue
        exec(compile(code, f"README.md python block {i}", "exec"), {"__name__": f"readme_{i}"})
    assert capsys.readouterr().out


def test_figures_pin_the_torch_thread_count(monkeypatch, tmp_path):
    """Same seed, same files: the figures command trains on a fixed thread count (1 unless --threads says)."""
    import toymodels.paper

    seen = []
    monkeypatch.setattr(toymodels.paper, "build_gallery", lambda *a, **kw: seen.append(torch.get_num_threads()))
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert main(["figures", "--only", "intro", "--out", str(tmp_path)]) == 0
        assert main(["figures", "--only", "intro", "--out", str(tmp_path), "--threads", "2"]) == 0
    finally:
        torch.set_num_threads(before)
    assert seen == [1, 2]

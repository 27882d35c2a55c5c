"""Issue 18 (item 6): property-based tests with hypothesis. Every entry point, given generated configs, override
strings and malformed files, either succeeds or exits 2 with exactly one line on stderr: never a traceback, never
a message that calls itself a bug, never a hang. The default suite runs a few derandomised examples per entry
point; `pytest -m slow tests/test_fuzz.py` runs the long profile (hundreds, random)."""

import contextlib
import io
import json
import math
import shutil
import tempfile
import warnings
from datetime import timedelta
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from toymodels.cli import main
from toymodels.errors import ToyModelsError

ROOT = Path(__file__).resolve().parents[1]
SHORT, LONG = 6, 150
"""Examples per entry point: default suite, slow profile."""
PROFILES = [pytest.param(SHORT, id="short"), pytest.param(LONG, id="long", marks=pytest.mark.slow)]


def fuzz(n: int):
    """Hypothesis settings: n examples, derandomised in the short profile (same examples every run)."""
    return settings(max_examples=n, deadline=timedelta(seconds=60), derandomize=n <= SHORT, database=None,
                    suppress_health_check=list(HealthCheck), print_blob=True)


def run(argv: list[str]) -> tuple[int, str, str]:
    """The CLI in-process: (status, stdout, stderr). Warnings print to the captured stderr, as they would."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), warnings.catch_warnings():
        warnings.simplefilter("default")
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


def assert_clean(argv, code: int, err: str) -> None:
    assert "Traceback" not in err, (argv, err)
    if code == 0:
        return
    lines = err.splitlines()
    assert code == 2 and len(lines) == 1, (argv, code, err)
    assert lines[0].startswith("toymodels: error: ") and "this is a bug" not in lines[0], (argv, err)


@contextlib.contextmanager
def workdir():
    """A fresh working directory (hypothesis examples cannot use function-scoped fixtures)."""
    import os

    old = os.getcwd()
    with tempfile.TemporaryDirectory() as d:
        os.chdir(d)
        try:
            yield Path(d)
        finally:
            os.chdir(old)


# ------------------------------------------------------------------ values, as a user would type them

TOKENS = ["0", "-1", "1", "2", "3", "2.5", "-0.5", "1e-3", "0.999", "1.0", "1e308", "inf", "-inf", "nan", ".nan",
          "1e400", "18446744073709551616", "99999999999999999999999", "true", "false", "null", "~", "abc", "",
          "[]", "[1]", "[0.5, 0.1]", "[[1], [0.1]]", "[[[0.5]]]", "[a, b]", "{a: 1}", "'1'", "[", "]", "{", ":",
          "1,2", "0x10", "1_000", "[-1]", "[1, 2, 3, 4]", "[2.5]", "[true]"]
ANY_TEXT = st.one_of(st.sampled_from(TOKENS), st.integers(-10**25, 10**25).map(str),
                     st.floats(allow_nan=True, allow_infinity=True).map(repr),
                     st.text(alphabet="abcxyz019.-_[],{}: ", max_size=8))
SIZE_TEXT = st.one_of(st.sampled_from(["0", "-1", "1", "2", "3", "4", "2.5", "abc", "[]", "[2]", "null", "true",
                                       "1e13", "10000000000000", "1000000000000000000000", "-100"]),
                      st.integers(1, 6).map(str))
"""Sizes (features, widths, samples, steps): small, invalid, or absurd enough that a size check must refuse them
(a legal but merely long run is not a failure, so medium sizes are not generated)."""


def overrides(keys: dict[str, st.SearchStrategy], junk: bool = True) -> st.SearchStrategy:
    """Lists of `key=value` strings over `keys` (plus the odd unknown key or malformed item)."""
    item = st.sampled_from(sorted(keys)).flatmap(lambda k: keys[k].map(lambda v, k=k: f"{k}={v}"))
    if junk:
        item = st.one_of(item, st.sampled_from(["nokey=1", "=1", "steps", "a=b=c", "toy.=1", "+x=1", "~steps"]))
    return st.lists(item, max_size=4)


def keyed(sizes: list[str], others: list[str]) -> dict[str, st.SearchStrategy]:
    return {k: SIZE_TEXT for k in sizes} | {k: ANY_TEXT for k in others}


TRAIN_KEYS = keyed(["n_features", "n_hidden", "n_instances", "set_size", "steps", "batch_size", "restarts",
                    "eval_batches", "log_every", "warmup_steps", "snapshot_every"],
                   ["model", "density", "importance", "importance_decay", "structure", "child_prob", "magnitude",
                    "lr", "weight_decay", "schedule", "min_lr_frac", "seed", "sparse_sampling", "on_divergence",
                    "backward", "progress"])
SAE_KEYS = keyed(["d_sae", "k", "k_start", "aux_k", "steps", "batch_size", "dead_after", "log_every",
                  "resample_every", "warmup_steps"],
                 ["variant", "l1_coeff", "l1_warmup_frac", "l0_coeff", "bandwidth", "threshold_init",
                  "threshold_lr_scale", "aux_coeff", "prefixes", "prefix_weights", "threshold_momentum", "b_dec_init",
                  "init_scale", "seed", "name", "lr", "betas", "decay_frac", "grad_clip", "normalize", "resample_until",
                  "resample_min_rate", "d_in"])
DATA_KEYS = keyed(["n_features", "d_model", "correlation_rank", "n_roots", "branching", "depth", "n_samples"],
                  ["firing", "p_max", "p_min", "zipf_exponent", "magnitude_mean", "magnitude_max", "magnitude_min",
                   "magnitude_std", "correlation", "correlation_scale", "mutually_exclusive", "tree_nodes", "seed",
                   "sample_seed"])
SWEEP_KEYS = keyed(["toy.n_features", "toy.n_hidden", "grid.n", "grid.x.n", "grid.y.n", "batch_points",
                    "train.restarts"],
                   ["toy.density", "toy.importance", "toy.model", "train.lr", "train.seed", "grid.x.lo", "grid.x.hi",
                    "grid.x.log", "grid.x.field", "grid.x.features", "grid.y.lo", "grid.y.hi", "phase_feature",
                    "n_jobs", "name", "toy.structure"])
BENCH_KEYS = keyed(["n_train", "n_eval", "batch_size", "dataset.n_features", "dataset.d_model", "dataset.n_roots",
                    "dataset.depth"],
                   ["lr", "widths", "k", "l1_coeff", "l0_coeff", "seeds", "variants", "data_seed", "resample_every",
                    "resample_until", "resample_min_rate", "match_l0", "sae_options", "dataset.p_max",
                    "dataset.firing"])


# ------------------------------------------------------------------ command lines


@pytest.mark.parametrize("n", PROFILES)
def test_fuzz_train(n):
    @fuzz(n)
    @given(overrides(TRAIN_KEYS))
    def prop(items):
        with workdir():
            argv = ["train", "steps=3", "batch_size=8", *items]
            assert_clean(argv, *run(argv)[::2])

    prop()


@pytest.fixture(scope="module")
def dataset_file(tmp_path_factory):
    from toymodels.groundtruth import Dictionary, SyntheticConfig, save_dataset

    path = tmp_path_factory.mktemp("fuzz") / "data.safetensors"
    return save_dataset(path, Dictionary(SyntheticConfig(n_features=16, d_model=8, n_roots=2, branching=2,
                                                         depth=2)).sample(128))


@pytest.fixture(scope="module")
def sae_folder(tmp_path_factory, dataset_file):
    from toymodels.groundtruth import load_dataset
    from toymodels.sae import SAEConfig, SAETrainConfig, export_saelens, train_saes

    sae = train_saes([SAEConfig(variant="jumprelu", d_in=8, d_sae=16)], load_dataset(dataset_file).hidden,
                     SAETrainConfig(steps=3, batch_size=16, progress=False))[0]
    return export_saelens(sae, tmp_path_factory.mktemp("fuzz") / "sae")


@pytest.mark.parametrize("n", PROFILES)
def test_fuzz_sae_train(n, dataset_file):
    @fuzz(n)
    @given(overrides(SAE_KEYS))
    def prop(items):
        with workdir():
            argv = ["sae", "train", str(dataset_file), "--out", "o", "steps=3", "batch_size=8", "d_sae=8", "k=2",
                    *items]
            assert_clean(argv, *run(argv)[::2])

    prop()


@pytest.mark.parametrize("n", PROFILES)
def test_fuzz_dataset_make(n):
    @fuzz(n)
    @given(overrides(DATA_KEYS))
    def prop(items):
        with workdir():
            argv = ["dataset", "make", "d.safetensors", "n_samples=50", "n_features=16", "d_model=4", *items]
            assert_clean(argv, *run(argv)[::2])

    prop()


@pytest.mark.parametrize("n", PROFILES)
def test_fuzz_sweep(n):
    @fuzz(n)
    @given(overrides(SWEEP_KEYS))
    def prop(items):
        with workdir():
            argv = ["sweep", "phase_2to1", "grid.n=2", "train.steps=2", "train.restarts=1", *items,
                    "backend=sequential", "out=s"]
            assert_clean(argv, *run(argv)[::2])

    prop()


@pytest.mark.parametrize("n", PROFILES)
def test_fuzz_benchmark_run(n):
    @fuzz(n)
    @given(overrides(BENCH_KEYS, junk=False))
    def prop(items):
        with workdir():
            argv = ["benchmark", "run", "--experiment", "benchmark_tiny", "steps=2", "n_train=200", "n_eval=100",
                    "variants=[topk]", "widths=[8]", "k=[2]", "dataset.n_features=16", "dataset.d_model=4",
                    "dataset.n_roots=0", *items, "out=b"]
            assert_clean(argv, *run(argv)[::2])

    prop()


@pytest.mark.parametrize("n", PROFILES)
def test_fuzz_command_line_shapes(n):
    """Any words at all after `toymodels`: usage errors are one line too."""
    words = st.sampled_from(["train", "sae", "benchmark", "dataset", "sweep", "experiments", "bench", "figures",
                             "run", "score", "make", "info", "--out", "--only", "--seed", "--n-eval", "--quick",
                             "--threads", "--debugx", "-x", "x=1", "nope", "--experiment", "-1", "--help=1"])

    @fuzz(n)
    @given(st.lists(words, min_size=1, max_size=4))
    def prop(argv):
        if argv[0] != "experiments":  # a valid command line would run for minutes: only malformed ones are tried
            argv = [*argv, "--no-such-flag"]
        with workdir():
            assert_clean(argv, *run(argv)[::2])

    prop()


# ------------------------------------------------------------------ files that lie

DTYPES = [torch.float32, torch.float64, torch.float16, torch.int64, torch.int32, torch.bool, torch.uint8]
NAMES = ["hidden", "feature_vectors", "feature_acts", "feature_acts_rows", "feature_acts_cols", "feature_acts_values",
         "feature_parent", "feature_density", "other"]
JSON_LEAVES = (st.none() | st.booleans() | st.integers(-10**20, 10**20) | st.floats(allow_nan=False)
               | st.text(max_size=6))
JSON = st.recursive(JSON_LEAVES, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6), c,
                                                                                     max_size=3), max_leaves=8)


@st.composite
def tensors(draw):
    shape = draw(st.lists(st.integers(0, 5), max_size=3))
    dtype = draw(st.sampled_from(DTYPES))
    fill = draw(st.sampled_from(["rand", "nan", "index", "neg"]))
    n = math.prod(shape)
    if fill == "nan":
        t = torch.full((n,), float("nan"))
    elif fill == "index":
        t = torch.arange(n, dtype=torch.float64) * draw(st.sampled_from([1, 7, 1000]))
    elif fill == "neg":
        t = -torch.rand(n) * 10
    else:
        t = torch.rand(n)
    return t.reshape(shape).to(dtype)


@st.composite
def dataset_files(draw):
    """(tensors, metadata text or None) of a file that may claim anything."""
    t = draw(st.dictionaries(st.sampled_from(NAMES), tensors(), max_size=5))
    if draw(st.booleans()):
        t["hidden"] = torch.rand(draw(st.integers(1, 20)), draw(st.integers(1, 6)))
    meta = draw(st.one_of(st.none(), JSON.map(json.dumps), st.text(max_size=10),
                          st.dictionaries(st.sampled_from(["n_features", "source", "config"]), JSON,
                                          max_size=2).map(json.dumps)))
    return t, meta


@pytest.mark.parametrize("n", PROFILES)
def test_fuzz_dataset_files(n, sae_folder):
    from safetensors.torch import save_file

    @fuzz(n)
    @given(dataset_files(), st.sampled_from(["info", "score", "sae"]), st.binary(max_size=40))
    def prop(spec, command, garbage):
        with workdir() as d:
            path = d / "f.safetensors"
            t, meta = spec
            if command == "info" and not t:
                path.write_bytes(garbage)  # not a safetensors file at all
            else:
                save_file({k: v.contiguous() for k, v in t.items()}, str(path),
                          metadata=None if meta is None else {"toymodels_dataset": meta})
            argv = {"info": ["dataset", "info", str(path)],
                    "score": ["benchmark", "score", str(sae_folder), str(path)],
                    "sae": ["sae", "train", str(path), "--out", "o", "steps=2", "batch_size=4", "d_sae=4",
                            "k=1"]}[command]
            assert_clean(argv, *run(argv)[::2])

    prop()


CFG_KEYS = ["architecture", "d_in", "d_sae", "apply_b_dec_to_input", "normalize_activations", "k",
            "rescale_acts_by_decoder_norm", "metadata", "dtype"]
META_KEYS = ["toymodels_config", "toymodels_scale", "toymodels_variant"]


@pytest.mark.parametrize("n", PROFILES)
def test_fuzz_saelens_folders(n, sae_folder, dataset_file):
    @fuzz(n)
    @given(st.lists(st.tuples(st.sampled_from(CFG_KEYS + META_KEYS), st.one_of(JSON, st.just("<delete>"))),
                    min_size=1, max_size=3),
           st.sampled_from(["cfg", "weights", "history"]), tensors())
    def prop(changes, what, tensor):
        with workdir() as d:
            folder = Path(shutil.copytree(sae_folder, d / "sae"))
            cfg = json.loads((folder / "cfg.json").read_text())
            for key, value in changes:
                where = cfg["metadata"] if key in META_KEYS and isinstance(cfg.get("metadata"), dict) else cfg
                if value == "<delete>":
                    where.pop(key, None)
                else:
                    where[key] = value
            if what == "weights":
                from safetensors.torch import load_file, save_file

                w = load_file(str(folder / "sae_weights.safetensors"))
                w[changes[0][0] if changes[0][0] in w else "W_enc"] = tensor
                save_file(w, str(folder / "sae_weights.safetensors"))
            elif what == "history":
                (folder / "history.json").write_text(json.dumps(changes[0][1]))
            else:
                (folder / "cfg.json").write_text(json.dumps(cfg))
            argv = ["benchmark", "score", str(folder), str(dataset_file)]
            assert_clean(argv, *run(argv)[::2])

    prop()


@pytest.mark.parametrize("n", PROFILES)
def test_fuzz_experiment_yamls(n, monkeypatch):
    import yaml

    @fuzz(n)
    @given(st.one_of(JSON.map(lambda v: yaml.safe_dump(v)), st.text(max_size=30),
                     st.dictionaries(st.sampled_from(["kind", "defaults", "grid", "toy", "name", "description"]), JSON,
                                     max_size=3).map(lambda v: yaml.safe_dump(v))))
    def prop(text):
        with workdir() as d:
            shutil.copy(ROOT / "sweeps" / "phase_2to1.yaml", d)
            (d / "fuzzed.yaml").write_text(text)
            monkeypatch.setenv("TOYMODELS_SWEEPS_DIR", str(d))
            code, out, err = run(["experiments"])
            assert code == 0 and "phase_2to1" in out and "Traceback" not in err, (text, out, err)
            argv = ["sweep", "fuzzed", "grid.n=2", "train.steps=2", "backend=sequential", "out=s"]
            assert_clean(argv, *run(argv)[::2])

    prop()


# ------------------------------------------------------------------ the Python API: configs

PY_VALUES = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(), st.text(max_size=5),
                      st.lists(st.one_of(st.integers(-3, 9), st.floats(-2, 2)), max_size=4),
                      st.lists(st.lists(st.floats(0, 1), min_size=1, max_size=2), max_size=2),
                      st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))


def _configs():
    from toymodels import ToyConfig, TrainConfig
    from toymodels.groundtruth import SyntheticConfig
    from toymodels.groundtruth.benchmark import BenchmarkConfig
    from toymodels.sae import SAEConfig, SAETrainConfig
    from toymodels.sweep import SweepConfig

    return [ToyConfig, TrainConfig, SAEConfig, SAETrainConfig, SyntheticConfig, SweepConfig, BenchmarkConfig]


@pytest.mark.parametrize("n", [pytest.param(30, id="short"), pytest.param(1000, id="long", marks=pytest.mark.slow)])
def test_fuzz_python_configs(n):
    """Any field set to any value: the config is built or refused with a ToyModelsError naming that field."""
    import dataclasses

    classes = _configs()

    @fuzz(n)
    @given(st.sampled_from(classes).flatmap(
        lambda cls: st.tuples(st.just(cls), st.dictionaries(st.sampled_from([f.name for f in dataclasses.fields(cls)
                                                                             if f.name != "kind"]),
                                                            PY_VALUES, min_size=1, max_size=2))))
    def prop(case):
        cls, kw = case
        try:
            cls(**kw)
        except ToyModelsError as e:
            assert "\n" not in str(e) and len(str(e)) < 400, str(e)

    prop()

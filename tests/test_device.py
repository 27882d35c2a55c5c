"""The device option: names, one-line errors for absent devices, default == cpu byte for byte, and the
device-agnostic torch code paths (what runs on a GPU) exercised on the CPU via TOYMODELS_TORCH_PATH=1."""

import json

import pytest
import torch

from toymodels.config import ToyConfig, TrainConfig
from toymodels.device import hash_fields, precision_context, resolve
from toymodels.errors import ConfigError
from toymodels.train import train

TOY = ToyConfig(n_features=5, n_hidden=2, density=[[0.05], [0.3]])


@pytest.fixture
def no_gpu(monkeypatch):
    """This machine as one without CUDA, whatever it has; `auto` unpinned."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delenv("TOYMODELS_DEVICE", raising=False)
    monkeypatch.delenv("TOYMODELS_TORCH_PATH", raising=False)


@pytest.fixture
def torch_path(monkeypatch):
    monkeypatch.setenv("TOYMODELS_TORCH_PATH", "1")


def test_names_and_resolution(no_gpu, monkeypatch):
    assert resolve("auto") == resolve("cpu") == torch.device("cpu")
    for bad in ("gpu", "cuda:x", "CPU", 3):
        with pytest.raises(ConfigError, match="device: must be (one of auto, cpu, cuda, cuda:N or mps|a string)"):
            TrainConfig(device=bad)
    from toymodels.sae import SAETrainConfig

    with pytest.raises(ConfigError, match="precision: must be one of float32, tf32, bf16"):
        SAETrainConfig(precision="fp16")
    TrainConfig(device="cuda:1")  # a valid name; availability is checked when training starts
    monkeypatch.setenv("TOYMODELS_DEVICE", "cuda")
    with pytest.raises(ConfigError, match="TOYMODELS_DEVICE: cuda is not available"):
        resolve("auto")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert resolve("auto") == torch.device("cuda")  # auto means what TOYMODELS_DEVICE says
    monkeypatch.delenv("TOYMODELS_DEVICE")
    assert resolve("auto") == torch.device("cuda")
    with pytest.raises(ConfigError, match=r"cuda:3 is not available .*1 CUDA device\(s\)"):
        resolve("cuda:3")


@pytest.mark.parametrize("argv", [["train", "n_features=3", "steps=5", "device=cuda"],
                                  ["sweep", "phase_2to1", "grid.n=2", "train.steps=5", "train.device=cuda"]])
def test_absent_device_is_one_line(no_gpu, argv, tmp_path, capsys, monkeypatch):
    from toymodels.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "cuda is not available on this machine" in err and "=cpu" in err
    assert not (tmp_path / "runs").exists()  # refused before any output


def test_default_equals_cpu_byte_for_byte(no_gpu):
    from toymodels.sae import SAEConfig, SAETrainConfig, train_saes

    a, b = (train(TOY, TrainConfig(steps=60, restarts=2, progress=False, **kw)) for kw in ({}, {"device": "cpu"}))
    assert torch.equal(a.W, b.W) and torch.equal(a.loss_history, b.loss_history) and a.meta["device"] == "cpu"
    X = torch.randn(600, 8, generator=torch.Generator().manual_seed(0))
    cfgs = [SAEConfig(variant="topk", d_in=8, d_sae=16, k=3)]
    sa, sb = (train_saes(cfgs, X, SAETrainConfig(steps=30, batch_size=64, progress=False, **kw))[0]
              for kw in ({}, {"device": "cpu"}))
    assert all(torch.equal(t, sb.tensors()[n]) for n, t in sa.tensors().items())
    assert sa.history["device"] == "cpu" and sa.history["precision"] == "float32"
    assert hash_fields("auto") == hash_fields("cpu") == {}  # CPU cache keys are the ones from before


@pytest.mark.parametrize("kw", [{}, {"dataset_size": 64}, {"sparse_sampling": "always", "model": "hidden_relu"},
                                {"eval_mode": "exact", "snapshot_every": 50, "structure": "hierarchical"}])
def test_toy_torch_path_on_cpu(torch_path, kw):
    """The code a GPU runs (autograd, torch sampling from a generator on the device, device-resident loss
    buffers, results copied back) trains to the fast path's loss on the CPU."""
    kw = dict(kw)
    toy_kw = {k: kw.pop(k) for k in ("model", "structure") if k in kw}
    if kw.get("eval_mode"):
        toy = ToyConfig(n_features=3, n_hidden=2, density=[[0.05], [0.3]])
    else:
        toy = ToyConfig(n_features=6, n_hidden=2, density=[[0.05], [0.3]], set_size=3, **toy_kw)
    tc = TrainConfig(steps=100, restarts=2, lr=3e-3, progress=False, **kw)
    res = train(toy, tc)
    assert res.meta["backward"] == "autograd" and res.meta["device"] == "cpu"
    assert res.meta["sampler"] == ("sparse" if kw.get("sparse_sampling") == "always" else "dense")
    assert res.W.device.type == "cpu" and torch.isfinite(res.final_loss).all()
    if kw.get("snapshot_every"):
        assert res.snapshots.shape[0] == 3
    if "dataset_size" in kw:
        assert res.dataset_loss is not None and res.dataset[0].shape == (64, 6)


@pytest.mark.slow
def test_toy_torch_path_matches_fast_path_loss(monkeypatch):
    toy = ToyConfig(n_features=5, n_hidden=2, density=0.1)
    tc = TrainConfig(steps=1500, restarts=3, lr=3e-3, progress=False, eval_batches=16)
    fast = train(toy, tc)
    monkeypatch.setenv("TOYMODELS_TORCH_PATH", "1")
    generic = train(toy, tc)
    assert fast.meta["backward"] == "manual" and generic.meta["backward"] == "autograd"
    assert float(generic.final_loss[0]) == pytest.approx(float(fast.final_loss[0]), rel=0.1)


def test_sae_torch_path_equals_cpu_path(torch_path, monkeypatch):
    """On the CPU the device path of SAE training (data moved once, the device as default for the variants'
    tensors, results copied back) is the CPU path exactly: every variant, packed, with resampling."""
    from toymodels.sae import SAEConfig, SAETrainConfig, train_saes

    X = torch.randn(800, 8, generator=torch.Generator().manual_seed(1)).relu()
    tc = SAETrainConfig(steps=40, batch_size=64, resample_every=15, progress=False)
    cfgs = [SAEConfig(variant=v, d_in=8, d_sae=16, seed=s, **({"k": 3} if "topk" in v or v == "matryoshka" else {}))
            for v in ("relu", "topk", "batchtopk", "jumprelu", "matryoshka", "gated") for s in (0, 1)]
    generic = train_saes(cfgs, X, tc)
    monkeypatch.delenv("TOYMODELS_TORCH_PATH")
    plain = train_saes(cfgs, X, tc)
    for a, b in zip(generic, plain, strict=True):
        assert a.tensors().keys() == b.tensors().keys()
        assert all(torch.equal(t, b.tensors()[n]) for n, t in a.tensors().items()), a.cfg.label
        assert a.history["loss"] == b.history["loss"]


def test_bf16_precision_trains_close_to_float32():
    from toymodels.sae import SAEConfig, SAETrainConfig, train_saes

    X = torch.randn(1000, 8, generator=torch.Generator().manual_seed(2)).relu()
    cfg = SAEConfig(variant="topk", d_in=8, d_sae=16, k=3)
    runs = {p: train_saes([cfg], X, SAETrainConfig(steps=60, batch_size=100, progress=False, device="cpu",
                                                   precision=p))[0] for p in ("float32", "tf32", "bf16")}
    assert runs["bf16"].history["precision"] == "bf16"
    assert runs["tf32"].history["mse"] == runs["float32"].history["mse"]  # tf32 changes nothing on the CPU
    assert runs["bf16"].history["mse"][-1] == pytest.approx(runs["float32"].history["mse"][-1], rel=0.1)
    from toymodels.device import matmul_autocast

    with precision_context("bf16", torch.device("cpu")), matmul_autocast():
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
    with matmul_autocast():
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32


def test_sweep_torch_path_packs_one_batch(torch_path, tmp_path, monkeypatch):
    from toymodels.sweep import content_hash, load, plan, run_sweep

    args = ["grid.n=3", "train.steps=40", "train.restarts=2", "train.batch_size=64", "batch_points=2",
            "progress=false", "train.eval_mode=sampled"]
    cfg = load("phase_2to1", args)
    assert len(plan(cfg)[1]) == 1  # a GPU-like device packs every point into one wide batch
    torch_hash = content_hash(cfg)
    df = run_sweep(cfg, out=tmp_path, log=lambda *_: None)
    assert len(df) == 9 * 2 and json.loads((tmp_path / "run.json").read_text())["device"] == "torch-cpu"
    monkeypatch.delenv("TOYMODELS_TORCH_PATH")
    assert len(plan(cfg)[1]) == 5 and content_hash(cfg) != torch_hash  # the CPU: batch_points, its own folder


def test_score_sae_device_cpu_equals_default():
    from toymodels.groundtruth import Dictionary, SyntheticConfig
    from toymodels.groundtruth.metrics import score_sae
    from toymodels.sae import SAEConfig, SAETrainConfig, train_saes

    ds = Dictionary(SyntheticConfig(n_features=16, d_model=8, p_max=0.3, p_min=0.05)).sample(800, seed=0)
    (sae,) = train_saes([SAEConfig(variant="relu", d_in=8, d_sae=16)], ds.hidden,
                        SAETrainConfig(steps=20, batch_size=64, progress=False))
    assert score_sae(sae, ds, n_eval=400, device="cpu") == score_sae(sae, ds, n_eval=400)


def test_gpu_check_without_gpu_and_dry_run(no_gpu, capsys):
    """bench/gpu_check.py: one clean line without a GPU; --dry-run runs its toy and sweep steps on the CPU."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "bench" / "gpu_check.py"
    spec = importlib.util.spec_from_file_location("gpu_check", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main([]) == 0
    out = capsys.readouterr().out.strip()
    assert "\n" not in out and out.startswith("gpu_check: no GPU to check here")
    before = torch.get_num_threads()
    try:
        assert mod.main(["--dry-run", "--only", "toy", "sweep", "synth"]) == 0
    finally:
        torch.set_num_threads(before)
    out = capsys.readouterr().out
    assert "all checks passed" in out and "toy pentagon grid 5→2: loss" in out and "sweep phase_2to1" in out
    assert "skipped in --dry-run" in out  # synthsaebench16k is GPU-sized

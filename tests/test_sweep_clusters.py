"""Clusters for real: a sweep on a local multi-process Ray cluster, and through Hydra's submitit launcher with
submitit's local executor (the code path SLURM takes), each gives results.csv byte-identical to the local run.

Both need the optional extras (`pip install 'toymodels[ray,slurm]'`) and skip without them. They are `slow`
(run with -m slow): each starts fresh Python processes that import torch (Ray workers; the submitit job), about
2.5 minutes each on 2 shared, heavily loaded cores."""

import os
import subprocess
import sys

import pytest

from toymodels.sweep import load, run_sweep

SMALL = ["grid.n=3", "train.steps=60", "train.restarts=2", "train.batch_size=64", "batch_points=3",
         "progress=false"]


@pytest.fixture(scope="module")
def local_csv(tmp_path_factory):
    out = tmp_path_factory.mktemp("local")
    run_sweep(load("phase_2to1", [*SMALL, "backend=sequential"]), out=out, log=lambda *_: None)
    return (out / "results.csv").read_bytes()


@pytest.mark.slow
def test_ray_local_cluster_equals_local_run(tmp_path, local_csv):
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        address = ray.get_runtime_context().gcs_address
        run_sweep(load("phase_2to1", [*SMALL, "backend=ray", f"address={address}"]), out=tmp_path / "ray",
                  log=lambda *_: None)

        @ray.remote
        def pid():
            return os.getpid()

        workers = set(ray.get([pid.remote() for _ in range(4)]))
    finally:
        ray.shutdown()
    assert workers and os.getpid() not in workers  # the batches ran in the cluster's worker processes
    assert (tmp_path / "ray/results.csv").read_bytes() == local_csv


@pytest.mark.slow
def test_hydra_submitit_local_launcher_equals_local_run(tmp_path, local_csv):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    out = tmp_path / "submitit"
    cmd = [sys.executable, "-m", "toymodels.sweep", "--config-name", "phase_2to1", "--multirun",
           "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10", f"hydra.sweep.dir={tmp_path / 'hydra'}",
           *SMALL, "backend=sequential", f"out={out}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    logs = list((tmp_path / "hydra").rglob("*_log.out"))  # submitit's own job log: the job ran under submitit
    assert logs, sorted(p.name for p in (tmp_path / "hydra").rglob("*"))
    assert (out / "results.csv").read_bytes() == local_csv

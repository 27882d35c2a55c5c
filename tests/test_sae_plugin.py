"""Bring your own SAE: the README's example variant (read from README.md, not copied) registers from a user's
file, then trains, exports (SAELens loads it), and is scored on the leaderboard beside a built-in."""

import re
import shlex
from pathlib import Path

import pandas as pd
import pytest
import torch

from toymodels.cli import main

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_example() -> tuple[str, list[list[str]]]:
    """(the python block, the bash commands) of the README's "Bring your own SAE" subsection."""
    text = README.read_text().split("### Bring your own SAE", 1)[1]
    python = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    bash = re.search(r"```bash\n(.*?)```", text, re.S).group(1)
    return python, [shlex.split(line) for line in bash.splitlines() if line.strip()]


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    python, _ = readme_example()
    (tmp_path / "my_sae.py").write_text(python)
    monkeypatch.chdir(tmp_path)
    assert main(["dataset", "make", "data.safetensors", "n_samples=3000", "n_features=32", "d_model=12",
                 "n_roots=2", "depth=2", "branching=2"]) == 0
    return tmp_path


def test_readme_plugin_trains_and_exports(workdir):
    _, (train, _) = readme_example()
    assert train[:3] == ["toymodels", "sae", "train"]
    assert main(train[1:] + ["steps=60", "batch_size=256"]) == 0
    folders = sorted(p.name for p in (workdir / "runs" / "mine").iterdir())
    assert folders == ["relu_tanh-64-s0-0", "relu_tanh-64-s0-1"]  # two lam values, same label → disambiguated
    from toymodels.groundtruth.files import load_dataset
    from toymodels.sae import load_saelens

    x = load_dataset("data.safetensors").hidden[:256]
    ours = load_saelens(workdir / "runs" / "mine" / folders[0])
    assert type(ours.cfg).__name__ == "TanhConfig" and ours.cfg.lam == 0.3 and ours.architecture == "standard"
    assert (ours.encode(x) > 0).any()
    sae_lens = pytest.importorskip("sae_lens")
    theirs = sae_lens.SAE.load_from_disk(str(workdir / "runs" / "mine" / folders[0]))
    with torch.no_grad():
        torch.testing.assert_close(theirs.encode(x), ours.encode(x), rtol=1e-5, atol=1e-5)


def test_readme_plugin_on_the_leaderboard(workdir):
    _, (_, bench) = readme_example()
    assert bench[:3] == ["toymodels", "benchmark", "run"]
    assert main(bench[1:] + ["out=board", "n_train=2000", "steps=40"]) == 0
    table = pd.read_csv(workdir / "board" / "results.csv")
    mine = table[table["variant"] == "relu_tanh"]
    assert sorted(mine["sparsity_value"]) == [0.3, 1.0, 3.0] and set(mine["sparsity_param"]) == {"lam"}
    assert mine["f1"].between(0, 1).all() and mine["mcc"].gt(0).all()
    assert mine.sort_values("sparsity_value")["l0"].is_monotonic_decreasing  # λ buys sparsity
    board = pd.read_csv(workdir / "board" / "leaderboard.csv")
    assert set(board["variant"]) == {"relu", "relu_tanh"}


def test_plugin_errors(tmp_path, capsys):
    assert main(["benchmark", "run", "--experiment", "benchmark_tiny", "plugins=[nope.py]"]) == 2
    assert "plugin: nope.py is not a file" in capsys.readouterr().err

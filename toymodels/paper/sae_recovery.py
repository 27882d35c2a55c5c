"""SAEs across superposition: a cut of the recoverability atlas (toymodels.groundtruth.atlas) for the gallery."""

from __future__ import annotations

import pandas as pd

from toymodels.groundtruth.atlas import AtlasConfig

GRID = dict(m_fixed=4, n_values=[4, 8, 16], n_fixed=8, m_values=[8], densities=[1.0, 0.3, 0.1],
            importance_last=[1.0], structures=["independent"], seeds=3)
"""The cut: shapes 4→4, 8→4, 16→4 (n at m = 4) and 8→8 (m at n = 8); three densities; independent features,
flat importance; three seeds; all ten variants (120 SAEs per shape)."""
STEPS = {False: dict(toy_steps=3000, sae_steps=600, n_train=16384, n_eval=4096),
         True: dict(toy_steps=1500, sae_steps=300, n_train=8192, n_eval=2048)}

TITLE = "SAE recovery across superposition: a cut of the recoverability atlas"
SECTION = "sae"
SOURCE = ("Sharkey et al. 2022, Taking features out of superposition with sparse autoencoders (toy data as ground "
          "truth); every SAE of the zoo at the exact true L0")
CAPTION = (
    "Left: the toy models' own phase map (share of represented features in superposition; numbers: features "
    "represented). Other panels: for each SAE variant at the exact true L0, the median over three seeds of the "
    "share of represented features some decoder row finds (cos ≥ 0.9), ± half the seed range; red boxes: seeds "
    "disagree by more than 0.25; dashed: the compressed-sensing boundary (Donoho–Tanner, k < m / (2 ln(n/m))). "
    "At density 0.1 TopK and Matching Pursuit find every represented feature even at 16→4; at density 1 no "
    "variant does (every feature always on: at L0 = n nothing singles the features out).\n"
    "relu_output toy models (4→4, 8→4, 16→4, 8→8), independent features of equal importance; SAEs with 2n "
    f"latents, {STEPS[False]['sae_steps']} steps (--quick: {STEPS[True]['sae_steps']}); all SAEs of a shape and "
    "variant train as one packed program. Full atlas: `toymodels sweep atlas`."
)


def config(quick: bool = False, seed: int = 0) -> AtlasConfig:
    """The atlas configuration of this cut."""
    return AtlasConfig(**GRID, **STEPS[bool(quick)], seed=seed, progress=False, out="runs/atlas-gallery")


def compute(quick: bool = False, seed: int = 0) -> pd.DataFrame:
    """The atlas table of the cut (one row per variant × cell × seed), computed in memory."""
    import joblib

    from toymodels.groundtruth.atlas import run_unit, tidy

    cfg = config(quick, seed)
    parts = joblib.Parallel(n_jobs=2)(joblib.delayed(run_unit)(cfg, u) for u in cfg.units())  # sequential in a
    # gallery worker (`build_gallery(jobs=...)`), else two processes
    return tidy(pd.concat([df for df, _ in parts], ignore_index=True))


def plot(df: pd.DataFrame):
    from toymodels.groundtruth.atlas_report import atlas_figure

    return atlas_figure(df, "independent", 1.0)

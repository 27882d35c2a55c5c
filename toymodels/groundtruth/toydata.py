"""Ground-truth datasets from trained toy models: the hidden activations h = W x of one instance.

Ground truth: feature f's direction is row W[i, f] of W_IFH (not normalised; trained norms are ≈ 1) and its
per-sample activation is x_f, so h = Σ_f x_f W_f exactly for the linear-hidden models (relu_output, linear).
For hidden_relu / abs_value h = ReLU(W x) is not a linear superposition; the rows of W are still stored, and
the metadata says `linear_hidden: false`.

Unrepresented features (‖W_f‖ < analysis.REPRESENTED_NORM) are **dropped** from the ground truth by default:
they barely move h, so no SAE could recover them and counting them would only measure the toy model. Their
activations still shape h (slightly) and the kept features' original indices are in `meta["feature_index"]`.
Pass `represented_only=False` to keep every feature.
"""

from __future__ import annotations

import torch

from toymodels.analysis import REPRESENTED_NORM
from toymodels.errors import check
from toymodels.features import sample_dense
from toymodels.groundtruth.files import GroundTruthDataset


@torch.no_grad()
def toy_dataset(result, instance: int = 0, n_samples: int = 10_000, seed: int = 0,
                represented_only: bool = True) -> GroundTruthDataset:
    """Sample `n_samples` inputs from instance `instance`'s feature distribution and record h and the
    truth."""
    cfg, I = result.config, result.config.instances
    from toymodels.config import SEED_RANGE, _is_int, _is_seed

    check(_is_int(instance) and 0 <= instance < I, "instance", f"an integer in [0, {I})", instance)
    check(_is_int(n_samples) and n_samples >= 1, "n_samples", "an integer ≥ 1", n_samples)
    check(_is_seed(seed), "seed", SEED_RANGE, seed)
    model = result.model.select(torch.tensor([instance]))
    p_1F = torch.tensor(cfg.density_array()[instance:instance + 1], dtype=torch.float32)
    x_1NF = sample_dense(cfg, p_1F, n_samples, torch.Generator().manual_seed(seed))
    h_ND = model.hidden(x_1NF)[0].float()
    W_FH = model.feature_weights()[0].float()
    keep = W_FH.norm(dim=1) >= REPRESENTED_NORM
    if not represented_only:
        keep = torch.ones(len(W_FH), dtype=torch.bool)
    idx = keep.nonzero()[:, 0]
    parent = None
    if cfg.structure == "hierarchical":  # first member of each set is the parent
        full = torch.arange(cfg.n_features)
        par = torch.where(full % cfg.set_size == 0, -1, full - full % cfg.set_size)
        new = torch.full((cfg.n_features,), -1)
        new[idx] = torch.arange(len(idx))
        parent = torch.where(par[idx] >= 0, new[par[idx].clamp_min(0)], -1)
    meta = {"source": "toy_model", "model": cfg.model, "instance": instance, "n_samples": n_samples,
            "sample_seed": seed, "n_features_total": cfg.n_features, "n_hidden": cfg.n_hidden,
            "feature_index": idx.tolist(), "represented_only": represented_only,
            "linear_hidden": cfg.model in ("relu_output", "linear")}
    density = torch.tensor(cfg.density_array()[instance], dtype=torch.float32)[idx]
    return GroundTruthDataset.from_dense(h_ND, W_FH[idx], x_1NF[0][:, idx], parent=parent, density=density,
                                         meta=meta)

"""SAE zoo: ReLU/L1 (two flavours), p-annealing, TopK, AbsTopK, BatchTopK, JumpReLU, Gated, Matryoshka and
Matching Pursuit sparse autoencoders, trained many-at-once with an instance dimension and exported in SAELens's
on-disk format. Variants live in a registry (`toymodels.sae.registry`; a user's own variant registers the same
way)."""

from toymodels.sae import (  # noqa: F401  (registers them)
    abstopk,
    batchtopk,
    gated,
    jumprelu,
    matching_pursuit,
    matryoshka,
    p_anneal,
    relu,
    topk,
)
from toymodels.sae.base import PackedSAE, SAEConfig, TrainedSAE
from toymodels.sae.export import export_saelens, load_saelens
from toymodels.sae.registry import get_variant, load_plugin, register_variant, variant_names
from toymodels.sae.train import SAETrainConfig, train_saes

__all__ = ["PackedSAE", "SAEConfig", "SAETrainConfig", "TrainedSAE", "export_saelens", "get_variant",
           "load_plugin", "load_saelens", "register_variant", "train_saes", "variant_names"]

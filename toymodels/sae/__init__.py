"""SAE zoo: ReLU/L1 (two flavours), TopK, BatchTopK, JumpReLU, Gated and Matryoshka sparse autoencoders,
trained many-at-once with an instance dimension and exported in SAELens's on-disk format. Variants live in a
registry (`toymodels.sae.registry`; a user's own variant registers the same way)."""

from toymodels.sae import batchtopk, gated, jumprelu, matryoshka, relu, topk  # noqa: F401  (registers them)
from toymodels.sae.base import PackedSAE, SAEConfig, TrainedSAE
from toymodels.sae.export import export_saelens, load_saelens
from toymodels.sae.registry import get_variant, load_plugin, register_variant, variant_names
from toymodels.sae.train import SAETrainConfig, train_saes

__all__ = ["PackedSAE", "SAEConfig", "SAETrainConfig", "TrainedSAE", "export_saelens", "get_variant",
           "load_plugin", "load_saelens", "register_variant", "train_saes", "variant_names"]

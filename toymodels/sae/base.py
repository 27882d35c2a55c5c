"""The SAE interface: a config dataclass, a packed-module base class, and `TrainedSAE` (one inference SAE).

A `PackedSAE` holds K SAEs of one variant and width as tensors with a leading instance dim (W_enc_KDL,
W_dec_KLD, ...). Subclasses implement `loss_terms` (named [K] losses), and optionally `pre_step`/`post_step`
(decoder-norm constraints) and `inference` (the SAELens architecture + tensors computing the same function).
The optimised loss is the sum over K, so each SAE's gradient is exactly what it would get alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn

from toymodels.config import SEED_RANGE, _is_int, _is_num, _is_seed, check_types
from toymodels.device import matmul_autocast
from toymodels.errors import ConfigError, check
from toymodels.seeding import generator


class _ConfigFactory(type):
    """Calling the base `SAEConfig(variant=..., **fields)` builds that variant's config (registry.make_config);
    calling a variant's own config class is the plain dataclass constructor."""

    def __call__(cls, *args, **kwargs):
        if cls is SAEConfig:
            from toymodels.sae.registry import make_config

            if args:
                raise ConfigError("SAEConfig: pass fields by keyword (variant=..., d_in=..., ...)")
            return make_config(**kwargs)
        return super().__call__(*args, **kwargs)


@dataclass
class SAEConfig(metaclass=_ConfigFactory):
    """Fields every SAE has. Each variant subclasses it with its own fields (registry.py says how);
    `SAEConfig(variant="topk", d_in=..., k=...)` builds the named variant's config."""

    variant: ClassVar[str] = ""
    """Registered variant name (set by `register_variant`)."""
    sparsity_field: ClassVar[str | None] = None
    """The field a benchmark sweeps to vary sparsity (None: the variant has none)."""
    pack_fields: ClassVar[tuple[str, ...]] = ()
    """Fields (or properties) that must be equal for SAEs to share one packed module."""

    d_in: int = 32
    """Input dimension (≥ 1); must match the data."""
    d_sae: int = 64
    """Number of latents L (≥ 1)."""
    b_dec_init: str = "mean"
    """Decoder bias init: mean (of the first data batch) or zero."""
    init_scale: float = 1.0
    """Norm of each initial decoder row (> 0); relu_april conventionally uses ~0.1."""
    seed: int = 0
    """Seeds this SAE's initialisation (≥ 0); identical alone or packed with others."""
    name: str | None = None
    """Optional label (used for export folder names); default variant-d_sae-seed."""

    def __post_init__(self):
        check_types(self)
        for f in ("d_in", "d_sae"):
            check(_is_int(getattr(self, f)) and getattr(self, f) >= 1, f, "an integer ≥ 1", getattr(self, f))
        check(_is_num(self.init_scale) and self.init_scale > 0, "init_scale", "a number > 0", self.init_scale)
        check(self.b_dec_init in ("mean", "zero"), "b_dec_init", "mean or zero", self.b_dec_init)
        check(_is_seed(self.seed), "seed", SEED_RANGE, self.seed)
        check(self.name is None or isinstance(self.name, str), "name", "null or a string", self.name)

    @classmethod
    def l0_settings(cls, target: float) -> list[dict] | None:
        """Config fields that train this variant at L0 = `target`: one dict if that run lands on the target
        (a controller, or k = target), several to interpolate between, None if the variant cannot be steered
        (a benchmark then sweeps `sparsity_field` and interpolates)."""
        return None

    @property
    def group_key(self) -> tuple:
        """SAEs with equal keys are packed into one tensor program."""
        return (self.variant, self.d_in, self.d_sae) + tuple(_frozen(getattr(self, f)) for f in self.pack_fields)

    @property
    def label(self) -> str:
        return self.name or f"{self.variant}-{self.d_sae}-s{self.seed}"


def _is_list(v) -> bool:
    return isinstance(v, (list, tuple)) or type(v).__name__ == "ListConfig"


def _frozen(v):
    return tuple(v) if isinstance(v, list) else v


class PackedSAE(nn.Module):
    """K SAEs of one variant/width as one module. Shapes: K instances, B batch, D d_in, L d_sae."""

    config_class: ClassVar[type] = SAEConfig
    """The variant's config dataclass (set by `register_variant`)."""
    unit_norm_decoder = True
    """Keep decoder rows unit norm (renormalise after each step, project the row-parallel gradient out)."""
    apply_b_dec_to_input = True

    def __init__(self, cfgs: list[SAEConfig]):
        super().__init__()
        check(len({c.group_key for c in cfgs}) == 1, "configs", "one variant/d_in/d_sae/pack key per PackedSAE",
              [c.label for c in cfgs])
        self.cfgs = cfgs
        c0 = cfgs[0]
        K, D, L = len(cfgs), c0.d_in, c0.d_sae
        self.K, self.D, self.L = K, D, L
        W_dec = torch.stack([self._init_dec(c) for c in cfgs])  # [K, L, D]
        self.W_dec_KLD = nn.Parameter(W_dec)
        self.W_enc_KDL = nn.Parameter(W_dec.transpose(1, 2).clone())
        self.b_enc_KL = nn.Parameter(torch.zeros(K, L))
        self.b_dec_KD = nn.Parameter(torch.zeros(K, D))
        self.coeff = {}  # name -> [K] float tensors of per-SAE coefficients

    def param_groups(self) -> list[dict]:
        """Optimiser parameter groups; a group's `lr_scale` multiplies the scheduled learning rate."""
        return [{"params": list(self.parameters()), "lr_scale": 1.0}]

    @torch.no_grad()
    def schedule(self, frac: float) -> None:
        """Per-step schedules at training fraction `frac` ∈ [0, 1] (e.g. TopK's k annealing); none here."""

    @torch.no_grad()
    def after_step(self, l0_K: torch.Tensor, frac: float, lr_factor: float = 1.0) -> None:
        """After each optimiser step, with the batch's [K] mean active latents per sample and the step's
        lr / peak lr (L0 controllers)."""

    def summary(self, i: int) -> dict:
        """Extra end-of-training values of SAE i for its history (e.g. a controlled coefficient)."""
        return {}

    def per_sae(self, attr: str) -> torch.Tensor:
        """A [K] float tensor of config field `attr`."""
        if attr not in self.coeff:
            self.coeff[attr] = torch.tensor([float(getattr(c, attr)) for c in self.cfgs])
        return self.coeff[attr]

    @staticmethod
    def _init_dec(c: SAEConfig) -> torch.Tensor:
        g = generator(c.seed, "sae-init")  # not manual_seed(seed): a dictionary drawn so would be this W
        W = torch.randn(c.d_sae, c.d_in, generator=g, device="cpu")  # the same init on every device
        return W / W.norm(dim=1, keepdim=True) * c.init_scale

    def latent_init(self, name: str, i: int) -> float:
        """Initial value of the per-latent ([K, L]) parameter `name` for SAE i (biases start at 0)."""
        return 0.0

    @torch.no_grad()
    def reset_latents(self, i: int, idx: torch.Tensor, x_BD: torch.Tensor | None = None) -> None:
        """Put SAE i's per-latent parameters (the [K, L] ones) for latents `idx` back to their init (resampling;
        `x_BD` is the resampling batch, for variants whose init depends on data)."""
        for name, p in self.named_parameters():
            if name.endswith("_KL"):
                p[i, idx] = self.latent_init(name, i)

    @torch.no_grad()
    def init_from_data(self, x_BD: torch.Tensor) -> None:
        """Data-dependent init (decoder bias at the batch mean where configured); x_BD may be [K, B, D], one
        stream per SAE."""
        mean = x_BD.mean(-2)  # [D], or [K, D] with streams
        for i, c in enumerate(self.cfgs):
            if c.b_dec_init == "mean":
                self.b_dec_KD[i] = mean if mean.ndim == 1 else mean[i]

    def sae_in(self, x_BD: torch.Tensor) -> torch.Tensor:
        """[K, B, D] encoder input (x − b_dec if apply_b_dec_to_input)."""
        return x_BD - self.b_dec_KD[:, None, :] if self.apply_b_dec_to_input else x_BD.expand(self.K, -1, -1)

    def pre_acts(self, x_BD: torch.Tensor, idx_KN: torch.Tensor | None = None) -> torch.Tensor:
        """[K, B, L] encoder pre-activations (x − b_dec) W_enc + b_enc, computed as x W_enc + (b_enc − b_dec W_enc)
        so that the backward pass needs no [B, D] gradient for the shared, grad-free input. With `idx_KN`
        ([K, N] latent indices): only those columns, [K, B, N] (their gradients touch only those columns)."""
        W_KDL, bias_KL = self.W_enc_KDL, self.b_enc_KL
        if idx_KN is not None:
            W_KDL = W_KDL.gather(2, idx_KN[:, None, :].expand(-1, W_KDL.shape[1], -1))
            bias_KL = bias_KL.gather(1, idx_KN)
        if self.apply_b_dec_to_input:
            bias_KL = bias_KL - torch.bmm(self.b_dec_KD[:, None, :], W_KDL).squeeze(1)
        with matmul_autocast():  # bf16 precision: the dense product in bfloat16, back to float32 (else a no-op)
            pre = torch.baddbmm(bias_KL[:, None, :], x_BD.expand(self.K, -1, -1), W_KDL)
        return pre.float()

    def encode(self, x_BD: torch.Tensor) -> torch.Tensor:
        """[K, B, L] activations (inference form)."""
        raise NotImplementedError

    def decode(self, acts_KBL: torch.Tensor) -> torch.Tensor:
        with matmul_autocast():
            out = torch.baddbmm(self.b_dec_KD[:, None, :], acts_KBL, self.W_dec_KLD)
        return out.float()

    def loss_terms(self, x_BD: torch.Tensor, frac: float) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Named [K] losses (summed into the objective) and the [K, L] count of firings in this batch.
        `frac` ∈ [0, 1] is the fraction of training done (for coefficient warm-up)."""
        raise NotImplementedError

    @torch.no_grad()
    def pre_step(self) -> None:
        """Before the optimiser step: remove the gradient component parallel to each unit-norm decoder row."""
        if self.unit_norm_decoder and self.W_dec_KLD.grad is not None:
            W, G = self.W_dec_KLD, self.W_dec_KLD.grad
            G -= (G * W).sum(-1, keepdim=True) * W

    @torch.no_grad()
    def post_step(self) -> None:
        if self.unit_norm_decoder:
            self.W_dec_KLD /= self.W_dec_KLD.norm(dim=-1, keepdim=True).clamp_min(1e-8)

    @torch.no_grad()
    def inference(self, i: int) -> tuple[str, dict[str, torch.Tensor], dict]:
        """(SAELens architecture, tensors in SAELens names/shapes, extra cfg keys) of SAE i, same function."""
        return "standard", self._base_tensors(i), {}

    def _base_tensors(self, i: int) -> dict[str, torch.Tensor]:
        return {"W_enc": self.W_enc_KDL[i].detach().clone(), "b_enc": self.b_enc_KL[i].detach().clone(),
                "W_dec": self.W_dec_KLD[i].detach().clone(), "b_dec": self.b_dec_KD[i].detach().clone()}


def mse_K(x_BD: torch.Tensor, recon_KBD: torch.Tensor) -> torch.Tensor:
    """[K] squared reconstruction error, summed over D and averaged over the batch."""
    return (recon_KBD - x_BD).pow(2).sum(-1).mean(-1)


def warm(coeff_K: torch.Tensor, frac: float, warmup: torch.Tensor) -> torch.Tensor:
    """Linear warm-up of a [K] coefficient over the first `warmup` fraction of training (none where it is 0)."""
    return coeff_K * torch.where(warmup > 0, torch.clamp(frac / warmup.clamp_min(1e-12), max=1.0), 1.0)


@dataclass
class TrainedSAE:
    """One trained SAE in SAELens inference form, in the units of the data it was given (scale folded in).

    encode/decode compute exactly what `sae_lens.SAE.load_from_disk` of its export computes."""

    cfg: SAEConfig
    architecture: str
    """standard, topk, abstopk, jumprelu, gated or matching_pursuit."""
    W_enc: torch.Tensor
    """[d_in, d_sae]."""
    W_dec: torch.Tensor
    """[d_sae, d_in]; rows are the learned feature directions."""
    b_dec: torch.Tensor
    """[d_in]."""
    b_enc: torch.Tensor | None = None
    """[d_sae] (None for gated)."""
    threshold: torch.Tensor | None = None
    """[d_sae] jumprelu threshold (BatchTopK/Matryoshka: the learned global threshold)."""
    b_gate: torch.Tensor | None = None
    b_mag: torch.Tensor | None = None
    r_mag: torch.Tensor | None = None
    apply_b_dec_to_input: bool = True
    k: int | None = None
    """topk / abstopk: active latents per sample; matching_pursuit: the most pursuit steps (max_iterations)."""
    residual_threshold: float = 0.0
    """matching_pursuit: a sample stops once its residual norm is below this (0: never)."""
    stop_on_duplicate_support: bool = True
    """matching_pursuit: a sample stops when a step re-picks one of its latents."""
    scale: float = 1.0
    """Normalisation factor the SAE was trained with (x·scale), already folded into the tensors."""
    history: dict = field(default_factory=dict)
    """Per-logged-step lists: step, loss, mse, L0 (mean active latents/sample), dead_frac."""

    def _sae_in(self, x_ND: torch.Tensor) -> torch.Tensor:
        x = x_ND.to(self.W_enc.dtype)
        return x - self.b_dec if self.apply_b_dec_to_input else x

    def encode(self, x_ND: torch.Tensor) -> torch.Tensor:
        """[N, d_in] → [N, d_sae] activations."""
        s = self._sae_in(x_ND)
        if self.architecture == "matching_pursuit":
            from toymodels.sae.matching_pursuit import pursue

            return pursue(s[None], self.W_dec[None], self.k, self.residual_threshold,
                          stop_dup=self.stop_on_duplicate_support)[0][0]
        if self.architecture == "gated":
            gate = (s @ self.W_enc + self.b_gate) > 0
            return gate * torch.relu(s @ (self.W_enc * self.r_mag.exp()) + self.b_mag)
        pre = s @ self.W_enc + self.b_enc
        if self.architecture == "topk":
            vals, idx = pre.topk(self.k, dim=-1, sorted=False)
            return torch.zeros_like(pre).scatter_(-1, idx, vals.relu())
        if self.architecture == "abstopk":
            idx = pre.abs().topk(self.k, dim=-1, sorted=False).indices
            return torch.zeros_like(pre).scatter_(-1, idx, pre.gather(-1, idx))
        if self.architecture == "jumprelu":
            return pre.relu() * (pre > self.threshold)
        return pre.relu()

    def decode(self, acts_NL: torch.Tensor) -> torch.Tensor:
        """[N, d_sae] → [N, d_in] reconstruction (a tied matching-pursuit SAE adds b_dec only if it took it off)."""
        if self.architecture == "matching_pursuit" and not self.apply_b_dec_to_input:
            return acts_NL @ self.W_dec
        return acts_NL @ self.W_dec + self.b_dec

    def __call__(self, x_ND: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x_ND))

    def tensors(self) -> dict[str, torch.Tensor]:
        """The SAELens state dict."""
        names = ("W_enc", "W_dec", "b_dec", "b_enc", "threshold", "b_gate", "b_mag", "r_mag")
        return {n: getattr(self, n) for n in names if getattr(self, n) is not None}

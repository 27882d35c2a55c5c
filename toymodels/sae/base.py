"""The SAE interface: a config dataclass, a packed-module base class, and `TrainedSAE` (one inference SAE).

A `PackedSAE` holds K SAEs of one variant and width as tensors with a leading instance dim (W_enc_KDL,
W_dec_KLD, ...). Subclasses implement `loss_terms` (named [K] losses), and optionally `pre_step`/`post_step`
(decoder-norm constraints) and `inference` (the SAELens architecture + tensors computing the same function).
The optimised loss is the sum over K, so each SAE's gradient is exactly what it would get alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from toymodels.config import SEED_RANGE, _is_int, _is_num, _is_seed, check_types
from toymodels.errors import check
from toymodels.seeding import generator

K_ANNEAL_FRAC = 0.5
"""Fraction of training over which k falls from `k_start` to `k`."""
VARIANTS = ("relu", "relu_april", "topk", "batchtopk", "jumprelu", "gated", "matryoshka")
"""Trainable variants; each exports to a SAELens architecture (see `ARCHITECTURE`)."""
ARCHITECTURE = {"relu": "standard", "relu_april": "standard", "topk": "topk", "batchtopk": "jumprelu",
                "jumprelu": "jumprelu", "gated": "gated", "matryoshka": "jumprelu"}
"""SAELens architecture each variant exports as."""


@dataclass
class SAEConfig:
    """One sparse autoencoder: what is trained (the training loop itself is `SAETrainConfig`)."""

    variant: str = "topk"
    """relu (L1, unit-norm decoder), relu_april (L1 weighted by decoder norms, free decoder), topk, batchtopk,
    jumprelu, gated, matryoshka (BatchTopK with nested prefix losses)."""
    d_in: int = 32
    """Input dimension (≥ 1); must match the data."""
    d_sae: int = 64
    """Number of latents L (≥ 1)."""
    k: int = 4
    """TopK / BatchTopK / Matryoshka: active latents per sample (1 ≤ k ≤ d_sae); BatchTopK keeps k·batch
    per batch."""
    k_start: int | None = None
    """topk / batchtopk / matryoshka: if set (≥ k), training starts at this k and lowers it linearly to k over
    the first `K_ANNEAL_FRAC` of training: the slack early lets latents find their features, the exact budget
    late keeps decoder rows from absorbing interference."""
    l1_coeff: float = 1.0
    """relu / relu_april / gated: sparsity penalty coefficient (≥ 0) on (normalised) activations."""
    l1_warmup_frac: float = 0.05
    """Fraction of training over which the L1 / L0 coefficient ramps linearly from 0 (in [0, 1))."""
    l0_coeff: float = 0.5
    """jumprelu: coefficient (≥ 0) of the L0 penalty (expected active latents per sample)."""
    bandwidth: float = 0.3
    """jumprelu: straight-through-estimator rectangle-kernel width ε (> 0), in normalised data units."""
    threshold_init: float = 0.1
    """jumprelu: initial threshold θ (> 0), in normalised data units (the parameter is log θ)."""
    threshold_lr_scale: float = 1.0
    """jumprelu: learning-rate multiplier (> 0) of log θ. Adam moves log θ by about lr per step, so short runs
    need a larger one for the thresholds to leave `threshold_init` (SAEs with different values train in
    different packs)."""
    aux_k: int | None = None
    """topk / batchtopk / matryoshka: latents in the dead-latent aux loss; None → d_in // 2 (≥ 1 if given)."""
    aux_coeff: float = 1 / 32
    """Weight (≥ 0) of the TopK-family aux-k loss (Gao et al. use 1/32)."""
    prefixes: list | None = None
    """matryoshka: increasing prefix sizes ending at d_sae, e.g. [8, 16, 32, 64];
    None → d_sae/8, /4, /2, /1."""
    prefix_weights: list | None = None
    """matryoshka: weight (≥ 0) of each prefix's reconstruction loss, one per prefix; None → all 1 (the plain
    sum, as SAELens). Smaller inner weights trade nesting for less feature hedging in the inner latents
    (Nabeshima's sampled prefix lengths are this, in expectation)."""
    threshold_momentum: float = 0.99
    """batchtopk / matryoshka: EMA momentum (in [0, 1)) of the inference threshold (min kept activation)."""
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
        check(self.variant in VARIANTS, "variant", f"one of {', '.join(VARIANTS)}", self.variant)
        for f in ("d_in", "d_sae"):
            check(_is_int(getattr(self, f)) and getattr(self, f) >= 1, f, "an integer ≥ 1", getattr(self, f))
        check(_is_int(self.k) and 1 <= self.k <= self.d_sae, "k", f"an integer in [1, d_sae={self.d_sae}]",
              self.k)
        check(self.k_start is None or (_is_int(self.k_start) and self.k <= self.k_start <= self.d_sae), "k_start",
              f"null or an integer in [k={self.k}, d_sae={self.d_sae}]", self.k_start)
        for f in ("l1_coeff", "l0_coeff", "aux_coeff"):
            check(_is_num(getattr(self, f)) and getattr(self, f) >= 0, f, "a number ≥ 0", getattr(self, f))
        for f in ("bandwidth", "threshold_init", "threshold_lr_scale", "init_scale"):
            check(_is_num(getattr(self, f)) and getattr(self, f) > 0, f, "a number > 0", getattr(self, f))
        check(_is_num(self.l1_warmup_frac) and 0 <= self.l1_warmup_frac < 1, "l1_warmup_frac", "in [0, 1)",
              self.l1_warmup_frac)
        check(_is_num(self.threshold_momentum) and 0 <= self.threshold_momentum < 1, "threshold_momentum",
              "in [0, 1)", self.threshold_momentum)
        check(self.aux_k is None or (_is_int(self.aux_k) and 1 <= self.aux_k <= self.d_sae), "aux_k",
              f"null or an integer in [1, d_sae={self.d_sae}]", self.aux_k)
        check(self.b_dec_init in ("mean", "zero"), "b_dec_init", "mean or zero", self.b_dec_init)
        check(_is_seed(self.seed), "seed", SEED_RANGE, self.seed)
        check(self.name is None or isinstance(self.name, str), "name", "null or a string", self.name)
        if self.prefixes is not None:
            check(_is_list(self.prefixes), "prefixes", f"null or a list of increasing integers ending at "
                  f"d_sae={self.d_sae}", self.prefixes)
            p = list(self.prefixes)
            ok = (len(p) >= 1 and all(_is_int(v) and v >= 1 for v in p)
                  and all(a < b for a, b in zip(p, p[1:], strict=False)) and p[-1] == self.d_sae)
            check(ok, "prefixes", f"increasing integers ending at d_sae={self.d_sae}", self.prefixes)
        if self.prefix_weights is not None:
            check(_is_list(self.prefix_weights), "prefix_weights", "null or a list of numbers ≥ 0",
                  self.prefix_weights)
            w, n = list(self.prefix_weights), len(self.prefix_sizes)
            check(len(w) == n and all(_is_num(v) and v >= 0 for v in w), "prefix_weights",
                  f"{n} numbers ≥ 0 (one per prefix {self.prefix_sizes})", self.prefix_weights)

    @property
    def group_key(self) -> tuple:
        """SAEs with equal keys are packed into one tensor program."""
        return (self.variant, self.d_in, self.d_sae, tuple(self.prefix_sizes), self.threshold_lr_scale)

    @property
    def prefix_sizes(self) -> list[int]:
        if self.variant != "matryoshka":
            return [self.d_sae]
        if self.prefixes is not None:
            return [int(v) for v in self.prefixes]
        return sorted({max(1, self.d_sae // 2**i) for i in range(4)})  # d_sae/8, /4, /2, d_sae

    @property
    def k_aux(self) -> int:
        return self.aux_k if self.aux_k is not None else max(1, min(self.d_sae, self.d_in // 2))

    @property
    def label(self) -> str:
        return self.name or f"{self.variant}-{self.d_sae}-s{self.seed}"


def _is_list(v) -> bool:
    return isinstance(v, (list, tuple)) or type(v).__name__ == "ListConfig"


class PackedSAE(nn.Module):
    """K SAEs of one variant/width as one module. Shapes: K instances, B batch, D d_in, L d_sae."""

    unit_norm_decoder = True
    """Keep decoder rows unit norm (renormalise after each step, project the row-parallel gradient out)."""
    apply_b_dec_to_input = True

    def __init__(self, cfgs: list[SAEConfig]):
        super().__init__()
        check(len({c.group_key for c in cfgs}) == 1, "configs", "one variant/d_in/d_sae per PackedSAE",
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
        self.register_buffer("k_K", torch.tensor([c.k for c in cfgs]))
        self.coeff = {}  # name -> [K] float tensors of per-SAE coefficients

    def param_groups(self) -> list[dict]:
        """Optimiser parameter groups; a group's `lr_scale` multiplies the scheduled learning rate."""
        return [{"params": list(self.parameters()), "lr_scale": 1.0}]

    @torch.no_grad()
    def schedule(self, frac: float) -> None:
        """Per-step schedules at training fraction `frac` ∈ [0, 1]: the k annealing of `SAEConfig.k_start`."""
        if any(c.k_start is not None for c in self.cfgs):
            left = max(0.0, 1.0 - frac / K_ANNEAL_FRAC)
            self.k_K.copy_(torch.tensor([round(c.k + ((c.k_start or c.k) - c.k) * left) for c in self.cfgs]))

    def per_sae(self, attr: str) -> torch.Tensor:
        """A [K] float tensor of config field `attr`."""
        if attr not in self.coeff:
            self.coeff[attr] = torch.tensor([float(getattr(c, attr)) for c in self.cfgs])
        return self.coeff[attr]

    @staticmethod
    def _init_dec(c: SAEConfig) -> torch.Tensor:
        g = generator(c.seed, "sae-init")  # not manual_seed(seed): a dictionary drawn so would be this W
        W = torch.randn(c.d_sae, c.d_in, generator=g)
        return W / W.norm(dim=1, keepdim=True) * c.init_scale

    def latent_init(self, name: str, i: int) -> float:
        """Initial value of the per-latent ([K, L]) parameter `name` for SAE i (biases start at 0)."""
        return 0.0

    @torch.no_grad()
    def reset_latents(self, i: int, idx: torch.Tensor) -> None:
        """Put SAE i's per-latent parameters (the [K, L] ones) for latents `idx` back to their init (resampling)."""
        for name, p in self.named_parameters():
            if name.endswith("_KL"):
                p[i, idx] = self.latent_init(name, i)

    @torch.no_grad()
    def init_from_data(self, x_BD: torch.Tensor) -> None:
        """Data-dependent init (decoder bias at the batch mean where configured)."""
        for i, c in enumerate(self.cfgs):
            if c.b_dec_init == "mean":
                self.b_dec_KD[i] = x_BD.mean(0)

    def sae_in(self, x_BD: torch.Tensor) -> torch.Tensor:
        """[K, B, D] encoder input (x − b_dec if apply_b_dec_to_input)."""
        return x_BD - self.b_dec_KD[:, None, :] if self.apply_b_dec_to_input else x_BD.expand(self.K, -1, -1)

    def pre_acts(self, x_BD: torch.Tensor) -> torch.Tensor:
        """[K, B, L] encoder pre-activations (x − b_dec) W_enc + b_enc, computed as x W_enc + (b_enc − b_dec W_enc)
        so that the backward pass needs no [B, D] gradient for the shared, grad-free input."""
        bias_KL = self.b_enc_KL
        if self.apply_b_dec_to_input:
            bias_KL = bias_KL - torch.bmm(self.b_dec_KD[:, None, :], self.W_enc_KDL).squeeze(1)
        return torch.baddbmm(bias_KL[:, None, :], x_BD.expand(self.K, -1, -1), self.W_enc_KDL)

    def encode(self, x_BD: torch.Tensor) -> torch.Tensor:
        """[K, B, L] activations (inference form)."""
        raise NotImplementedError

    def decode(self, acts_KBL: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.b_dec_KD[:, None, :], acts_KBL, self.W_dec_KLD)

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
    """Linear warm-up of a [K] coefficient over the first `warmup` fraction of training."""
    return coeff_K * torch.clamp(frac / warmup.clamp_min(1e-12), max=1.0)


@dataclass
class TrainedSAE:
    """One trained SAE in SAELens inference form, in the units of the data it was given (scale folded in).

    encode/decode compute exactly what `sae_lens.SAE.load_from_disk` of its export computes."""

    cfg: SAEConfig
    architecture: str
    """standard, topk, jumprelu or gated."""
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
    """topk architecture: active latents per sample."""
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
        if self.architecture == "gated":
            gate = (s @ self.W_enc + self.b_gate) > 0
            return gate * torch.relu(s @ (self.W_enc * self.r_mag.exp()) + self.b_mag)
        pre = s @ self.W_enc + self.b_enc
        if self.architecture == "topk":
            vals, idx = pre.topk(self.k, dim=-1, sorted=False)
            return torch.zeros_like(pre).scatter_(-1, idx, vals.relu())
        if self.architecture == "jumprelu":
            return pre.relu() * (pre > self.threshold)
        return pre.relu()

    def decode(self, acts_NL: torch.Tensor) -> torch.Tensor:
        """[N, d_sae] → [N, d_in] reconstruction."""
        return acts_NL @ self.W_dec + self.b_dec

    def __call__(self, x_ND: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x_ND))

    def tensors(self) -> dict[str, torch.Tensor]:
        """The SAELens state dict."""
        names = ("W_enc", "W_dec", "b_dec", "b_enc", "threshold", "b_gate", "b_mag", "r_mag")
        return {n: getattr(self, n) for n in names if getattr(self, n) is not None}

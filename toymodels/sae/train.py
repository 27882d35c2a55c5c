"""Train many SAEs at once: configs with the same (variant, d_in, d_sae) are packed into one module with an
instance dim K and all groups see the same stream of data batches (or, with [S, N, D] data, each SAE its own
stream of the same batch indices: `train_saes(..., streams=...)`).

Each SAE's init depends only on its own seed and the data on `SAETrainConfig.seed`, and the objective is a sum
over SAEs of per-SAE losses with an element-wise optimiser, so K at once equals training one by one."""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch

from toymodels.config import SEED_RANGE, _is_int, _is_num, _is_seed, check_types
from toymodels.device import (
    check_device,
    check_precision,
    cpu_fast_paths,
    describe,
    precision_context,
    resolve,
    synchronize,
)
from toymodels.errors import ConfigError, DivergenceError, check
from toymodels.progress import progress
from toymodels.sae.base import PackedSAE, SAEConfig, TrainedSAE
from toymodels.sae.registry import get_variant
from toymodels.sae.resample import resample_dead

TRAINING_REVISION = 3
"""Bumped when a change to the package changes what a given config trains to (2: the L0 controller waits for L0
to come down before it integrates; 3: a zero `l1_warmup_frac` gives the full coefficient from the first step,
where it gave 0 on that step; other configs train as at 2). It is in the benchmark's, the atlas's and
`sae train`'s cache keys, so results of older code are retrained, not reused."""


@dataclass
class SAETrainConfig:
    """How the SAEs are optimised (shared by every SAE trained together)."""

    steps: int = 2000
    """Optimiser steps (≥ 1); fewer if an iterator runs out first."""
    batch_size: int = 1024
    """Samples per step when data is a tensor (≥ 1); an iterator's batches are used as they come."""
    lr: float = 1e-3
    """Peak Adam learning rate (> 0)."""
    betas: tuple = (0.9, 0.999)
    """Adam betas, each in [0, 1)."""
    warmup_steps: int = 0
    """Linear lr warm-up steps (≥ 0, < steps)."""
    decay_frac: float = 0.2
    """Fraction of training at the end over which lr decays linearly to 0 (in [0, 1))."""
    grad_clip: float = 0.0
    """Clip each SAE's gradient (all its parameters together, after the decoder-row projection) to at most this
    norm, in normalised-data units (≥ 0; 0 = off). SAELens's trainer clips at 1 on its raw data."""
    normalize: bool = True
    """Scale the data by one constant so E‖x‖² = d_in while training (folded back into the exported SAE)."""
    dead_after: int = 100_000
    """A latent is dead if it has not fired in the last this many samples (≥ 1); feeds aux losses, stats."""
    resample_every: int = 0
    """Every this many steps (≥ 0; 0 = never) re-initialise dead latents towards badly reconstructed samples
    (`toymodels.sae.resample`), during the first `resample_until` of training."""
    resample_until: float = 0.5
    """Fraction of training (in [0, 1]) after which no more resampling happens, so the last steps settle."""
    resample_min_rate: float = 0.0
    """Also resample latents that fired, since the previous resampling, at under this fraction of their SAE's
    mean latent rate (L0 / d_sae); in [0, 1). 0 = only dead latents. Revives near-dead latents that a feature
    pair shared by one latent leaves behind (planted recovery uses 0.1)."""
    log_every: int = 50
    """Record history every this many steps (≥ 1)."""
    seed: int = 0
    """Seeds the shuffling of tensor data (≥ 0); SAE inits are seeded by each SAEConfig.seed."""
    progress: bool = True
    """Show a progress bar (hidden anyway when stderr is not a terminal or under CI)."""
    device: str = "auto"
    """Where to train: auto (CUDA when present, else CPU; TOYMODELS_DEVICE overrides), cpu, cuda, cuda:N or mps.
    A tensor dataset is copied to the device once; the SAEs come back on the CPU either way."""
    precision: str = "float32"
    """float32 (exact), tf32 (TensorFloat-32 matmuls on CUDA; no effect on CPU) or bf16 (bfloat16 autocast of the
    forward pass; weights and Adam state stay float32). Recorded in each SAE's history."""

    def __post_init__(self):
        check_types(self)
        check_device(self.device)
        check_precision(self.precision)
        for name, lo in (("steps", 1), ("batch_size", 1), ("warmup_steps", 0), ("dead_after", 1), ("resample_every", 0),
                         ("log_every", 1)):
            check(_is_int(getattr(self, name)) and getattr(self, name) >= lo, name, f"an integer ≥ {lo}",
                  getattr(self, name))
        check(_is_seed(self.seed), "seed", SEED_RANGE, self.seed)
        check(_is_num(self.lr) and self.lr > 0, "lr", "a number > 0", self.lr)
        check(_is_num(self.grad_clip) and self.grad_clip >= 0, "grad_clip", "a number ≥ 0 (0 = off)", self.grad_clip)
        check(isinstance(self.betas, (list, tuple)) and len(self.betas) == 2
              and all(_is_num(b) and 0 <= b < 1 for b in self.betas), "betas",
              "two numbers in [0, 1)", self.betas)
        check(_is_num(self.resample_until) and 0 <= self.resample_until <= 1, "resample_until", "in [0, 1]",
              self.resample_until)
        check(_is_num(self.resample_min_rate) and 0 <= self.resample_min_rate < 1, "resample_min_rate",
              "in [0, 1)", self.resample_min_rate)
        check(self.warmup_steps < self.steps, "warmup_steps", f"< steps={self.steps}", self.warmup_steps)
        check(_is_num(self.decay_frac) and 0 <= self.decay_frac < 1, "decay_frac", "in [0, 1)",
              self.decay_frac)
        for name in ("normalize", "progress"):
            check(isinstance(getattr(self, name), bool), name, "true or false", getattr(self, name))


def lr_factor(step: int, tc: SAETrainConfig) -> float:
    """Multiplier of tc.lr at `step`: linear warm-up, constant, linear decay to 0 over the last decay_frac."""
    if step < tc.warmup_steps:
        return (step + 1) / tc.warmup_steps
    decay_start = tc.steps * (1 - tc.decay_frac)
    if tc.decay_frac > 0 and step >= decay_start:
        return max(0.0, (tc.steps - step) / (tc.steps - decay_start))
    return 1.0


@torch.no_grad()
def clip_grad_per_sae(m: PackedSAE, max_norm: float) -> None:
    """Scale each SAE's gradient down to norm ≤ `max_norm` (every parameter has the leading K dim), so a packed SAE
    is clipped as it would be alone."""
    grads = [p.grad for p in m.parameters() if p.grad is not None]
    norm_K = torch.stack([g.reshape(m.K, -1).pow(2).sum(1) for g in grads]).sum(0).sqrt()
    scale_K = (max_norm / (norm_K + 1e-6)).clamp(max=1.0)
    if bool((scale_K == 1).all()):  # no SAE over the limit: nothing to scale
        return
    for g in grads:
        g.mul_(scale_K.view(-1, *[1] * (g.ndim - 1)))


def batches(data, tc: SAETrainConfig, device: torch.device | None = None) -> Iterator[torch.Tensor]:
    """Reshuffled epochs of a [N, D] tensor (seeded; on its own device), or the batches of an iterator, as float32
    [B, D] (moved to `device` if given); a [S, N, D] tensor of S streams gives [S, B, D] batches (the same sample
    indices in every stream)."""
    if isinstance(data, torch.Tensor):
        g = torch.Generator().manual_seed(tc.seed)  # the same shuffles on every device
        n = data.shape[-2]
        bs = min(tc.batch_size, n)
        while True:
            perm = torch.randperm(n, generator=g, device="cpu")
            perm = perm if data.device.type == "cpu" else perm.to(data.device)
            for i in range(0, n - bs + 1, bs):
                yield data.index_select(data.ndim - 2, perm[i:i + bs]).float()
    else:
        for j, x in enumerate(data):
            if not isinstance(x, torch.Tensor) or x.ndim != 2 or not x.is_floating_point():
                raise ConfigError(f"data: batch {j} must be a 2-D float tensor [batch, d_in], got "
                                  f"{type(x).__name__} {tuple(getattr(x, 'shape', ()))}")
            yield x.float() if device is None else x.to(device, torch.float32, non_blocking=True)


def _check_data(data, cfgs: list[SAEConfig], streams) -> None:
    check(len(cfgs) >= 1, "configs", "a non-empty list of SAEConfig", cfgs)
    d_ins = {c.d_in for c in cfgs}
    check(len(d_ins) == 1, "d_in", "the same for every SAE trained on one data stream", sorted(d_ins))
    if streams is not None:
        check(isinstance(data, torch.Tensor) and data.ndim == 3, "streams", "given only with [S, N, D] data",
              streams)
    if isinstance(data, torch.Tensor):
        check(data.ndim in (2, 3) and data.is_floating_point(), "data",
              "a 2-D float tensor [n_samples, d_in] (or 3-D [streams, n_samples, d_in])",
              f"{data.dtype} of shape {tuple(data.shape)}")
        check(data.shape[-2] >= 1 and data.shape[0] >= 1, "data", "non-empty", tuple(data.shape))
        check(data.shape[-1] == cfgs[0].d_in, "d_in", f"equal to the data's width {data.shape[-1]}",
              cfgs[0].d_in)
        check(bool(torch.isfinite(data).all()), "data", "finite (no NaN/inf)", None)
    elif not isinstance(data, Iterable):
        raise ConfigError(f"data: must be a 2-D tensor or an iterator of [batch, d_in] tensors, got "
                          f"{type(data).__name__}")


def pack(cfgs: list[SAEConfig]) -> PackedSAE:
    """One packed module holding `cfgs` (one variant and pack key)."""
    return get_variant(cfgs[0].variant).module(cfgs)


def train_saes(configs: list[SAEConfig], data, tc: SAETrainConfig | None = None,
               streams: list[int] | None = None) -> list[TrainedSAE]:
    """Train every SAE in `configs` on the same batches; return them (in order) in SAELens inference form, on the
    CPU, whatever `tc.device` they trained on.

    Several datasets at once: `data` [S, N, D] holds S streams of equal size and SAE i trains on stream
    `streams[i]` (default: stream i, one per SAE); each stream is normalised on its own, and SAEs of one
    variant and width still pack into one module whatever their streams, so an SAE trained with others equals
    the same SAE trained alone on its stream's [N, D]."""
    tc = tc or SAETrainConfig()
    dev = resolve(tc.device)
    if cpu_fast_paths(dev):
        return _train_saes(configs, data, tc, dev, streams)
    # off the CPU, tensors the variants create default to the device (inits stay CPU-seeded, then move)
    with dev:
        return _train_saes(configs, data, tc, dev, streams)


def _train_saes(configs, data, tc: SAETrainConfig, dev: torch.device, streams) -> list[TrainedSAE]:
    from toymodels.budget import check_memory, sae_bytes

    on_cpu = cpu_fast_paths(dev)
    configs = list(configs)
    _check_data(data, configs, streams)
    multi = isinstance(data, torch.Tensor) and data.ndim == 3
    if multi:
        S = data.shape[0]
        if streams is None:
            check(len(configs) == S, "streams", f"given when the data's {S} streams are not one per SAE "
                  f"({len(configs)})", None)
            streams = list(range(S))
        check(len(streams) == len(configs) and all(_is_int(s) and 0 <= s < S for s in streams), "streams",
              f"one stream index in [0, {S}) per SAE", streams)
    check_memory(sae_bytes([(c.d_sae, c.d_in) for c in configs], tc.batch_size),
                 f"SAE training ({len(configs)} SAE(s), widths up to {max(c.d_sae for c in configs)}, "
                 f"batch {tc.batch_size})")
    if isinstance(data, torch.Tensor) and data.device != dev:
        data = data.to(dev)  # once: the hot loop then never leaves the device
    stream = batches(data, tc, None if on_cpu else dev)
    first = next(stream, None)
    if first is None:
        raise ConfigError("data: the iterator yielded no batches")
    D = configs[0].d_in
    check(first.shape[-1] == D, "d_in", f"equal to the data's width {first.shape[-1]}", D)
    scales = [1.0] * (data.shape[0] if multi else 1)  # one per stream
    if tc.normalize:
        n = data.shape[-2] if isinstance(data, torch.Tensor) else len(first)
        sample = data[..., :min(n, 65536), :].float() if isinstance(data, torch.Tensor) else first
        ms = sample.pow(2).sum(-1).mean(-1).reshape(-1).tolist()
        check(all(v > 0 and math.isfinite(v) for v in ms), "data",
              "not all zero (normalize needs E‖x‖² > 0)" + (" in every stream" if multi else ""), None)
        scales = [math.sqrt(D / v) for v in ms]
    scale = torch.tensor(scales)[:, None, None] if multi else scales[0]

    for i, c in enumerate(configs):
        check(isinstance(c, SAEConfig) and c.variant, f"configs[{i}]", "a registered variant's SAEConfig", c)
    groups = {configs[idx[0]].group_key: idx for idx in pack_indices(configs)}
    mods: dict[tuple, PackedSAE] = {key: pack([configs[i] for i in idx]).to(dev) for key, idx in groups.items()}
    pick = {key: _stream_index([streams[i] for i in idx]) if multi else None for key, idx in groups.items()}
    for key, m in mods.items():
        m.init_from_data(_select(first * scale, pick[key]))
        m.post_step()
    opts = {key: torch.optim.Adam(m.param_groups(), lr=tc.lr, betas=tuple(tc.betas), fused=True)  # element-wise
            for key, m in mods.items()}
    params = {key: [p for g in opt.param_groups for p in g["params"]] for key, opt in opts.items()}
    since = {key: torch.zeros(m.K, m.L, device=dev) for key, m in mods.items()}  # samples since each last fired
    fires = {key: torch.zeros(m.K, m.L, device=dev) for key, m in mods.items()}  # firings since the last resampling
    hist = [dict(step=[], loss=[], mse=[], L0=[], dead_frac=[]) for _ in configs]
    acc = {key: None for key in mods}
    t0 = time.perf_counter()

    x, step = first, 0
    bar = progress(total=tc.steps, desc="SAEs", enabled=None if tc.progress else False)
    while x is not None and step < tc.steps:
        x_all = x * scale
        frac = step / tc.steps
        for key, m in mods.items():
            x = _select(x_all, pick[key])  # [B, D], or [K, B, D] for a pack of SAEs on different streams
            m.dead_KL = since[key] >= tc.dead_after
            m.schedule(frac)
            lr_f = lr_factor(step, tc)
            for pg in opts[key].param_groups:
                pg["lr"] = tc.lr * lr_f * pg["lr_scale"]
            with precision_context(tc.precision, dev):
                losses, fired_KL = m.loss_terms(x, frac)
            loss_K = sum(losses.values())
            if not bool(torch.isfinite(loss_K).all()):
                bad = [m.cfgs[i].label for i in torch.nonzero(~torch.isfinite(loss_K)).flatten().tolist()]
                raise DivergenceError(f"SAE {', '.join(bad)}: non-finite loss at step {step} "
                                      f"(try a lower lr or check the data)")
            for p in params[key]:  # opt.zero_grad(set_to_none=True) without its profiler/hook overhead
                p.grad = None
            loss_K.sum().backward()
            m.pre_step()
            if tc.grad_clip:
                clip_grad_per_sae(m, tc.grad_clip)
            opts[key].step()
            m.post_step()
            with torch.no_grad():
                l0_K = fired_KL.sum(-1) / x.shape[-2]
                m.after_step(l0_K, frac, lr_f)
                since[key].add_(x.shape[-2]).masked_fill_(fired_KL > 0, 0)  # samples are integers: exact in float
                if tc.resample_min_rate:
                    fires[key] += fired_KL
                if tc.resample_every and (step + 1) % tc.resample_every == 0 and frac < tc.resample_until:
                    dead_KL = since[key] >= tc.dead_after
                    if tc.resample_min_rate:  # firing rate relative to the SAE's mean latent rate
                        dead_KL |= fires[key] < tc.resample_min_rate * fires[key].mean(-1, keepdim=True)
                    resample_dead(m, dead_KL, x, opts[key])
                    since[key][dead_KL] = 0
                    fires[key].zero_()
                row = torch.stack([loss_K.detach(), losses["mse"].detach(), l0_K,
                                   (since[key] >= tc.dead_after).float().mean(-1)], -1)  # [K, 4]
                acc[key] = row if acc[key] is None else acc[key] + row
                if (step + 1) % tc.log_every == 0 or step + 1 == tc.steps:
                    n = (step % tc.log_every) + 1
                    for j, i in enumerate(groups[key]):
                        h = hist[i]
                        h["step"].append(step + 1)
                        for col, name in enumerate(("loss", "mse", "L0", "dead_frac")):
                            h[name].append(float(acc[key][j, col]) / (n if name != "dead_frac" else n))
                    acc[key] = None
        step += 1
        bar.update(1)
        x = next(stream, None)
    bar.close()
    if not on_cpu:
        synchronize(dev)
    seconds = time.perf_counter() - t0

    out: list[TrainedSAE | None] = [None] * len(configs)
    for key, m in mods.items():
        m.eval()
        for j, i in enumerate(groups[key]):
            arch, t, extra = m.inference(j)
            if not on_cpu:  # results live on the CPU
                t = {name: v.cpu() for name, v in t.items()}
                extra = {name: v.cpu() if isinstance(v, torch.Tensor) else v for name, v in extra.items()}
            s_i = scales[streams[i]] if multi else scale
            hist[i].update(steps_done=step, seconds=seconds, scale=s_i, device=describe(dev),
                           precision=tc.precision, **m.summary(j))
            out[i] = fold_scale(configs[i], arch, t, extra, s_i, m.apply_b_dec_to_input, hist[i])
    return out


def _stream_index(streams: list[int]) -> int | torch.Tensor:
    """A pack's streams: one int if all its SAEs share a stream (the batch stays [B, D]), else a [K] index."""
    return streams[0] if len(set(streams)) == 1 else torch.tensor(streams)


def _select(x, pick):
    """The pack's view of a batch: x itself (one stream), stream `pick` [B, D], or streams `pick` [K, B, D]."""
    if pick is None:
        return x
    return x[pick] if isinstance(pick, int) else x.index_select(0, pick)


def fold_scale(cfg, arch, t, extra, scale, apply_b_dec, history) -> TrainedSAE:
    """Tensors of an SAE trained on x·scale → an SAE on raw x, activations in raw units (W's unchanged)."""
    for name in ("b_enc", "b_dec", "threshold", "b_gate", "b_mag"):
        if name in t:
            t[name] = t[name] / scale
    more = ({"residual_threshold": extra["residual_threshold"] / scale,
             "stop_on_duplicate_support": extra.get("stop_on_duplicate_support", True)}
            if "residual_threshold" in extra else {})
    return TrainedSAE(cfg=cfg, architecture=arch, apply_b_dec_to_input=apply_b_dec, k=extra.get("k"),
                      scale=scale, history=history, **more, **t)


def pack_indices(configs: list[SAEConfig]) -> list[list[int]]:
    """Indices of `configs` grouped the way `train_saes` packs them (first-appearance order)."""
    groups: dict[tuple, list[int]] = {}
    for i, c in enumerate(configs):
        groups.setdefault(c.group_key, []).append(i)
    return list(groups.values())


def train_in_packs(configs: list[SAEConfig], data, tc: SAETrainConfig, resume, finish) -> tuple[list, int]:
    """Train `configs` one pack at a time, so a killed run keeps its finished packs. `resume(idx)` returns the
    items (one per config index) of a pack finished earlier, or None; `finish(idx, saes)` persists a freshly
    trained pack and returns its items. Packs never interact and all see the same batches, so the result
    equals one `train_saes` call. Returns (items in config order, number of packs resumed)."""
    from toymodels.outdir import fault_point

    items: list = [None] * len(configs)
    resumed = 0
    for idx in pack_indices(configs):
        got = resume(idx)
        if got is None:
            got = finish(idx, train_saes([configs[i] for i in idx], data, tc))
            fault_point("pack")
        else:
            resumed += 1
        for i, item in zip(idx, got, strict=True):
            items[i] = item
    return items, resumed

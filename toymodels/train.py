"""The one training loop: every instance × restart of a `ToyConfig` trains at once as one tensor program.

Loss per instance: importance-weighted MSE, mean over batch and features; the optimised loss is the sum over
instances, so each instance's gradient is exactly what it would be alone.

Zero rows in closed form: a sample with no active feature has x = 0, and every model maps it to the same
output (the instance's "x = 0 response"). The sparse sampler materialises only non-zero rows, and the loss
adds n_zero × (loss of the zero row), which is exact, not an approximation.

Fast path (tied models, `TrainConfig.backward="auto"`): batch-last data from `FastSampler`, hand-derived
gradients from `TiedGrad`, torch's fused AdamW kernel called directly; `backward="autograd"` is the plain
loop.
Per-step losses are checked for NaN/inf every min(log_every, 64) steps; errors still name the exact step.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import pandas as pd
import torch

from toymodels import analysis
from toymodels.config import ToyConfig, TrainConfig
from toymodels.device import cpu_fast_paths, describe, resolve, synchronize
from toymodels.elementsparse import ActiveGrad, ActiveSampler, use_active
from toymodels.errors import DivergenceError, check
from toymodels.features import FastSampler, nonzero_row_prob, sample_dense, sample_sparse
from toymodels.models import TiedGrad, TiedModel, ToyModel, build_model
from toymodels.progress import progress


@dataclass
class TrainResult:
    """What training returns. Instance index i follows the config's [instance] order."""

    config: ToyConfig
    train: TrainConfig
    model: ToyModel
    """The kept (lowest eval loss) restart of every instance."""
    final_loss: torch.Tensor
    """[I] eval loss of the kept restart (NaN if every restart diverged)."""
    restart_loss: torch.Tensor
    """[I, R] eval loss of every restart (NaN where it diverged)."""
    best_restart: torch.Tensor
    """[I] index of the kept restart."""
    history_steps: torch.Tensor
    """[T] steps at which loss_history was recorded."""
    loss_history: torch.Tensor
    """[T, I, R] training loss, mean over the preceding log_every steps."""
    snapshot_steps: torch.Tensor | None = None
    """[S] steps of the weight snapshots (if snapshot_every > 0)."""
    snapshots: torch.Tensor | None = None
    """[S, I, F, H] feature weights of the kept restart at each snapshot step."""
    seconds: float = 0.0
    """Wall time of training."""
    meta: dict = field(default_factory=dict)
    """How the batch was run (sampler used, model-steps/s); recorded with saved results."""
    dataset: list[torch.Tensor] | None = None
    """Fixed-dataset training (`TrainConfig.dataset_size`): per instance, its [T_i, F] training samples."""
    dataset_loss: torch.Tensor | None = None
    """[I] loss of the kept restart on its own training set (fixed-dataset training), else None."""

    @property
    def W(self) -> torch.Tensor:
        """W_IFH of the kept restarts."""
        return self.model.feature_weights()

    def summary(self) -> pd.DataFrame:
        """Tidy per-(instance, feature) table: density, importance, norm, interference, D_i, phase, loss."""
        return analysis.feature_table(self.W, self.config, self.final_loss)


def lr_at(step: int, tc: TrainConfig) -> float:
    """Learning rate at `step` (0-based) for the configured schedule."""
    if step < tc.warmup_steps:
        return tc.lr * (step + 1) / tc.warmup_steps
    if tc.schedule == "constant":
        return tc.lr
    t = (step - tc.warmup_steps) / max(1, tc.steps - tc.warmup_steps)
    return tc.lr * (tc.min_lr_frac + (1 - tc.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * t)))


def use_sparse(cfg: ToyConfig, p_IF: torch.Tensor, batch: int, mode: str) -> bool:
    """Sparse sampling pays when even the busiest instance has well under half its rows non-zero."""
    if cfg.structure != "independent" or mode == "never":
        return False
    if mode == "always":
        return True
    q = float(nonzero_row_prob(p_IF).max())
    return batch * q + 4 * math.sqrt(batch * q * (1 - q)) < 0.5 * batch


class Batcher:
    """Draws training batches for one config: dense, or sparse (non-zero rows + a count of zero rows)."""

    def __init__(self, cfg: ToyConfig, p_IF: torch.Tensor, batch: int, sparse: bool, gen: torch.Generator):
        self.cfg, self.p_IF, self.batch, self.sparse, self.gen = cfg, p_IF, batch, sparse, gen

    def __call__(self) -> tuple[torch.Tensor, int]:
        if self.sparse:
            x, n_zero = sample_sparse(self.cfg, self.p_IF, self.batch, self.gen)
        else:
            x, n_zero = sample_dense(self.cfg, self.p_IF, self.batch, self.gen), 0
        return (unit_norm(x) if self.cfg.normalize else x), n_zero


def unit_norm(x_IBF: torch.Tensor) -> torch.Tensor:
    """Every non-zero sample scaled to unit L2 norm (zero samples stay zero)."""
    return x_IBF / x_IBF.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def dataset_sizes(tc: TrainConfig, n_instances: int) -> list[int] | None:
    """`tc.dataset_size` as one T per instance (None: fresh batches every step)."""
    if tc.dataset_size is None:
        return None
    sizes = [int(v) for v in torch.tensor(tc.dataset_size).reshape(-1).tolist()]
    check(len(sizes) in (1, n_instances), "dataset_size", f"one integer or {n_instances} (one per instance)",
          tc.dataset_size)
    return sizes * n_instances if len(sizes) == 1 else sizes


def batch_loss(model: ToyModel, x_IBF: torch.Tensor, n_zero: int, imp_IF: torch.Tensor, batch: int):
    """[I] importance-weighted MSE over `batch` samples: the rows of x plus `n_zero` implied all-zero rows."""
    err_IBF = (model(x_IBF) - model.target(x_IBF)).square()
    total_I = torch.einsum("ibf,if->i", err_IBF, imp_IF)
    if n_zero:
        out0_IF = model(x_IBF.new_zeros(x_IBF.shape[0], 1, x_IBF.shape[2]))[:, 0]  # target of x = 0 is 0
        total_I = total_I + n_zero * (out0_IF.square() * imp_IF).sum(-1)
    return total_I / (batch * x_IBF.shape[2])


def train(cfg: ToyConfig, tc: TrainConfig | None = None) -> TrainResult:
    """Train every instance of `cfg` (× `tc.restarts`) at once; keep each instance's best restart."""
    from toymodels.budget import check_memory, train_bytes

    tc = tc or TrainConfig()
    dev = resolve(tc.device)
    on_cpu = cpu_fast_paths(dev)
    I, R, F = cfg.instances, tc.restarts, cfg.n_features
    exact_ok = (cfg.model == "relu_output" and cfg.structure == "independent" and cfg.magnitude_law == "uniform"
                and F <= 3)
    check(tc.eval_mode == "sampled" or exact_ok, "eval_mode",
          "sampled here (exact needs model relu_output with ≤ 3 independent uniform features)", tc.eval_mode)
    H = cfg.n_hidden * (2 if cfg.model == "abs_value" else 1)
    check_memory(train_bytes(I * R, F, H, tc.batch_size, I=I, steps=tc.steps, log_every=tc.log_every,
                             snapshot_every=tc.snapshot_every),
                 f"train ({I} instance(s) × {R} restart(s) of {F} features → {cfg.n_hidden}, batch {tc.batch_size})")
    p_IF = torch.tensor(cfg.density_array(), dtype=torch.float32, device=dev)
    imp_IF = torch.tensor(cfg.importance_array(), dtype=torch.float32, device=dev)
    p_KF, imp_KF = p_IF.repeat_interleave(R, 0), imp_IF.repeat_interleave(R, 0)  # K = I·R, k = i·R + r
    gen = torch.Generator().manual_seed(tc.seed)
    model = build_model(cfg, I * R, gen).to(dev)  # the same init on every device
    # off the CPU, data comes from a generator on the device (the CPU keeps one stream for init and data)
    gen = gen if on_cpu else torch.Generator(device=dev).manual_seed(tc.seed)
    if tc.init_scale != 1.0:
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name != "b":
                    p.mul_(tc.init_scale)
    sparse = use_sparse(cfg, p_KF, tc.batch_size, sparse_mode(tc, dev))
    sizes = dataset_sizes(tc, I)
    fast = (tc.backward == "auto" and isinstance(model, TiedModel) and sizes is None and not cfg.normalize
            and cfg.hidden_bias is None and on_cpu)
    if sizes is not None:
        fixed = _DatasetStep(cfg, model, p_IF, imp_KF, sizes, R, tc, gen)
        fast_data = tc.backward == "auto" and isinstance(model, TiedModel) and cfg.hidden_bias is None and on_cpu
        step_fn = _FastDatasetStep(fixed, cfg, model, p_KF, imp_KF, tc, gen) if fast_data else fixed
    elif fast:
        step_fn = _FastStep(cfg, model, p_KF, imp_KF, sparse, tc, gen)
    else:
        step_fn = _AutogradStep(model, Batcher(cfg, p_KF, tc.batch_size, sparse, gen), imp_KF, tc)

    hist, hist_steps, window = [], [], torch.zeros(I * R, device=dev)
    snaps, snap_steps, window_seconds = [], [], []
    diverged = torch.zeros(I * R, dtype=torch.bool, device=dev)
    chunk = min(tc.log_every, 64)  # losses are checked for NaN/inf every `chunk` steps, naming the exact step
    loss_TK, filled = torch.zeros(chunk, I * R, device=dev), 0
    t0 = t_window = time.perf_counter()
    for step in progress(range(tc.steps), desc=f"train {cfg.model} {F}→{cfg.n_hidden} ×{I * R}",
                         enabled=None if tc.progress else False):
        step_fn(lr_at(step, tc), loss_TK[filled])
        filled += 1
        end_of_log = (step + 1) % tc.log_every == 0 or step + 1 == tc.steps
        if filled == chunk or end_of_log:
            losses = loss_TK[:filled]
            bad_TK = ~torch.isfinite(losses)
            if bad_TK.any():
                for t in range(filled):
                    _on_divergence(bad_TK[t] & ~diverged, step - filled + 1 + t, R, tc)
                    diverged |= bad_TK[t]
            window += torch.nan_to_num(losses, nan=0.0, posinf=0.0).sum(0)
            filled = 0
        if end_of_log:
            n = (step % tc.log_every) + 1
            hist.append(torch.where(diverged, torch.nan, window / n))
            hist_steps.append(step + 1)
            window.zero_()
            if not on_cpu:
                synchronize(dev)
            window_seconds.append(time.perf_counter() - t_window)
            t_window = time.perf_counter()
        if tc.snapshot_every and (step % tc.snapshot_every == 0 or step + 1 == tc.steps):
            snaps.append(model.feature_weights().clone())
            snap_steps.append(step + 1 if step + 1 == tc.steps else step)
    if not on_cpu:
        synchronize(dev)
    seconds = time.perf_counter() - t0

    eval_K = evaluate(model, cfg, p_IF, imp_IF, tc, R) if tc.eval_mode == "sampled" else exact_loss(model, p_IF,
                                                                                                        imp_IF, R)
    # e.g. weights that overflow only at eval
    _on_divergence(~torch.isfinite(eval_K) & ~diverged, tc.steps, R, tc)
    diverged |= ~torch.isfinite(eval_K)
    restart_loss = eval_K.masked_fill(diverged, torch.nan).view(I, R)
    data_loss = step_fn.loss().masked_fill(diverged, torch.nan).view(I, R) if sizes is not None else None
    # restarts are picked on the loss they were trained on: fresh samples, or their own training set
    pick = restart_loss if data_loss is None else data_loss
    best = torch.nan_to_num(pick, nan=torch.inf).argmin(1)
    keep = torch.arange(I, device=dev) * R + best
    cpu = (lambda t: t) if on_cpu else (lambda t: None if t is None else t.cpu())  # results live on the CPU
    return TrainResult(
        config=cfg, train=tc, model=model.select(keep).cpu(),
        final_loss=cpu(restart_loss.gather(1, best[:, None])[:, 0]), restart_loss=cpu(restart_loss),
        best_restart=cpu(best),
        history_steps=torch.tensor(hist_steps), loss_history=cpu(torch.stack(hist).view(-1, I, R)),
        snapshot_steps=torch.tensor(snap_steps) if snaps else None,
        snapshots=cpu(torch.stack(snaps)[:, keep]) if snaps else None,
        seconds=seconds,
        meta={"sampler": getattr(step_fn, "sampler", None) or ("sparse" if sparse else "dense"),
              "backward": "manual" if isinstance(step_fn, _FastStep) else "autograd",
              "model_steps_per_s": I * R * tc.steps / seconds,
              "window_seconds": window_seconds,  # wall time of each log_every window (for benchmarks)
              "device": describe(dev)},
        dataset=[cpu(x) for x in step_fn.dataset] if sizes is not None else None,
        dataset_loss=cpu(data_loss.gather(1, best[:, None])[:, 0]) if data_loss is not None else None,
    )


def sparse_mode(tc: TrainConfig, dev: torch.device) -> str:
    """`tc.sparse_sampling`, except that off the CPU auto means dense (a sparse batch's row count would cost a
    device-to-host sync every step)."""
    return tc.sparse_sampling if cpu_fast_paths(dev) or tc.sparse_sampling == "always" else "never"


@torch.no_grad()
def evaluate(model: ToyModel, cfg: ToyConfig, p_IF, imp_IF, tc: TrainConfig, R: int) -> torch.Tensor:
    """[I·R] loss on `eval_batches` fresh batches; all restarts of an instance see the same samples."""
    gen = torch.Generator(device=p_IF.device).manual_seed(tc.seed + 1_000_003)
    sparse = use_sparse(cfg, p_IF, tc.batch_size, sparse_mode(tc, p_IF.device))
    draw = Batcher(cfg, p_IF, tc.batch_size, sparse, gen)
    total = torch.zeros(p_IF.shape[0] * R, device=p_IF.device)
    for _ in range(tc.eval_batches):
        x, n_zero = draw()
        imp_KF = imp_IF.repeat_interleave(R, 0)
        total += batch_loss(model, x.repeat_interleave(R, 0), n_zero, imp_KF, tc.batch_size)
    return total / tc.eval_batches


@torch.no_grad()
def exact_loss(model: ToyModel, p_IF: torch.Tensor, imp_IF: torch.Tensor, R: int) -> torch.Tensor:
    """[I·R] closed-form expected loss of every restart (relu_output, ≤ 3 independent U[0,1] features)."""
    from toymodels.theory import expected_loss

    W_KFH, b_KF = model.feature_weights().double().cpu().numpy(), model.b.detach().double().cpu().numpy()
    p_KF, imp_KF = (t.repeat_interleave(R, 0).double().cpu().numpy() for t in (p_IF, imp_IF))
    return torch.from_numpy(expected_loss(W_KFH, b_KF, p_KF, imp_KF)).float().to(p_IF.device)


class _AutogradStep:
    """One plain step: sample x_IBF, autograd through `batch_loss`, torch AdamW."""

    def __init__(self, model: ToyModel, draw: Batcher, imp_KF: torch.Tensor, tc: TrainConfig):
        self.model, self.draw, self.imp_KF, self.batch = model, draw, imp_KF, tc.batch_size
        self.opt, self.wd = _adamw(model, tc), tc.weight_decay

    def batch_loss(self) -> torch.Tensor:
        x, n_zero = self.draw()
        return batch_loss(self.model, x, n_zero, self.imp_KF, self.batch)

    def __call__(self, lr: float, loss_out_K: torch.Tensor) -> None:
        for group in self.opt.param_groups:
            group["lr"] = lr
        loss_K = self.batch_loss()
        self.opt.zero_grad(set_to_none=True)
        loss_K.sum().backward()
        if self.wd < 0:  # torch.optim.AdamW refuses negative decay: apply AdamW's decoupled p ← p(1 − lr·wd) here
            with torch.no_grad():
                torch._foreach_mul_(list(self.model.parameters()), 1 - lr * self.wd)
        self.opt.step()
        loss_out_K.copy_(loss_K.detach())


class _DatasetStep(_AutogradStep):
    """Full-batch steps on a fixed dataset per instance.

    Instances are grouped into chunks whose sizes T lie within a factor 4 of each other; each chunk is one
    tensor [C, T_max, F], padded with zero rows of weight 0 (a sample's weight is 1/T of its instance).
    """

    def __init__(self, cfg: ToyConfig, model: ToyModel, p_IF: torch.Tensor, imp_KF: torch.Tensor,
                 sizes: list[int], R: int, tc: TrainConfig, gen: torch.Generator):
        super().__init__(model, None, imp_KF, tc)
        x_ITF = sample_dense(cfg, p_IF, max(sizes), gen)  # every instance draws max(T); keeps its first T
        x_ITF = unit_norm(x_ITF) if cfg.normalize else x_ITF
        self.dataset = [x_ITF[i, :T].clone() for i, T in enumerate(sizes)]  # [I] × [T_i, F]
        groups: list[list[int]] = []
        for i in sorted(range(len(sizes)), key=lambda i: sizes[i]):
            if groups and sizes[i] <= 4 * sizes[groups[-1][0]]:
                groups[-1].append(i)
            else:
                groups.append([i])
        self.chunks = []  # (K indices, x_CTF, w_CT): each instance's rows repeated per restart
        for grp in groups:
            grp.sort()  # instance order within a chunk (one chunk holding everything is the model's own order)
            T, dev = max(sizes[i] for i in grp), x_ITF.device
            idx_I = torch.tensor(grp, device=dev)
            w_IT = (torch.arange(T, device=dev) < torch.tensor([sizes[i] for i in grp], device=dev)[:, None]).float()
            w_IT /= w_IT.sum(1, keepdim=True)
            idx_K = (idx_I[:, None] * R + torch.arange(R, device=dev)).reshape(-1)
            x = (x_ITF[idx_I, :T] * (w_IT > 0)[..., None]).repeat_interleave(R, 0)
            self.chunks.append((idx_K, x, w_IT.repeat_interleave(R, 0)))

    def batch_loss(self) -> torch.Tensor:
        """[K] mean loss of every instance × restart on its own training set."""
        params = dict(self.model.named_parameters())
        loss_K = torch.zeros(self.imp_KF.shape[0], device=self.imp_KF.device)
        for idx_K, x_CTF, w_CT in self.chunks:
            whole = len(self.chunks) == 1
            out = self.model(x_CTF) if whole else torch.func.functional_call(
                self.model, {k: p[idx_K] for k, p in params.items()}, (x_CTF,))
            err_CTF = (out - self.model.target(x_CTF)).square()
            loss_C = torch.einsum("ctf,ct,cf->c", err_CTF, w_CT, self.imp_KF[idx_K]) / x_CTF.shape[2]
            loss_K = loss_C if whole else loss_K.index_put((idx_K,), loss_C)
        return loss_K

    @torch.no_grad()
    def loss(self) -> torch.Tensor:
        """[K] training-set loss of the current weights."""
        return self.batch_loss()


class _FastStep:
    """One fast step: `FastSampler` batch, hand-derived gradients (`TiedGrad`), AdamW on preallocated state.

    AdamW is torch's own fused kernel called directly (the update of torch.optim.AdamW(fused=True) without its
    per-step Python bookkeeping); where that kernel is missing, torch.optim.AdamW runs on the same gradients.
    """

    def __init__(self, cfg, model: TiedModel, p_KF, imp_KF, sparse: bool, tc: TrainConfig, gen):
        active = use_active(cfg, p_KF, tc.sparse_sampling, sparse)  # wide sparse models: element-sparse kernel
        self.sampler = "active" if active else None
        self.draw = (ActiveSampler(p_KF, tc.batch_size, tc.seed) if active
                     else FastSampler(cfg, p_KF, tc.batch_size, sparse, tc.seed, gen))
        self.grad = (ActiveGrad if active else TiedGrad)(model, imp_KF, tc.batch_size)
        self.params = [model.W, model.b]
        self.wd = tc.weight_decay
        self.fused = hasattr(torch, "_fused_adamw_")
        if self.fused:
            self.m = [torch.zeros_like(p) for p in self.params]
            self.v = [torch.zeros_like(p) for p in self.params]
            self.t = [torch.zeros(()) for _ in self.params]
        else:
            for p, g in zip(self.params, self.grad.grads, strict=True):
                p.grad = g
            self.opt = torch.optim.AdamW(self.params, lr=tc.lr, weight_decay=tc.weight_decay)

    @torch.no_grad()
    def __call__(self, lr: float, loss_out_K: torch.Tensor) -> None:
        self.grad.begin()
        for sl, xn, n_zero in self.draw():
            self.grad(xn, n_zero, loss_out_K, sl)
        self.grad.end()
        if self.fused:
            torch._foreach_add_(self.t, 1.0)
            torch._fused_adamw_(self.params, self.grad.grads, self.m, self.v, [], self.t, lr=lr, beta1=0.9,
                                beta2=0.999, weight_decay=self.wd, eps=1e-8, amsgrad=False, maximize=False)
        else:
            self.opt.param_groups[0]["lr"] = lr
            self.opt.step()


class _FastDatasetStep(_FastStep):
    """Fixed-dataset steps on the fast path: each instance's restarts (a contiguous slice of K) take their own
    T samples, batch-last, through `TiedGrad` (importance scaled by 1/T so each instance's loss is its mean)."""

    def __init__(self, fixed: _DatasetStep, cfg, model: TiedModel, p_KF, imp_KF, tc: TrainConfig, gen):
        super().__init__(cfg, model, p_KF, imp_KF, False, tc, gen)
        self.sampler = None
        R = len(imp_KF) // len(fixed.dataset)
        T_K = torch.tensor([len(x) for x in fixed.dataset]).repeat_interleave(R)
        self.grad = TiedGrad(model, imp_KF / T_K[:, None], 1)
        self.dataset = fixed.dataset
        chunks = [(slice(i * R, (i + 1) * R), x_TF.T.neg().contiguous().expand(R, -1, -1).contiguous(), 0)
                  for i, x_TF in enumerate(fixed.dataset)]
        self.draw = lambda: chunks

    @torch.no_grad()
    def loss(self) -> torch.Tensor:
        """[K] training-set loss of the current weights."""
        out_K = torch.zeros(len(self.grad.imp_c_KF))
        self.grad.begin()
        for sl, xn, n_zero in self.draw():
            self.grad(xn, n_zero, out_K, sl)
        return out_K


def _adamw(model: ToyModel, tc: TrainConfig) -> torch.optim.Optimizer:
    wd = max(tc.weight_decay, 0.0)  # negative decay is applied by the caller
    try:
        return torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=wd, fused=True)
    except (RuntimeError, TypeError):  # fused CPU AdamW needs torch ≥ 2.4
        return torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=wd)


def _on_divergence(new_bad: torch.Tensor, step: int, R: int, tc: TrainConfig) -> None:
    if tc.on_divergence == "raise" and new_bad.any():
        k = int(new_bad.nonzero()[0])
        raise DivergenceError(
            f"loss became NaN/inf at step {step} in instance {k // R} (restart {k % R})"
            f"{f' and {int(new_bad.sum()) - 1} more' if new_bad.sum() > 1 else ''}; "
            f"lower lr (now {tc.lr:g}) or set on_divergence=mark to keep training the others")


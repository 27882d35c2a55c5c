"""The toy models, all with a leading instance dimension I (many models are one tensor program).

Shapes: x_IBF inputs, h_IBH hidden activations, W_IFH the embedding of each feature (row W[i, f] is feature
f's direction in instance i's hidden space), b_IF the output bias.

| kind         | hidden h            | output x'            | target |
|--------------|---------------------|----------------------|--------|
| relu_output  | W x                 | ReLU(Wᵀh + b)        | x      |
| linear       | W x                 | Wᵀh + b              | x      |
| hidden_relu  | ReLU(W x)           | ReLU(Wᵀh + b)        | x      |
| abs_value    | ReLU(W_in x)        | ReLU(W_out h + b)    | |x|    |
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from toymodels.config import ToyConfig


def xavier_normal(n_instances: int, fan_a: int, fan_b: int, gen: torch.Generator) -> torch.Tensor:
    """Xavier-normal init for I independent [fan_a, fan_b] matrices, each scaled as a lone model.

    (`nn.init.xavier_normal_` on a 3-D tensor would take fan-in/out across instances, so the scale would
    depend on how many instances are packed together.)
    """
    std = math.sqrt(2.0 / (fan_a + fan_b))
    return torch.randn(n_instances, fan_a, fan_b, generator=gen) * std


class ToyModel(nn.Module):
    """Common interface: `forward(x_IBF) -> out_IBF`, `target`, `hidden`, `feature_weights()` (W_IFH)."""

    kind: str = ""

    def target(self, x_IBF: torch.Tensor) -> torch.Tensor:
        return x_IBF

    def feature_weights(self) -> torch.Tensor:
        """W_IFH: each feature's direction in hidden space (the input weights for untied models)."""
        return self.W.detach()

    def hidden(self, x_IBF: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @property
    def n_instances(self) -> int:
        return self.b.shape[0]

    def select(self, idx: torch.Tensor) -> ToyModel:
        """A new model holding only instances `idx` (e.g. the best restart of each configuration)."""
        out = copy.deepcopy(self)
        for name, p in self.named_parameters():
            setattr(out, name, nn.Parameter(p.detach()[idx].clone()))
        return out


class TiedModel(ToyModel):
    """relu_output, linear and hidden_relu: one matrix W embeds and (transposed) unembeds."""

    def __init__(self, kind: str, n_instances: int, n_features: int, n_hidden: int, gen: torch.Generator,
                 hidden_bias: torch.Tensor | None = None):
        super().__init__()
        self.kind = kind
        self.W = nn.Parameter(xavier_normal(n_instances, n_features, n_hidden, gen))  # [I, F, H]
        self.b = nn.Parameter(torch.zeros(n_instances, n_features))  # [I, F]
        if hidden_bias is not None:  # [I] initial values: hidden_relu with a per-neuron bias (Jermyn et al. 2022)
            self.b_hidden = nn.Parameter(hidden_bias.float()[:, None].repeat(1, n_hidden))  # [I, H]

    def hidden(self, x_IBF):
        h_IBH = torch.bmm(x_IBF, self.W)
        if hasattr(self, "b_hidden"):
            h_IBH = h_IBH + self.b_hidden[:, None, :]
        return torch.relu(h_IBH) if self.kind == "hidden_relu" else h_IBH

    def forward(self, x_IBF):
        out_IBF = torch.baddbmm(self.b[:, None, :], self.hidden(x_IBF), self.W.transpose(1, 2))
        return out_IBF if self.kind == "linear" else torch.relu(out_IBF)


class AbsValueModel(ToyModel):
    """Computation in superposition: y = ReLU(W_out ReLU(W_in x) + b), trained to output |x|."""

    kind = "abs_value"

    def __init__(self, n_instances: int, n_features: int, n_hidden: int, gen: torch.Generator,
                 hidden_bias: torch.Tensor | None = None):
        super().__init__()
        self.W_in = nn.Parameter(xavier_normal(n_instances, n_features, n_hidden, gen))  # [I, F, H]
        self.W_out = nn.Parameter(xavier_normal(n_instances, n_hidden, n_features, gen))  # [I, H, F]
        self.b = nn.Parameter(torch.zeros(n_instances, n_features))  # [I, F]
        if hidden_bias is not None:  # [I] initial values of a per-neuron bias (Jermyn et al. 2022)
            self.b_hidden = nn.Parameter(hidden_bias.float()[:, None].repeat(1, n_hidden))  # [I, H]

    def target(self, x_IBF):
        return x_IBF.abs()

    def feature_weights(self):
        return self.W_in.detach()

    def hidden(self, x_IBF):
        pre_IBH = torch.bmm(x_IBF, self.W_in)
        return torch.relu(pre_IBH + self.b_hidden[:, None, :] if hasattr(self, "b_hidden") else pre_IBH)

    def forward(self, x_IBF):
        return torch.relu(torch.baddbmm(self.b[:, None, :], self.hidden(x_IBF), self.W_out))


def build_model(cfg: ToyConfig, n_instances: int, gen: torch.Generator) -> ToyModel:
    """A freshly initialised model of `cfg.model` with `n_instances` instances."""
    hb = None
    if cfg.hidden_bias is not None:  # one value per configuration instance, repeated over its restarts
        hb_I = torch.tensor(cfg.hidden_bias_array())
        hb = hb_I.repeat_interleave(n_instances // len(hb_I))
    if cfg.model == "abs_value":
        return AbsValueModel(n_instances, cfg.n_features, cfg.n_hidden, gen, hb)
    return TiedModel(cfg.model, n_instances, cfg.n_features, cfg.n_hidden, gen, hb)


def empty_model(cfg: ToyConfig, n_instances: int) -> ToyModel:
    """A model of the right shapes whose weights will be overwritten (loading)."""
    return build_model(cfg, n_instances, torch.Generator().manual_seed(0))


class TiedGrad:
    """Hand-derived loss and gradients of a TiedModel on negated batch-last inputs xn_KFB = −x (FastSampler).

    With c = 1/(batch·F), e = out − x and imp the importance, the loss is c Σ imp e² per instance. Backward:
    g = 2c·imp·e, masked by out > 0 (ReLU output); ∂b = Σ_batch g; ∂W = g hᵀ + x dhᵀ with dh = Wᵀ g, masked by
    h > 0 for hidden_relu. `n_zero` implied zero rows see pre-activation b: they add n_zero·c Σ imp r² to the
    loss and n_zero·2c·imp·r·[b > 0] to ∂b, with r = ReLU(b) (b for linear), and nothing to ∂W (h = 0).
    Every pass writes into preallocated buffers; no autograd graph is built.
    """

    def __init__(self, model: TiedModel, imp_KF: torch.Tensor, batch: int):
        K, F, H = model.W.shape
        self.model = model
        self.relu_out, self.relu_hidden = model.kind != "linear", model.kind == "hidden_relu"
        self.imp_c_KF = imp_KF / (batch * F)
        self.imp_2c_KF1 = (2 * self.imp_c_KF)[:, :, None]
        self.grads = [torch.zeros_like(model.W), torch.zeros_like(model.b)]  # ∂W_KFH, ∂b_KF
        self.Wb_KFA = torch.empty(K, F, H + 1)  # [W | b]: A = H + 1 augmented hidden dims
        self.W0_KAF = torch.zeros(K, H + 1, F)  # [Wᵀ; 0]
        self.e_1A1 = torch.zeros(1, H + 1, 1)  # [0; 1]
        self.e_1A1[0, H] = 1.0
        self.gWb_KAF = torch.zeros(K, H + 1, F)  # [∂W | ∂b]ᵀ
        self._flat = {}

    def _buf(self, name: str, *shape: int) -> torch.Tensor:
        n = math.prod(shape)
        flat = self._flat.get(name)
        if flat is None or flat.numel() < n:
            flat = self._flat[name] = torch.empty(n)
        return flat[:n].view(shape)

    @torch.no_grad()
    def __call__(self, xn_KFB: torch.Tensor, n_zero: int, loss_K: torch.Tensor, sl: slice = slice(None)):
        """Instances `sl` only: write their loss into `loss_K[sl]` and their gradient into [∂W | ∂b]ᵀ.

        Call `begin()` before a step's chunks and `end()` after them (which fills `self.grads`).

        Hidden activations carry an extra row of ones, hA = [h; 1] = [0; 1] + [Wᵀ; 0] x, so one matmul
        [W | b] hA is the pre-activation with its bias and one matmul hA gᵀ is [∂W | ∂b]ᵀ (no separate bias
        passes). Weight gradients are formed transposed ([A, F] outputs are the faster GEMM layout on CPU for
        wide F) and copied back once; every matmul writes a contiguous buffer (strided outputs are slow).
        """
        W_KFH, b_KF = self.model.W[sl], self.model.b[sl]
        imp_c_KF, s2_KF1, loss_K = self.imp_c_KF[sl], self.imp_2c_KF1[sl], loss_K[sl]
        K, F, B = xn_KFB.shape
        H = W_KFH.shape[2]
        Wb_KFA, W0_KAF, gWb_KAF = self.Wb_KFA[sl], self.W0_KAF[sl], self.gWb_KAF[sl]
        hA_KAB = self._buf("h", K, H + 1, B)
        torch.baddbmm(self.e_1A1, W0_KAF, xn_KFB, alpha=-1, out=hA_KAB)  # h = W x (x = −xn)
        if self.relu_hidden:
            hA_KAB.relu_()
        out_KFB = torch.bmm(Wb_KFA, hA_KAB, out=self._buf("out", K, F, B))
        if self.relu_out:
            out_KFB.relu_()
        e_KFB = torch.add(out_KFB, xn_KFB, out=self._buf("e", K, F, B))  # out − x
        norm_KF = torch.linalg.vector_norm(e_KFB, dim=-1)  # one fused read: ‖e‖ over the batch
        torch.linalg.vecdot(norm_KF.square_(), imp_c_KF, out=loss_K)  # c Σ imp e²
        g_KFB = torch.mul(e_KFB, s2_KF1, out=self._buf("g", K, F, B))  # 2c·imp·(out − x)
        if self.relu_out:
            torch.ops.aten.threshold_backward.grad_input(g_KFB, out_KFB, 0.0, grad_input=g_KFB)
        torch.bmm(hA_KAB, g_KFB.transpose(1, 2), out=gWb_KAF)  # [g hᵀ | Σ_batch g]ᵀ
        dh_KAB = torch.bmm(W0_KAF, g_KFB, out=self._buf("dh", K, H + 1, B))  # [Wᵀ g; 0]
        if self.relu_hidden:
            torch.ops.aten.threshold_backward.grad_input(dh_KAB, hA_KAB, 0.0, grad_input=dh_KAB)
        gWb_KAF.baddbmm_(dh_KAB, xn_KFB.transpose(1, 2), alpha=-1)  # + [(x dhᵀ)ᵀ; 0]
        if n_zero:
            r_KF = b_KF.relu() if self.relu_out else b_KF
            loss_K.add_((imp_c_KF * r_KF.square()).sum(-1), alpha=n_zero)
            gWb_KAF[:, H].add_(imp_c_KF * r_KF, alpha=2 * n_zero)

    @torch.no_grad()
    def begin(self) -> None:
        """Before a step's chunks: copy the current weights into the augmented matrices."""
        H = self.model.W.shape[2]
        self.Wb_KFA[:, :, :H] = self.model.W
        self.Wb_KFA[:, :, H] = self.model.b
        self.W0_KAF[:, :H] = self.model.W.transpose(1, 2)

    @torch.no_grad()
    def end(self) -> None:
        """After a step's chunks: copy [∂W | ∂b]ᵀ into `self.grads` (∂W_KFH, ∂b_KF)."""
        H = self.model.W.shape[2]
        self.grads[0].copy_(self.gWb_KAF[:, :H].transpose(1, 2))
        self.grads[1].copy_(self.gWb_KAF[:, H])

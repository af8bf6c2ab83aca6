"""Conv-LoRA (Zhong et al., ICLR 2024): LoRA with a mixture of multi-scale convolution experts.

Source: the official AutoGluon ``multimodal/models/adaptation_layers.py`` (``ConvLoRALinear``); choices where
it is vague: ``docs/methods/conv_lora.md``. On a frozen Linear (SAM's / Hiera's fused ``attn.qkv``)::

    z  = A x                       (B', h, w, r): the low-rank bottleneck on the input's own token grid
    z' = z + E_g(z)                 E_g: the expert the noisy top-k gate picks for each sample of the call
    y  = W x + b + (alpha / r) · B z'

Expert ``i`` upsamples its input by its scale (bicubic; 1..M by default), applies a 3x3 conv and
GELU, and resizes back. The gate (Shazeer et al. 2017) pools ``z`` over the grid, so routing is per
sample of the qkv call: per window in windowed blocks, per image in global blocks. ``B`` starts at
zero, so the adapted model equals the frozen one at initialisation.

The gate's load-balancing loss of each forward is kept on the module (``balance_loss``) until a
method collects it with :func:`collect_balance_losses` / :func:`add_balance_loss`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from mmsam.adapters.base import AdapterLayer
from mmsam.adapters.lora import LoRAConfig, _slices


@dataclass
class ConvLoRAConfig(LoRAConfig):
    """Conv-LoRA hyper-parameters (defaults: the official example and preset, official run_semantic_segmentation.py).

    Args:
        r: rank (3). alpha: the update is scaled by ``alpha / r`` (32). dropout: on the input (0).
        parts: ``None`` adapts the whole fused qkv output with one bottleneck (the official
            injection, official AutoGluon presets.py); ``["q", "v"]`` gives each slice its own Conv-LoRA.
        num_experts: M, number of convolution experts (8).
        scales: each expert's resize factor; ``None`` means ``1, 2, ..., M`` (upsampling only).
        top_k: experts used per sample (1).
        kernel_size: of each expert's conv (3).
        noisy_gating: add the learned Gaussian noise to the gate logits in training (True).
        noise_epsilon: the noise std's floor (0.01).
        balance_loss_weight: weight of ``CV²(importance) + CV²(load)`` per layer (0.01).
        multiply_by_gates: scale each expert's output by its gate value. The official code does
            not (False): the gate then learns only from the balancing loss.
    """

    adapter_type: ClassVar[str] = "conv_lora"
    r: int = 3
    alpha: float | None = 32.0
    num_experts: int = 8
    scales: list[float] | None = None
    top_k: int = 1
    kernel_size: int = 3
    noisy_gating: bool = True
    noise_epsilon: float = 1e-2
    balance_loss_weight: float = 1e-2
    multiply_by_gates: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.num_experts < 1:
            raise ValueError(f"Conv-LoRA num_experts must be >= 1, got {self.num_experts}")
        if self.scales is not None:
            if len(self.scales) != self.num_experts:
                raise ValueError(f"Conv-LoRA scales {self.scales} must have num_experts={self.num_experts} entries")
            if any(s <= 0 for s in self.scales):
                raise ValueError(f"Conv-LoRA scales must be positive, got {self.scales}")
        if not 1 <= self.top_k <= self.num_experts:
            raise ValueError(f"Conv-LoRA top_k must be in [1, num_experts={self.num_experts}], got {self.top_k}")
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ValueError(f"Conv-LoRA kernel_size must be odd and positive, got {self.kernel_size}")
        if self.noise_epsilon < 0 or self.balance_loss_weight < 0:
            raise ValueError("Conv-LoRA noise_epsilon and balance_loss_weight must be >= 0")

    @property
    def expert_scales(self) -> list[float]:
        return list(self.scales) if self.scales is not None else [float(i) for i in range(1, self.num_experts + 1)]


def cv_squared(x: torch.Tensor) -> torch.Tensor:
    """Squared coefficient of variation ``var(x) / mean(x)²`` (unbiased var); 0 for one element."""
    if x.numel() <= 1:
        return x.new_zeros(())
    x = x.float()
    return x.var() / (x.mean() ** 2 + 1e-10)


class ConvExpert(nn.Module):
    """Resize by ``scale`` (bicubic), ``kernel_size`` conv (r -> r, zero bias), GELU, resize back."""

    def __init__(self, channels: int, scale: float, kernel_size: int = 3) -> None:
        super().__init__()
        self.scale = float(scale)
        self.conv = nn.Conv2d(channels, channels, kernel_size, padding=kernel_size // 2)
        nn.init.zeros_(self.conv.bias)  # the weight keeps PyTorch's default init (as AutoGluon's ``ConvLoRALinear``)
        self.act = nn.GELU()

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h, w = z.shape[-2:]
        if self.scale != 1.0:
            size = (max(1, round(h * self.scale)), max(1, round(w * self.scale)))
            z = F.interpolate(z, size=size, mode="bicubic", align_corners=False)
        z = self.act(self.conv(z))
        if z.shape[-2:] != (h, w):
            z = F.interpolate(z, size=(h, w), mode="bicubic", align_corners=False)
        return z

    def extra_repr(self) -> str:
        return f"scale={self.scale:g}"


class ConvMoE(nn.Module):
    """Noisy top-k gated mixture of :class:`ConvExpert` over ``(N, r, h, w)`` maps.

    ``forward(z)`` returns ``(sum of the chosen experts' outputs, balance loss)``; the gate sees
    the global average of each sample, so each of the ``N`` samples is routed as a whole.
    """

    def __init__(self, channels: int, config: ConvLoRAConfig) -> None:
        super().__init__()
        self.top_k = config.top_k
        self.noisy_gating = config.noisy_gating
        self.noise_epsilon = config.noise_epsilon
        self.loss_weight = config.balance_loss_weight
        self.multiply_by_gates = config.multiply_by_gates
        self.experts = nn.ModuleList(ConvExpert(channels, s, config.kernel_size) for s in config.expert_scales)
        m = len(self.experts)
        self.w_gate = nn.Parameter(torch.zeros(channels, m))
        self.w_noise = nn.Parameter(torch.zeros(channels, m))

    @property
    def num_experts(self) -> int:
        return len(self.experts)

    def gate(self, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Gate values ``(N, M)`` (zero outside the top k) and the load-balancing loss for ``s (N, r)``."""
        gates, _, loss = self._route(s)
        return gates, loss

    def _route(self, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Gate values, the chosen experts ``(N, k)`` and the balance loss."""
        m, k = self.num_experts, self.top_k
        clean = s @ self.w_gate
        noisy_train = self.noisy_gating and self.training
        if noisy_train:
            std = F.softplus(s @ self.w_noise) + self.noise_epsilon
            logits = clean + torch.randn_like(clean) * std
        else:
            logits = clean
        top_vals, top_idx = logits.topk(min(k + 1, m), dim=1)
        gates = torch.zeros_like(logits).scatter(1, top_idx[:, :k], top_vals[:, :k].softmax(dim=1))
        importance = gates.sum(0)
        if noisy_train and k < m:
            load = self._prob_in_top_k(clean, logits, std, top_vals).sum(0)
        else:
            load = (gates > 0).sum(0).to(gates.dtype)
        return gates, top_idx[:, :k], self.loss_weight * (cv_squared(importance) + cv_squared(load))

    def _prob_in_top_k(self, clean: torch.Tensor, noisy: torch.Tensor, std: torch.Tensor, top_vals: torch.Tensor) -> torch.Tensor:
        """P(expert stays in the top k under fresh noise), differentiable in the gate weights."""
        k = self.top_k
        threshold_in = top_vals[:, k : k + 1]  # the (k+1)-th value: what an expert in the top k must beat
        threshold_out = top_vals[:, k - 1 : k]  # the k-th value: what an expert outside must beat
        is_in = noisy > threshold_in
        p_in = torch.special.ndtr((clean - threshold_in) / std)
        p_out = torch.special.ndtr((clean - threshold_out) / std)
        return torch.where(is_in, p_in, p_out)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        gates, chosen, loss = self._route(z.mean(dim=(2, 3)))
        out: torch.Tensor | None = None
        for slot in range(self.top_k):
            # group the samples by expert (one gather), run each expert once, scatter back (one gather)
            expert_of = chosen[:, slot]
            order = torch.argsort(expert_of, stable=True)
            counts = torch.bincount(expert_of, minlength=self.num_experts).tolist()
            groups = z.index_select(0, order).split(counts)
            y = torch.cat([self.experts[e](g) for e, g in enumerate(groups) if g.shape[0]])
            if self.multiply_by_gates:
                w = gates.gather(1, chosen[:, slot : slot + 1]).index_select(0, order)
                y = y * w.to(y.dtype).view(-1, 1, 1, 1)
            y = y.index_select(0, torch.argsort(order))
            out = y if out is None else out + y
        return out, loss


def to_grid(x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...]]:
    """``(B', h, w, C)`` or ``(B, N, C)`` with square ``N`` -> ``(B', C, h, w)`` and the input shape."""
    if x.ndim == 4:
        return x.permute(0, 3, 1, 2), tuple(x.shape)
    if x.ndim == 3:
        n = x.shape[1]
        side = math.isqrt(n)
        if side * side != n:
            raise ValueError(
                f"Conv-LoRA needs the tokens on a grid: got a (B, N, C) input {tuple(x.shape)} whose N={n} is not a "
                "square; feed channels-last (B, h, w, C) tensors (SAM and Hiera qkv inputs are)"
            )
        return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], side, side), tuple(x.shape)
    raise ValueError(f"Conv-LoRA expects a (B, h, w, C) or (B, N, C) input, got shape {tuple(x.shape)}")


def from_grid(z: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Inverse of :func:`to_grid` (channels last again, in the input's layout)."""
    if len(shape) == 4:
        return z.permute(0, 2, 3, 1)
    return z.flatten(2).transpose(1, 2)


class ConvLoRADelta(nn.Module):
    """The Conv-LoRA update alone: ``(alpha / r) · B (A x + E_g(A x))`` on chosen output slices.

    ``balance_loss`` holds the summed gate loss of the last training forward (``None`` in eval
    mode or once collected).
    """

    # activation checkpointing puts this back after recomputing the forward in backward
    # (mmsam.backbones.grad_checkpointing): the recompute must not leave a loss for the next step
    recompute_restores = ("balance_loss",)

    def __init__(self, in_features: int, out_features: int, config: ConvLoRAConfig) -> None:
        super().__init__()
        if not isinstance(config, ConvLoRAConfig):
            raise TypeError(f"ConvLoRADelta needs a ConvLoRAConfig, got {type(config).__name__}")
        self.out_features = out_features
        self.slices = _slices(out_features, config.parts)
        self.scaling = config.scaling
        self.dropout = nn.Dropout(config.dropout) if config.dropout > 0 else nn.Identity()
        self.lora_A = nn.ModuleList(nn.Linear(in_features, config.r, bias=False) for _ in self.slices)
        self.moe = nn.ModuleList(ConvMoE(config.r, config) for _ in self.slices)
        self.lora_B = nn.ModuleList(nn.Linear(config.r, s.stop - s.start, bias=False) for s in self.slices)
        self.balance_loss: torch.Tensor | None = None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for a, b in zip(self.lora_A, self.lora_B):
            nn.init.kaiming_uniform_(a.weight, a=math.sqrt(5))
            nn.init.zeros_(b.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.dropout(x)
        pieces, losses = [], []
        for a, moe, b in zip(self.lora_A, self.moe, self.lora_B):
            z, shape = to_grid(a(h))
            expert_out, loss = moe(z)
            pieces.append(b(from_grid(z + expert_out, shape)) * self.scaling)
            losses.append(loss)
        self.balance_loss = torch.stack(losses).sum() if self.training else None
        if len(self.slices) == 1 and self.slices[0].stop - self.slices[0].start == self.out_features:
            return pieces[0]
        out = pieces[0].new_zeros(*x.shape[:-1], self.out_features)
        for s, p in zip(self.slices, pieces):
            out[..., s] = p
        return out


class ConvLoRALinear(AdapterLayer):
    """``y = W x + b + ConvLoRADelta(x)``; not mergeable (the experts are non-linear)."""

    adapter_layer_names = ("conv_lora",)
    supports_merge = False

    def __init__(self, base_layer: nn.Linear, config: ConvLoRAConfig) -> None:
        super().__init__(base_layer)
        self.conv_lora = ConvLoRADelta(base_layer.in_features, base_layer.out_features, config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base_layer(x) + self.conv_lora(x)


def collect_balance_losses(module: nn.Module, *, clear: bool = True) -> torch.Tensor | None:
    """Sum of the load-balancing losses the Conv-LoRA updates inside ``module`` stored in their
    last training forward (each already weighted); ``None`` when there are none.

    Each loss is cleared once collected (``clear=True``), so a loss is added exactly once and an
    expert that did not run in this step (a modality absent from the batch) adds nothing.
    """
    total: torch.Tensor | None = None
    for sub in module.modules():
        if isinstance(sub, ConvLoRADelta) and sub.balance_loss is not None:
            total = sub.balance_loss if total is None else total + sub.balance_loss
            if clear:
                sub.balance_loss = None
    return total


def add_balance_loss(module: nn.Module, out: dict[str, Any], *, key: str = "balance") -> dict[str, Any]:
    """Put :func:`collect_balance_losses` of ``module`` into ``out["losses"][key]`` (if any); returns ``out``.

    The task adds every tensor under ``out["losses"]`` to the training loss, so a method's
    ``forward`` ends with ``return add_balance_loss(self, out)`` to train the Conv-LoRA gates.
    """
    loss = collect_balance_losses(module)
    if loss is not None:
        out.setdefault("losses", {})[key] = loss
    return out

"""MMAdapter: per-modality bottleneck adapters that exchange information at the MLP stage (MFNet).

Ma et al., "A Unified Framework With Multimodal Fine-Tuning for Remote Sensing Semantic
Segmentation", IEEE TGRS 2025, Sec. III-A, Eqs. 3–6 (official: sstary/SSRS ``MFNet/MedSAM/models/ImageEncoder/vit/adapter_fusionblock.py``).
Every modality (stream) goes through the same frozen SAM blocks, stacked modality-outermost in one
batched pass (:func:`~mmsam.adapters.layout.current_layout`); each stream has its own adapters.
Injected by module name on each block's ``attn`` and ``mlp``:

- attention stage (a wrapped module with a fused ``qkv``): ``a_m <- a_m + Ad_att,m(a_m)``; no exchange.
- MLP stage (any other wrapped module, the block's ``mlp``), on its input ``xn_m = LN2(x_m)``::

      out_m = MLP(xn_m) + λ_m · Ad_mlp,m(xn_m) + (1 − λ_m) · mean_{k ≠ m, present} Ad_mlp,k(xn_k)

  with one learnable, unconstrained ``λ_m`` per stream and block, initialised to 0.5. With two
  streams this is exactly Eqs. 5–6. With more, the cross term is the mean over the other streams
  present for that sample; with none (one stream in the batch, or the others absent for a sample)
  it is zero, so a stream keeps exactly the self term it was trained with (the missing-modality
  and single-stream rules, ``docs/methods/mfnet.md``).

The bottleneck is ``Linear(C, ratio·C) -> GELU -> Linear(ratio·C, C)`` with PyTorch's default
init (the official code; the paper writes ReLU). Not mergeable: the adapters are non-linear.

The per-sample presence of each stream is the current :class:`~mmsam.adapters.layout.ModalityLayout`'s
``present``, set with the stacked names by the shared encode step of every method; a layout without
presence counts every stacked stream as present.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from mmsam.adapters.base import AdapterConfig, AdapterLayer
from mmsam.adapters.layout import ModalityLayout, layout_for

def check_streams(streams: list[str], kind: str) -> None:
    if len(set(streams)) != len(streams):
        raise ValueError(f"{kind} stream names must be unique, got {streams}")


def stream_chunks(x: torch.Tensor, streams: nn.ModuleDict | dict, kind: str) -> tuple[ModalityLayout, tuple[torch.Tensor, ...]]:
    """The current layout and ``x`` split into one chunk per stacked stream (checked against ``streams``)."""
    layout = layout_for(streams, kind, "stream")
    return layout, layout.split(x)


class _Mix(torch.autograd.Function):
    """``λ d + (1 − λ) c`` keeping one tensor, ``d − c``, for the backward (autograd would keep ``d`` and ``c``
    for λ's gradient: two activations per stream in every mixed Linear / MLP of every block)."""

    @staticmethod
    def forward(ctx: Any, lam: torch.Tensor, d: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(lam, d - c if lam.requires_grad else None)
        return lam * d + (1 - lam) * c  # the formula itself: λ = 1 leaves d exactly

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        lam, diff = ctx.saved_tensors
        g_lam = (g * diff).sum().reshape(lam.shape) if ctx.needs_input_grad[0] else None
        return g_lam, g * lam if ctx.needs_input_grad[1] else None, g * (1 - lam) if ctx.needs_input_grad[2] else None


def mix_streams(deltas: list[torch.Tensor], lambdas: list[torch.Tensor | None], layout: ModalityLayout) -> torch.Tensor:
    """``λ_m d_m + (1 − λ_m) · mean of the other present streams' d_k``, concatenated over streams.

    ``lambdas[m] is None`` means no exchange for stream ``m`` (weight 1 on its own delta).
    Which streams each sample has comes from the layout's presence ``(M, B)``; a chunk of
    ``N = B·k`` rows repeats each sample's flag ``k`` times.
    """
    if all(lam is None for lam in lambdas):
        return torch.cat(deltas, 0)
    d = torch.stack(deltas)  # (M, N, ...)
    m, n = d.shape[:2]
    p = layout.row_presence(n, d).view(m, n, *([1] * (d.ndim - 2)))
    total = (p * d).sum(0)
    others = (p.sum(0) - p).clamp(min=1)  # number of other present streams, per row (>= 1 to divide)
    out = []
    for i, lam in enumerate(lambdas):
        if lam is None:
            out.append(d[i])
            continue
        cross = (total - p[i] * d[i]) / others[i]
        out.append(_Mix.apply(lam, d[i], cross))
    return torch.cat(out, 0)


@dataclass
class MMAdapterConfig(AdapterConfig):
    """MMAdapter hyper-parameters.

    Args:
        target_modules: the modules wrapped: each SAM block's ``attn`` (attention-stage adapter)
            and ``mlp`` (MLP-stage adapter with mixing). A wrapped module that has a ``qkv``
            sub-module is an attention stage; any other is an MLP stage.
        streams: the modality names, one adapter set each (filled by the method from its modalities).
        ratio: bottleneck width as a fraction of the block width (0.25: 192 / 256 / 320 for ViT-B / L / H).
        mixing: exchange between streams at the MLP stage (Eqs. 5–6); ``False`` gives plain
            per-stream adapters (Table IV's "standard Adapter per stream") and no ``λ``.
        lambda_init: initial ``λ_m`` (0.5 in the official code).
    """

    adapter_type: ClassVar[str] = "mm_adapter"
    modality_field: ClassVar[str] = "streams"
    target_modules: str | list[str] = field(default_factory=lambda: ["attn", "mlp"])
    streams: list[str] = field(default_factory=list)
    ratio: float = 0.25
    mixing: bool = True
    lambda_init: float = 0.5

    def __post_init__(self) -> None:
        check_streams(self.streams, "MMAdapter")
        if not 0 < self.ratio:
            raise ValueError(f"MMAdapter ratio must be > 0, got {self.ratio}")


class Bottleneck(nn.Module):
    """``Linear(c_in, hidden) -> GELU -> Linear(hidden, c_out)``; no internal skip."""

    def __init__(self, c_in: int, hidden: int, c_out: int) -> None:
        super().__init__()
        self.down = nn.Linear(c_in, hidden)
        self.act = nn.GELU()
        self.up = nn.Linear(hidden, c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.act(self.down(x)))


def _linear_dims(module: nn.Module) -> tuple[int, int]:
    linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"MMAdapter wraps a module with Linear layers (SAM's attn / mlp), got a {type(module).__name__}")
    return linears[0].in_features, linears[-1].out_features


class MMAdapterLayer(AdapterLayer):
    """A frozen ``attn`` or ``mlp`` of a SAM block with one adapter per stream (see module docstring)."""

    adapter_layer_names = ("adapters", "lambdas")

    def __init__(self, base_layer: nn.Module, config: MMAdapterConfig) -> None:
        super().__init__(base_layer)
        if not config.streams:
            raise ValueError("MMAdapter needs stream names (the modalities); none were given")
        c_in, c_out = _linear_dims(base_layer)
        self.stage = "attn" if isinstance(getattr(base_layer, "qkv", None), nn.Module) else "mlp"
        # the attention adapter acts on the attention output a, the MLP adapter on the MLP input
        dim = c_out if self.stage == "attn" else c_in
        hidden = max(1, int(dim * config.ratio))
        self.adapters = nn.ModuleDict({s: Bottleneck(dim, hidden, c_out) for s in config.streams})
        mixed = self.stage == "mlp" and config.mixing
        self.lambdas = nn.ParameterDict(
            {s: nn.Parameter(torch.tensor(float(config.lambda_init))) for s in config.streams} if mixed else {}
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base_layer(x)
        if self.stage == "attn":
            layout, chunks = stream_chunks(y, self.adapters, "MMAdapter")
            return y + torch.cat([self.adapters[n](c) for n, c in zip(layout.names, chunks)], 0)
        layout, chunks = stream_chunks(x, self.adapters, "MMAdapter")
        deltas = [self.adapters[n](c) for n, c in zip(layout.names, chunks)]
        return y + mix_streams(deltas, [self.lambdas[n] if n in self.lambdas else None for n in layout.names], layout)

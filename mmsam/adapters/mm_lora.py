"""MMLoRA: per-modality LoRA whose MLP updates are mixed between streams (MFNet).

Ma et al., IEEE TGRS 2025, Sec. III-B (Eqs. 7–12) and III-C-2 (official: sstary/SSRS
``MFNet/MedSAM/models/ImageEncoder/vit/lora_block.py`` and ``.../common/loralib/layers.py``). Every
stream (modality) runs through the same frozen SAM blocks in one batched pass, stacked
modality-outermost; each has its own LoRA matrices. Injected by module name on frozen Linears:

- a fused attention ``qkv`` (a module named ``qkv``; ``out_features = 3 · d_out``): per-stream LoRA on the ``parts``
  slices (q and v), scaled by ``alpha / r`` (1 / 4 = 0.25), no exchange between streams;
- any other target Linear (``mlp.lin1``, ``mlp.lin2``)::

      out_m = W xn_m + b + λ_m · B_m A_m xn_m + (1 − λ_m) · mean_{k ≠ m, present} B_k A_k xn_k

  with one learnable ``λ_m`` per stream and layer (init 0.5) and no ``alpha / r`` scaling on this
  path (the official code computes the scaling but does not apply it). The cross term follows
  :func:`~mmsam.adapters.mm_adapter.mix_streams`: the mean over the other present streams, zero
  when there is none.

``A`` is Kaiming-uniform (a = √5), ``B`` zero (the official loralib init; the paper says Gaussian),
so the adapted encoder equals the frozen one at initialisation. Not mergeable: one shared ``W``
cannot hold a different update per stream.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn

from mmsam.adapters.base import AdapterConfig, AdapterLayer
from mmsam.adapters.lora import _PARTS, LoRAConfig, LoRADelta
from mmsam.adapters.mm_adapter import check_streams, mix_streams, stream_chunks


@dataclass
class MMLoRAConfig(AdapterConfig):
    """MMLoRA hyper-parameters (defaults: the official code, ``lora_block.py``).

    Args:
        target_modules: the Linears adapted (every block's ``attn.qkv``, ``mlp.lin1``, ``mlp.lin2``;
            on SAM 2's Hiera ``mlp.layers.0`` / ``mlp.layers.1``).
        streams: the modality names, one set of LoRA matrices each (filled by the method).
        r: rank (4). alpha: the attention updates are scaled by ``alpha / r`` (1 / 4).
        dropout: on the LoRA input (0).
        parts: the slices of a fused qkv that get an update (``["q", "v"]``).
        mixing: exchange between streams on the non-qkv Linears (Eqs. 10–12); ``False`` gives
            plain per-stream LoRA there (Table IV's "standard LoRA per stream") and no ``λ``.
        lambda_init: initial ``λ_m`` (0.5).
    """

    adapter_type: ClassVar[str] = "mm_lora"
    modality_field: ClassVar[str] = "streams"
    # SAM ViT's MLP Linears are mlp.lin1 / lin2, SAM 2 Hiera's mlp.layers.0 / 1
    target_modules: str | list[str] = field(
        default_factory=lambda: ["attn.qkv", "mlp.lin1", "mlp.lin2", "mlp.layers.0", "mlp.layers.1"]
    )
    streams: list[str] = field(default_factory=list)
    r: int = 4
    alpha: float = 1.0
    dropout: float = 0.0
    parts: list[str] = field(default_factory=lambda: ["q", "v"])
    mixing: bool = True
    lambda_init: float = 0.5

    def __post_init__(self) -> None:
        check_streams(self.streams, "MMLoRA")
        self.attention_lora()  # validates r, dropout and parts
        if not self.parts or any(p not in _PARTS for p in self.parts):
            raise ValueError(f"MMLoRA parts must be a non-empty subset of {_PARTS}, got {self.parts}")

    def attention_lora(self) -> LoRAConfig:
        """The per-stream LoRA of a fused qkv: ``parts`` slices, scaled ``alpha / r``."""
        return LoRAConfig(r=self.r, alpha=self.alpha, dropout=self.dropout, parts=list(self.parts))

    def mixed_lora(self) -> LoRAConfig:
        """The per-stream LoRA of the other Linears: whole output, unscaled."""
        return LoRAConfig(r=self.r, alpha=None, dropout=self.dropout, parts=None)


class MMLoRALinear(AdapterLayer):
    """A frozen Linear with one LoRA per stream, mixed between streams except on a fused qkv."""

    adapter_layer_names = ("lora", "lambdas")
    takes_module_name = True

    def __init__(self, base_layer: nn.Linear, config: MMLoRAConfig, name: str | None = None) -> None:
        super().__init__(base_layer)
        if not config.streams:
            raise ValueError("MMLoRA needs stream names (the modalities); none were given")
        # a fused qkv by name when injected (Hiera's stage transitions widen it: Linear(d, 3·2d)), else by shape
        self.is_qkv = name.rsplit(".", 1)[-1] == "qkv" if name is not None else base_layer.out_features == 3 * base_layer.in_features
        lora = config.attention_lora() if self.is_qkv else config.mixed_lora()
        self.lora = nn.ModuleDict(
            {s: LoRADelta(base_layer.in_features, base_layer.out_features, lora) for s in config.streams}
        )
        mixed = not self.is_qkv and config.mixing
        self.lambdas = nn.ParameterDict(
            {s: nn.Parameter(torch.tensor(float(config.lambda_init))) for s in config.streams} if mixed else {}
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base_layer(x)
        layout, chunks = stream_chunks(x, self.lora, "MMLoRA")
        deltas = [self.lora[n](c) for n, c in zip(layout.names, chunks)]
        return y + mix_streams(deltas, [self.lambdas[n] if n in self.lambdas else None for n in layout.names], layout)

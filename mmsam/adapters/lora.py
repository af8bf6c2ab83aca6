"""LoRA (Hu et al., 2021) on a frozen ``nn.Linear``, with optional q/k/v slices of a fused qkv.

Written here rather than taken from PEFT because SAM and SAM 2 both fuse attention into one
``qkv`` Linear and the SAM-based papers adapt only its q and v slices (MemorySAM's
``LoRA_Sam``, MLE-SAM Eq. 5; official MemorySAM sam_lora_image_encoder_seg.py), which PEFT's
``target_modules`` cannot express, and because later adapters of this family (per-modality
experts) share this layer's contract and read the batch's modality layout.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch

from mmsam.errors import ConfigError
from torch import nn

from mmsam.adapters.base import AdapterConfig, AdapterLayer

_PARTS = ("q", "k", "v")


@dataclass
class LoRAConfig(AdapterConfig):
    """LoRA hyper-parameters.

    Args:
        r: rank of the update.
        alpha: scaling numerator; the update is scaled by ``alpha / r``. ``None`` means scale 1
            (MemorySAM's code has no alpha).
        dropout: dropout on the LoRA input path.
        parts: for a fused qkv Linear, which thirds of the output get an update
            (``["q", "v"]`` as in the SAM-LoRA papers); ``None`` adapts the whole output.
        slice_width: how wide each part's update is when the qkv Linear widens
            (``Linear(d_in, 3·d_out)``, d_out > d_in: Hiera's stage-transition blocks).
            ``"out"``: the whole part (d_out channels). ``"in"``: d_in channels, as MemorySAM's
            official wrapper (``qkv[..., :d_in] += q``, ``qkv[..., -d_in:] += v``): the first
            d_in channels of q (and of k), the *last* d_in channels of v
            (official MemorySAM LoRA_Sam). Both agree where d_out == d_in.
            ``"in"`` needs ``parts`` and is implemented by the plain LoRA layer (and MoE-LoRA experts).
    """

    adapter_type: ClassVar[str] = "lora"
    r: int = 4
    alpha: float | None = None
    dropout: float = 0.0
    parts: list[str] | None = None
    slice_width: Literal["out", "in"] = "out"

    def __post_init__(self) -> None:
        if self.r < 1:
            raise ConfigError(f"LoRA r (the rank) must be an integer >= 1, got {self.r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"LoRA dropout must be in [0, 1), got {self.dropout}")
        if self.parts is not None:
            bad = [p for p in self.parts if p not in _PARTS]
            if bad or not self.parts:
                raise ValueError(f"LoRA parts must be a non-empty subset of {_PARTS}, got {self.parts}")
        if self.slice_width not in ("out", "in"):
            raise ValueError(f"LoRA slice_width must be 'out' or 'in', got {self.slice_width!r}")
        if self.slice_width == "in" and self.parts is None:
            raise ValueError("LoRA slice_width='in' narrows the q/k/v parts of a fused qkv: give parts (e.g. [q, v])")
        if self.slice_width == "in" and self.adapter_type != "lora":
            # other LoRA-family layers build their slices themselves and would ignore it silently
            raise ValueError(f"slice_width='in' is implemented by the plain 'lora' adapter, not {self.adapter_type!r}")

    @property
    def scaling(self) -> float:
        return 1.0 if self.alpha is None else self.alpha / self.r


def _slices(out_features: int, parts: list[str] | None, *, in_features: int | None = None, width: str = "out") -> list[slice]:
    """Output slices of each part; ``width="in"`` narrows each to ``in_features`` (see ``LoRAConfig.slice_width``)."""
    if parts is None:
        return [slice(0, out_features)]
    if out_features % 3:
        raise ValueError(f"parts={parts} needs a fused qkv Linear, but out_features={out_features} is not divisible by 3")
    d = out_features // 3
    if width == "out" or in_features is None or in_features == d:
        return [slice(_PARTS.index(p) * d, (_PARTS.index(p) + 1) * d) for p in parts]
    if in_features > d:
        raise ValueError(f"slice_width='in' needs a widening qkv, but in_features={in_features} > {d} per part")
    starts = {"q": 0, "k": d, "v": 3 * d - in_features}  # v: the last in_features channels, as `qkv[..., -dim:]`
    return [slice(starts[p], starts[p] + in_features) for p in parts]


class LoRADelta(nn.Module):
    """The low-rank update ``s · B A x`` of one LoRA, on chosen output slices of a Linear."""

    def __init__(self, in_features: int, out_features: int, config: LoRAConfig) -> None:
        super().__init__()
        self.out_features = out_features
        self.slices = _slices(out_features, config.parts, in_features=in_features, width=config.slice_width)
        self.scaling = config.scaling
        self.dropout = nn.Dropout(config.dropout) if config.dropout > 0 else nn.Identity()
        self.lora_A = nn.ModuleList(nn.Linear(in_features, config.r, bias=False) for _ in self.slices)
        self.lora_B = nn.ModuleList(nn.Linear(config.r, s.stop - s.start, bias=False) for s in self.slices)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for a, b in zip(self.lora_A, self.lora_B):
            nn.init.kaiming_uniform_(a.weight, a=math.sqrt(5))
            nn.init.zeros_(b.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.dropout(x)
        pieces = [b(a(h)) * self.scaling for a, b in zip(self.lora_A, self.lora_B)]
        if len(self.slices) == 1 and self.slices[0].stop - self.slices[0].start == self.out_features:
            return pieces[0]
        out = pieces[0].new_zeros(*x.shape[:-1], self.out_features)
        for s, p in zip(self.slices, pieces):
            out[..., s] = p
        return out

    def delta_weight(self, like: torch.Tensor) -> torch.Tensor:
        w = torch.zeros_like(like)
        for s, a, b in zip(self.slices, self.lora_A, self.lora_B):
            w[s] = (b.weight @ a.weight) * self.scaling
        return w


class LoRALinear(AdapterLayer):
    """``y = W x + b + s · B A x`` on each chosen output slice; ``B`` starts at zero."""

    adapter_layer_names = ("lora",)
    supports_merge = True

    def __init__(self, base_layer: nn.Linear, config: LoRAConfig) -> None:
        super().__init__(base_layer)
        self.lora = LoRADelta(base_layer.in_features, base_layer.out_features, config)

    def get_delta_weight(self) -> torch.Tensor:
        return self.lora.delta_weight(self.base_layer.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base_layer(x)
        if self.merged:
            return y
        return y + self.lora(x)

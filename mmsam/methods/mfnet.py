"""MFNet: frozen SAM with multimodal fine-tuning (MMAdapter / MMLoRA), the DFM and a UNetFormer decoder.

Ma, Zhang, Pun, Huang, "A Unified Framework With Multimodal Fine-Tuning for Remote Sensing Semantic
Segmentation", IEEE TGRS 2025 (arXiv 2410.11160; official code: sstary/SSRS, ``MFNet/UNetFormer_MMSAM.py``;
choices where it is vague, and the measured parity: ``docs/methods/mfnet.md``). Optical and DSM (any number of modalities) run as
streams through the same frozen SAM ViT image encoder in one batched pass, each with its own
adapters exchanging information at the MLP stage (§2); the neck outputs (stride 16) feed the Deep
Fusion Module (a pyramid per modality, SE fusion at strides 4/8/16/32) and the UNetFormer decoder.
SAM's prompt encoder and mask decoder are not used and are dropped.
"""
from __future__ import annotations

import copy
import dataclasses
from typing import Any, Literal, Sequence

import torch
from torch import nn

from mmsam.adapters import AdapterConfig, LoRAConfig, MMAdapterConfig, MMLoRAConfig, inject_adapters, modality_layout, stream_presence
from mmsam.backbones import create_backbone
from mmsam.errors import ConfigError
from mmsam.fusion import DeepFusionModule
from mmsam.heads import UNetFormerDecoder
from mmsam.methods.base import SegmentationMethod
from mmsam.methods.registry import register_method


@register_method("mfnet")
class MFNet(SegmentationMethod):
    """Frozen SAM ViT + MMAdapter / MMLoRA streams + DFM + UNetFormer decoder.

    Args:
        num_classes, modalities: given by the data module; one adapter stream per modality
            (optical first: it gets the LayerNorm pyramid under ``dfm_norm="asymmetric"``).
        backbone: a SAM ViT backbone (``sam_vit_b`` / ``_l`` / ``_h``; ``sam_vit_tiny`` for tests).
        img_size: encoder input size (256, the paper's tile).
        checkpoint: official SAM file, or ``None`` (random weights).
        adapter: ``MMAdapterConfig`` (default) or ``MMLoRAConfig``, by ``class_path``; its
            ``streams`` are set to ``modalities``. A LoRA-family config (one adapter shared by
            all streams) also works, and in Python any ``AdapterConfig`` (a ``MoELoRAConfig``
            gets its ``experts`` set): Table IV's baselines.
        dfm: ``False`` is the "without DFM" ablation: the decoder (no skips) reads the sum of the
            present streams' stride-16 maps.
        dfm_norm: norm of the pyramid's 1/4 branch: ``"asymmetric"`` (official code: LayerNorm for
            the first modality, BatchNorm for the others), ``"layer"`` or ``"batch"``.
        decode_channels, window_size, num_heads, dropout: the UNetFormer decoder's (64, 8, 8, 0.1).
    """

    def __init__(
        self,
        num_classes: int,
        modalities: Sequence[str],
        *,
        backbone: str = "sam_vit_b",
        img_size: int = 256,
        checkpoint: str | None = None,
        adapter: MMAdapterConfig | MMLoRAConfig | LoRAConfig | None = None,
        dfm: bool = True,
        dfm_norm: Literal["asymmetric", "layer", "batch"] = "asymmetric",
        decode_channels: int = 64,
        window_size: int = 8,
        num_heads: int = 8,
        dropout: float = 0.1,
    ) -> None:
        super().__init__(num_classes, modalities)
        adapter = copy.deepcopy(adapter) if adapter is not None else MMAdapterConfig()
        adapter = self._with_streams(adapter)
        self.backbone = create_backbone(backbone, img_size=img_size, checkpoint=checkpoint)
        if getattr(self.backbone, "family", None) != "sam":
            raise ConfigError(f"MFNet needs a SAM ViT backbone (sam_vit_b / sam_vit_l / sam_vit_h), got {backbone!r}")
        self.backbone.requires_grad_(False)
        # unused by MFNet: Table VI's "+6.22 M" counts them, this model does not hold them (docs/methods/mfnet.md)
        del self.backbone.prompt_encoder, self.backbone.mask_decoder
        self.adapted_modules = inject_adapters(self.backbone.image_encoder, adapter)
        self.adapter_config = adapter
        self.img_size = img_size
        channels = self.backbone.embed_dim
        self.dfm = DeepFusionModule(self.modalities, channels, norm=dfm_norm) if dfm else None
        self.decoder = UNetFormerDecoder(
            num_classes, (channels,) * 4, decode_channels=decode_channels, window_size=window_size,
            num_heads=num_heads, dropout=dropout, skips=dfm,
        )
        self.train()  # official builders return eval-mode modules

    def _with_streams(self, adapter: AdapterConfig) -> AdapterConfig:
        """The adapter config with one stream (or expert) per modality of this model."""
        names = list(self.modalities)
        for key in ("streams", "experts"):
            if key in {f.name for f in dataclasses.fields(adapter)}:
                given = getattr(adapter, key)
                if given and set(given) != set(names):
                    raise ConfigError(f"adapter {key} {given} differ from the model's modalities {names}; leave them empty")
                return dataclasses.replace(adapter, **{key: names})
        return adapter  # a shared adapter (e.g. plain LoRA): one set for all streams

    def forward_features(self, batch: dict[str, Any]) -> dict[str, Any]:
        self.check_input_size(batch)
        x, names, present = self.stack_modalities(batch)
        with modality_layout(names), stream_presence(present):
            (emb,) = self.backbone(x)
        m = len(names)
        levels = emb.reshape(m, emb.shape[0] // m, *emb.shape[1:])
        if self.dfm is not None:
            return {"levels": self.dfm(levels, names, present)}
        # without DFM: F_x + F_y, the sum over the streams present in each sample
        return {"levels": [torch.einsum("mbchw,mb->bchw", levels, present.to(levels.dtype))]}

    def forward_head(self, features: dict[str, Any], size: torch.Size) -> dict[str, Any]:
        return {"logits": self.decoder(features["levels"], tuple(size))}

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        adapters = [p for p in self.backbone.parameters() if p.requires_grad]
        fusion = list(self.dfm.parameters()) if self.dfm is not None else []
        return {"adapters": adapters, "fusion": fusion, "heads": list(self.decoder.parameters())}

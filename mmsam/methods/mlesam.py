"""MLE-SAM: per-modality LoRA experts, a cross-modal router and multi-scale heads.

Zhu et al., "Customize Segment Anything Model for Multi-Modal Semantic Segmentation with Mixture
of LoRA Experts", arXiv 2412.04220 (no official code; choices where the
paper is vague: ``docs/methods/mlesam.md``). Frozen SAM 2 (Hiera-B+ in the paper) or SAM ViT;
one LoRA expert per modality (MoE-LoRA) on q and v, all modalities in one batched encoder pass;
per level, the router-weighted feature plus the mean feature over present modalities; SAM's
decoder adapted to K classes with its high-resolution skips; an auxiliary multi-scale head.
"""
from __future__ import annotations

import copy
from typing import Any, Literal, Sequence

import torch
from torch import nn

from mmsam.adapters import AdapterConfig, LoRAConfig, MoELoRAConfig
from mmsam.errors import ConfigError
from mmsam.fusion import ModalityRouter
from mmsam.heads import MultiScaleAuxHead, upsample_logits
from mmsam.methods.base import SegmentationMethod, sam_decoder_head


class MLESAM(SegmentationMethod):
    """MoE-LoRA on a frozen SAM / SAM 2 + router + K-class decoder + auxiliary head.

    Args:
        num_classes, modalities: given by the data module; one expert per modality.
        backbone: ``sam2_hiera_b+`` in the paper's recipe; any registered backbone works.
        img_size: encoder input size.
        checkpoint: official SAM / SAM 2 file, or ``None`` (random weights).
        adapter: the encoder adapter. A shared one (plain LoRA keys, or Conv-LoRA by ``class_path``)
            becomes each modality's expert (MoE-LoRA; LoRA of rank 32 on q and v, Eq. 5; the rank as secondary summaries of the paper give it), where
            it is injected coming from its ``target_modules`` / ``exclude_modules`` / ``blocks``; a
            modality-aware one (MoE-LoRA, MMAdapter, MMLoRA by ``class_path``) is per-modality
            already and is used as it is. ``None``: rank 32 on q and v.
        top_k: router keeps the k best present modalities per image (``None``: all present).
        router_gate: ``"sigmoid"`` (Eq. 8 as quoted) or ``"none"``.
        fusion: ``"both"`` (routed + mean, the paper's full model), ``"routed"`` or ``"mean"``
            (its ablation rows).
        aux_head: train the auxiliary multi-scale head (loss weight: the task's ``aux_weight``).
        aux_embed_dim: width of the auxiliary head (the recipes: 256, the FPN width).
        missing: how an absent modality is represented (the paper does not say; both protocols are
            offered): ``"drop"`` leaves it out of the router's softmax and the mean (default);
            ``"zero"`` feeds a zero image (the normalised mean) through its expert and keeps it in
            the router and the mean as if present.
    """

    def __init__(
        self,
        num_classes: int,
        modalities: Sequence[str],
        *,
        backbone: str = "sam2_hiera_b+",
        img_size: int = 1024,
        checkpoint: str | None = None,
        adapter: LoRAConfig | AdapterConfig | None = None,
        top_k: int | None = None,
        router_gate: Literal["sigmoid", "none"] = "sigmoid",
        fusion: Literal["both", "routed", "mean"] = "both",
        aux_head: bool = True,
        aux_embed_dim: int = 128,
        missing: Literal["drop", "zero"] = "drop",
    ) -> None:
        super().__init__(num_classes, modalities)
        if missing not in ("drop", "zero"):
            raise ConfigError(f"missing must be 'drop' or 'zero', got {missing!r}")
        self.missing = missing
        if fusion not in ("both", "routed", "mean"):
            raise ConfigError(f"fusion must be 'both', 'routed' or 'mean', got {fusion!r}")
        if adapter is None:  # not an instance default: see SamLoRA
            adapter = LoRAConfig(r=32, parts=["q", "v"])
        if not adapter.modality_aware:  # one expert per modality (its experts: filled by build_frozen)
            adapter = MoELoRAConfig(
                target_modules=adapter.target_modules,
                exclude_modules=adapter.exclude_modules,
                blocks=adapter.blocks,
                expert=copy.deepcopy(adapter),
            )
        self.build_frozen(backbone, img_size=img_size, checkpoint=checkpoint, adapter=adapter, head=sam_decoder_head(num_classes))
        levels = len(self.backbone.feature_strides)
        channels = self.backbone.embed_dim
        self.router = ModalityRouter(channels, levels, top_k=top_k, gate=router_gate) if fusion != "mean" else None
        self.aux_head = MultiScaleAuxHead(channels, levels, num_classes, embed_dim=aux_embed_dim) if aux_head else None
        self.fusion = fusion
        self.train()

    def forward_features(self, batch: dict[str, Any]) -> dict[str, Any]:
        if self.missing == "zero":
            batch = zero_fill_missing(batch, self.modalities)
        levels, names, present = self.encode(self.backbone, batch)
        fused: list[torch.Tensor] = []
        weights: list[torch.Tensor] = []
        if self.router is not None:
            routed, weights = self.router(levels, present)
        for i, level in enumerate(levels):
            mean = self.mean_fusion(level, present)
            if self.fusion == "both":
                fused.append(routed[i] + mean)
            elif self.fusion == "routed":
                fused.append(routed[i])
            else:
                fused.append(mean)
        return {"levels": fused, "router_weights": weights, "names": names}

    def forward_head(self, features: dict[str, Any], size: torch.Size) -> dict[str, Any]:
        levels = features["levels"]
        out: dict[str, Any] = {
            "logits": upsample_logits(self.head(levels), tuple(size)),
            "router_weights": dict(zip(features["names"], torch.stack(features["router_weights"]).unbind(1)))
            if features["router_weights"]
            else {},
        }
        if self.aux_head is not None and self.training:
            out["aux"] = {"multiscale": upsample_logits(self.aux_head(levels), tuple(size))}
        return out

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        adapters = [p for p in self.backbone.parameters() if p.requires_grad]
        fusion = [p for p in self.router.parameters()] if self.router is not None else []
        heads = [p for p in self.head.parameters() if p.requires_grad]
        if self.aux_head is not None:
            heads += list(self.aux_head.parameters())
        return {"adapters": adapters, "fusion": fusion, "heads": heads}


def zero_fill_missing(batch: dict[str, Any], modalities: Sequence[str]) -> dict[str, Any]:
    """Every modality of ``modalities`` present in every sample: absent ones become zero images."""
    images = batch["modalities"]
    ref = next(iter(images.values()))
    b = ref.shape[0]
    present = batch.get("present", {})
    filled: dict[str, torch.Tensor] = {}
    for name in modalities:
        x = images.get(name)
        if x is None:
            filled[name] = ref.new_zeros(ref.shape)
            continue
        p = present.get(name)
        filled[name] = x if p is None or bool(p.all()) else torch.where(p.to(x.device).bool()[:, None, None, None], x, x.new_zeros(()))
    every = {n: torch.ones(b, dtype=torch.bool, device=ref.device) for n in modalities}
    return {**batch, "modalities": filled, "present": every}

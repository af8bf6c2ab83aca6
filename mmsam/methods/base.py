"""What every method shares: stacking present modalities, fusing per level, parameter groups."""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from mmsam.adapters import AdapterConfig, add_balance_loss, inject_adapters, modality_layout
from mmsam.backbones import create_backbone
from mmsam.data.modalities import get_modality
from mmsam.errors import ConfigError
from mmsam.heads import SamDecoderHead


class SegmentationMethod(nn.Module):
    """Base class: ``forward(batch) -> {"logits": (B, K, H, W), ...}``.

    Subclasses implement ``forward_features(batch)`` and ``forward_head(features, size)`` and
    fill ``param_groups()``; the task only ever calls ``forward`` and ``param_groups``.
    """

    def __init__(self, num_classes: int, modalities: Sequence[str]) -> None:
        super().__init__()
        if num_classes < 2:
            raise ConfigError(f"num_classes must be >= 2, got {num_classes}")
        if not modalities:
            raise ConfigError("a method needs at least one modality")
        for m in modalities:
            get_modality(m)  # ConfigError naming the unknown modality and the known ones
        self.num_classes = num_classes
        self.modalities = tuple(modalities)

    def build_frozen_sam(self, backbone: str, *, img_size: int, checkpoint: str | None, adapter: AdapterConfig) -> None:
        """Build the frozen backbone, inject ``adapter`` and hand its decoder to a K-class head.

        Sets ``self.backbone``, ``self.adapted_modules``, ``self.head`` and ``self.img_size``.
        """
        self.backbone = create_backbone(backbone, img_size=img_size, checkpoint=checkpoint)
        self.backbone.requires_grad_(False)
        self.adapted_modules = inject_adapters(self.backbone.image_encoder, adapter)
        decoder, prompt_encoder = self.backbone.mask_decoder, self.backbone.prompt_encoder
        del self.backbone.mask_decoder  # the head owns it now
        self.head = SamDecoderHead(
            decoder, prompt_encoder, self.num_classes, no_mem_embed=getattr(self.backbone, "no_mem_embed", None)
        )
        self.img_size = img_size

    def check_input_size(self, batch: dict[str, Any]) -> None:
        """SAM's absolute position embedding fixes the input size: say so before torch does."""
        size = tuple(next(iter(batch["modalities"].values())).shape[-2:])
        if self.backbone.family == "sam" and size != (self.img_size, self.img_size):
            raise ConfigError(
                f"images are {size[0]}x{size[1]} but the SAM encoder was built for img_size={self.img_size}; "
                "set the data's train_size/eval_size to the model's img_size"
            )

    def stack_modalities(self, batch: dict[str, Any]) -> tuple[torch.Tensor, tuple[str, ...], torch.Tensor]:
        """Stack the modalities present in at least one sample, modality outermost.

        Returns images ``(M·B, 3, H, W)``, their names, and presence ``(M, B)`` as float.
        A modality absent from the whole batch is left out (M shrinks); an unknown one is an error.
        The pixels of a modality absent for one sample are replaced by zeros (the normalised mean).
        """
        images, present = batch["modalities"], batch.get("present", {})
        unknown = sorted(set(images) - set(self.modalities))
        if unknown:
            raise ConfigError(f"batch has modalities {unknown} this model was not built for {list(self.modalities)}")
        names, stack, masks = [], [], []
        for name in self.modalities:
            if name not in images:
                continue
            x = images[name]
            p = present.get(name)
            p = torch.ones(x.shape[0], dtype=torch.bool, device=x.device) if p is None else p.to(x.device).bool()
            if not bool(p.any()):
                continue
            names.append(name)
            # an absent sample's pixels never enter the encoder (NaN there would leak through weight 0)
            stack.append(x if bool(p.all()) else torch.where(p[:, None, None, None], x, torch.zeros((), dtype=x.dtype, device=x.device)))
            masks.append(p)
        if not names:
            raise ConfigError(f"no modality of {list(self.modalities)} is present in this batch")
        return torch.cat(stack, 0), tuple(names), torch.stack(masks).float()

    def encode(self, encoder: nn.Module, batch: dict[str, Any]) -> tuple[list[torch.Tensor], tuple[str, ...], torch.Tensor]:
        """One batched encoder pass over all present modalities.

        Returns the encoder levels reshaped to ``(M, B, C, h, w)``, the names and presence.
        """
        x, names, present = self.stack_modalities(batch)
        with modality_layout(names):
            levels = encoder(x)
        m = len(names)
        return [f.reshape(m, f.shape[0] // m, *f.shape[1:]) for f in levels], names, present

    @staticmethod
    def mean_fusion(level: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        """Mean of ``(M, B, C, h, w)`` over the modalities present in each sample."""
        w = present / present.sum(0, keepdim=True).clamp(min=1)
        return torch.einsum("mbchw,mb->bchw", level, w)

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """Trainable parameters by group: ``adapters``, ``fusion``, ``heads``."""
        raise NotImplementedError

    def forward(self, batch: dict[str, Any]) -> dict[str, Any]:
        size = next(iter(batch["modalities"].values())).shape[-2:]
        # adapters with an auxiliary loss (Conv-LoRA's gate balance) report it under out["losses"]
        return add_balance_loss(self, self.forward_head(self.forward_features(batch), size))

    def forward_features(self, batch: dict[str, Any]) -> Any:
        raise NotImplementedError

    def forward_head(self, features: Any, size: torch.Size) -> dict[str, Any]:
        raise NotImplementedError

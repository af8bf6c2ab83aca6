"""What every method shares: the one build path, the encode step (input size, stacking, modality
layout), fusing per level, parameter groups."""
from __future__ import annotations

import copy
import fnmatch
from typing import Any, Callable, Sequence

import torch
from torch import nn

from mmsam.adapters import AdapterConfig, add_balance_loss, inject_adapters, modality_layout, with_modalities
from mmsam.backbones import create_backbone, list_backbones, set_grad_checkpointing
from mmsam.data.modalities import get_modality
from mmsam.errors import ConfigError

# family -> (backbone name pattern, name in messages)
_FAMILIES = {"sam": ("sam_vit*", "SAM ViT"), "sam2": ("sam2*", "SAM 2")}


def take_decoder(backbone: nn.Module) -> tuple[nn.Module, nn.Module, Any]:
    """Move SAM's mask decoder out of ``backbone`` (the head owns it); returns it, the prompt encoder and
    SAM 2's ``no_mem_embed`` (``None`` for SAM)."""
    decoder, prompt_encoder = backbone.mask_decoder, backbone.prompt_encoder
    del backbone.mask_decoder
    return decoder, prompt_encoder, getattr(backbone, "no_mem_embed", None)


def sam_decoder_head(num_classes: int) -> Callable[[nn.Module], nn.Module]:
    """Head factory: the backbone's own mask decoder with ``num_classes`` class tokens."""
    from mmsam.heads import SamDecoderHead

    def make(backbone: nn.Module) -> nn.Module:
        decoder, prompt_encoder, no_mem_embed = take_decoder(backbone)
        return SamDecoderHead(decoder, prompt_encoder, num_classes, no_mem_embed=no_mem_embed)

    return make


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

    def build_frozen(
        self,
        backbone: str,
        *,
        img_size: int,
        checkpoint: str | None,
        adapter: AdapterConfig,
        head: Callable[[nn.Module], nn.Module] | None = None,
        head_attr: str = "head",
        family: str | None = None,
        family_why: str = "",
        with_memory: bool = False,
        exact_input_size: bool = False,
    ) -> None:
        """The one build path of every method: frozen backbone, adapter injected, head.

        ``adapter`` is copied and, when modality-aware (MoE-LoRA experts, MMAdapter / MMLoRA
        streams), given one part per modality of this model. ``family`` (``"sam"`` / ``"sam2"``)
        refuses a backbone of the other family before building (``family_why``: the reason, for
        the message). ``head(backbone)`` is called after injection and may take modules out of the
        backbone (SAM's decoder); its result is set as ``self.<head_attr>``. ``exact_input_size``: inputs must be ``img_size`` square
        whatever the family (SAM ViT always needs it). Sets ``self.backbone``,
        ``self.adapter_config``, ``self.adapted_modules`` and ``self.img_size``.
        """
        if family is not None and backbone in list_backbones() and not fnmatch.fnmatchcase(backbone, _FAMILIES[family][0]):
            pattern, label = _FAMILIES[family]
            raise ConfigError(
                f"{type(self).__name__} needs a {label} backbone{f' ({family_why})' if family_why else ''}, got {backbone!r}; "
                f"choose one of {list_backbones(pattern)}"
            )
        adapter = with_modalities(copy.deepcopy(adapter), self.modalities)
        kwargs = {"with_memory": True} if with_memory else {}
        self.backbone = create_backbone(backbone, img_size=img_size, checkpoint=checkpoint, **kwargs)
        self.backbone.requires_grad_(False)
        self.img_size = img_size
        self.exact_input_size = exact_input_size
        self.adapter_config = adapter
        self.adapted_modules = inject_adapters(self.backbone.image_encoder, adapter)
        if head is not None:
            setattr(self, head_attr, head(self.backbone))

    def set_grad_checkpointing(self, enable: bool = True) -> int:
        """Activation checkpointing of the frozen encoder's blocks (training only): about one extra
        encoder forward per step for not storing the blocks' activations. Returns the number of blocks."""
        return set_grad_checkpointing(self.backbone.image_encoder, enable)

    def check_input_size(self, batch: dict[str, Any]) -> None:
        """SAM's absolute position embedding (and SAM 2's memory heads) fix the input size: say so before torch does."""
        size = tuple(next(iter(batch["modalities"].values())).shape[-2:])
        fixed = self.exact_input_size or self.backbone.family == "sam"
        if fixed and size != (self.img_size, self.img_size):
            raise ConfigError(
                f"images are {size[0]}x{size[1]} but {type(self).__name__}'s {_FAMILIES[self.backbone.family][1]} "
                f"encoder was built for img_size={self.img_size}; "
                "set the data's train_size/eval_size (or the task's eval_window) to the model's img_size"
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
        """The shared encode step: input size check, one batched encoder pass over all present modalities.

        The pass runs inside the :class:`~mmsam.adapters.ModalityLayout` of the stacked names and
        their per-sample presence, which modality-aware adapters read. Returns the encoder levels
        reshaped to ``(M, B, C, h, w)``, the names and presence ``(M, B)``.
        """
        self.check_input_size(batch)
        x, names, present = self.stack_modalities(batch)
        with modality_layout(names, present):
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

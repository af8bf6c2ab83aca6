"""SAM 2 / 2.1 backbones: the official ``sam2`` Hiera trunk + FPN neck, prompt encoder and mask decoder.

Reference: Ravi et al., "SAM 2: Segment Anything in Images and Videos", 2024; code
facebookresearch/sam2. Models are built by the official ``sam2.build_sam.build_sam2`` from the
packaged hydra configs (``configs/sam2.1/sam2.1_hiera_t.yaml``…), on CPU (its default device is
"cuda"), without the inference-only decoder post-processing (dynamic multimask fallback), so
train and eval modes compute the same function. Image sizes other than 1024 are a config
override (``++model.image_size``); Hiera interpolates its position embedding itself, so the
checkpoint needs no resizing.

Image-only methods (``with_memory=False``, the default) keep the image encoder, prompt
encoder, mask decoder and ``no_mem_embed`` (added to the stride-16 features of an image
without memory); the memory modules are dropped and their checkpoint keys skipped. With
``with_memory=True`` the whole ``SAM2Base`` stays available as ``sam2_model``.
"""
from __future__ import annotations

import os
from typing import Sequence

import torch
from torch import nn

from mmsam.backbones.checkpoints import (
    check_family,
    describe_state_dict,
    load_checked,
    read_checkpoint,
    sam2_version,
)
from mmsam.backbones.common import check_img_size, normalize_indices, run_capturing
from mmsam.backbones.registry import register_backbone
from mmsam.errors import CheckpointError

STRIDE_MULTIPLE = 32
# module prefixes of Sam2Backbone -> key prefixes in the official file
_FILE_PREFIXES = {"prompt_encoder.": "sam_prompt_encoder.", "mask_decoder.": "sam_mask_decoder."}
_IMAGE_KEYS = ("image_encoder.", "sam_prompt_encoder.", "sam_mask_decoder.", "no_mem_embed")


class Sam2Backbone(nn.Module):
    """A frozen-SAM 2 backbone around an official ``SAM2Base``.

    Attributes:
        family: ``"sam2"``; version: ``"2.0"`` or ``"2.1"``.
        image_encoder: the official ``ImageEncoder`` (Hiera ``trunk`` + ``FpnNeck`` ``neck``).
        prompt_encoder, mask_decoder: ``sam_prompt_encoder`` / ``sam_mask_decoder`` (incl. ``conv_s0``/``conv_s1``).
        no_mem_embed: ``(1, 1, embed_dim)`` embedding SAM 2 adds to the stride-16 level of an image with no memory.
        sam2_model, memory_attention, memory_encoder: the full model and its memory modules
            (``None`` unless built ``with_memory=True``).
        img_size: the model's ``image_size``; embed_dim: 256 for the official sizes;
        feature_strides: ``(4, 8, 16)``; checkpoint: the loaded file, or ``None``.

    ``forward(images (N, 3, H, W))``, H and W multiples of 32, returns the neck's raw
    ``backbone_fpn`` levels ``[(N, embed_dim, H/4, W/4), (…, H/8, W/8), (…, H/16, W/16)]``; the
    decoder's ``conv_s0``/``conv_s1`` and ``no_mem_embed`` are left to the head.
    With ``with_memory=True`` the state dict also lists the shared modules under ``sam2_model.*``.
    """

    family = "sam2"
    feature_strides = (4, 8, 16)

    def __init__(
        self, sam2_model: nn.Module, *, with_memory: bool = False, name: str = "sam2", version: str = "2.1"
    ) -> None:
        super().__init__()
        self.image_encoder = sam2_model.image_encoder
        self.prompt_encoder = sam2_model.sam_prompt_encoder
        self.mask_decoder = sam2_model.sam_mask_decoder
        self.no_mem_embed = sam2_model.no_mem_embed
        self.with_memory = with_memory
        self.sam2_model = sam2_model if with_memory else None
        self.name = name
        self.version = version
        self.img_size: int = sam2_model.image_size
        self.embed_dim: int = sam2_model.hidden_dim
        self.checkpoint: str | None = None
        # file keys of what an image-only backbone drops: expected in a full file, skipped
        self._memory_keys = frozenset(k for k in sam2_model.state_dict() if not k.startswith(_IMAGE_KEYS))

    @property
    def memory_attention(self) -> nn.Module | None:
        return None if self.sam2_model is None else self.sam2_model.memory_attention

    @property
    def memory_encoder(self) -> nn.Module | None:
        return None if self.sam2_model is None else self.sam2_model.memory_encoder

    @property
    def depth(self) -> int:
        """Number of Hiera blocks in the trunk."""
        return len(self.image_encoder.trunk.blocks)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        self._check_input(x)
        return list(self.image_encoder(x)["backbone_fpn"])

    def forward_intermediates(
        self, x: torch.Tensor, indices: Sequence[int]
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """``forward(x)`` plus the outputs of the chosen Hiera blocks (NCHW, at their stage's stride)."""
        self._check_input(x)
        idx = normalize_indices(indices, self.depth, model=self.name)
        out, inter = run_capturing(lambda: self.image_encoder(x), self.image_encoder.trunk.blocks, idx)
        return list(out["backbone_fpn"]), inter

    def load_checkpoint(self, path: str | os.PathLike) -> None:
        """Load an official SAM 2 ``.pt`` (``{"model": …}``) or flat ``.safetensors`` file strictly."""
        sd = read_checkpoint(path)
        check_family(sd, "sam2", path=path, model=self.name)
        full_file = any(k in sd for k in self._memory_keys)
        if full_file and sam2_version(sd) != self.version:
            use = "sam2.1_hiera_*" if sam2_version(sd) == "2.1" else "sam2_hiera_*"
            raise CheckpointError(
                f"checkpoint {path} is a SAM {sam2_version(sd)} checkpoint ({describe_state_dict(sd)}), "
                f"but backbone {self.name!r} is a SAM {self.version} model; use a {use} backbone for this file"
            )
        mine = describe_state_dict(self.image_encoder.state_dict(prefix="image_encoder."), version=self.version)
        theirs = describe_state_dict(sd, version=self.version)
        hint = f"the file holds a {theirs}, the backbone is a {mine}" if theirs != mine else ""
        if self.sam2_model is not None:
            load_checked(self.sam2_model, sd, path=path, model=self.name, hint=hint)
        else:
            load_checked(self, sd, path=path, model=self.name, file_prefixes=_FILE_PREFIXES,
                         ignore=self._memory_keys, hint=hint)
        self.checkpoint = str(path)

    def _check_input(self, x: torch.Tensor) -> None:
        if x.ndim != 4 or x.shape[-2] % STRIDE_MULTIPLE or x.shape[-1] % STRIDE_MULTIPLE:
            raise ValueError(
                f"backbone {self.name!r} needs (N, 3, H, W) images with H and W multiples of {STRIDE_MULTIPLE}, "
                f"got input of shape {tuple(x.shape)}"
            )


def build_sam2_backbone(
    config: str,
    *,
    img_size: int = 1024,
    checkpoint: str | os.PathLike | None = None,
    with_memory: bool = False,
    overrides: Sequence[str] = (),
    name: str = "sam2",
    version: str = "2.1",
) -> Sam2Backbone:
    """Build ``config`` (a packaged sam2 hydra config name) with ``build_sam2`` and load ``checkpoint``.

    ``img_size`` must be a multiple of 32; ``overrides`` are extra hydra overrides
    (``"++model.image_encoder.trunk.embed_dim=16"``…).
    """
    from hydra.core.global_hydra import GlobalHydra
    from sam2.build_sam import build_sam2

    img_size = check_img_size(img_size, STRIDE_MULTIPLE, model=name)
    if not GlobalHydra.instance().is_initialized():  # `import sam2` does this; someone may have cleared it
        from hydra import initialize_config_module

        initialize_config_module("sam2", version_base="1.2")
    model = build_sam2(
        config,
        ckpt_path=None,
        device="cpu",
        mode="eval",
        hydra_overrides_extra=[f"++model.image_size={img_size}", *overrides],
        apply_postprocessing=False,
    )
    backbone = Sam2Backbone(model, with_memory=with_memory, name=name, version=version)
    backbone.eval()
    if checkpoint is not None:
        backbone.load_checkpoint(checkpoint)
    return backbone


def _official(name: str, config: str, version: str):
    def entry(*, img_size: int = 1024, checkpoint: str | None = None, with_memory: bool = False) -> Sam2Backbone:
        return build_sam2_backbone(config, img_size=img_size, checkpoint=checkpoint, with_memory=with_memory,
                                   name=name, version=version)

    entry.__name__ = entry.__qualname__ = name.replace(".", "_").replace("+", "_plus")
    entry.__doc__ = f"SAM {version} Hiera-{name.rsplit('_', 1)[-1].upper()} (official config ``{config}``)."
    return register_backbone(name)(entry)


sam2_1_hiera_t = _official("sam2.1_hiera_t", "configs/sam2.1/sam2.1_hiera_t.yaml", "2.1")
sam2_1_hiera_s = _official("sam2.1_hiera_s", "configs/sam2.1/sam2.1_hiera_s.yaml", "2.1")
sam2_1_hiera_b_plus = _official("sam2.1_hiera_b+", "configs/sam2.1/sam2.1_hiera_b+.yaml", "2.1")
sam2_1_hiera_l = _official("sam2.1_hiera_l", "configs/sam2.1/sam2.1_hiera_l.yaml", "2.1")
sam2_hiera_t = _official("sam2_hiera_t", "configs/sam2/sam2_hiera_t.yaml", "2.0")
sam2_hiera_s = _official("sam2_hiera_s", "configs/sam2/sam2_hiera_s.yaml", "2.0")
sam2_hiera_b_plus = _official("sam2_hiera_b+", "configs/sam2/sam2_hiera_b+.yaml", "2.0")
sam2_hiera_l = _official("sam2_hiera_l", "configs/sam2/sam2_hiera_l.yaml", "2.0")


def _micro_overrides(img_size: int) -> list[str]:
    """SAM 2.1 Hiera-T config shrunk to width 16, stages [1, 1, 2, 1], 32-d neck/decoder/memory."""
    grid = img_size // 16
    ma, me = "++model.memory_attention", "++model.memory_encoder"
    return [
        "++model.image_encoder.trunk.embed_dim=16",
        "++model.image_encoder.trunk.num_heads=1",
        "++model.image_encoder.trunk.stages=[1,1,2,1]",
        "++model.image_encoder.trunk.global_att_blocks=[3]",
        "++model.image_encoder.trunk.window_spec=[4,4,4,2]",
        "++model.image_encoder.trunk.window_pos_embed_bkg_spatial_size=[4,4]",
        "++model.image_encoder.neck.backbone_channel_list=[128,64,32,16]",
        "++model.image_encoder.neck.d_model=32",
        "++model.image_encoder.neck.position_encoding.num_pos_feats=32",
        f"{ma}.d_model=32",
        f"{ma}.num_layers=1",
        f"{ma}.layer.d_model=32",
        f"{ma}.layer.dim_feedforward=64",
        f"{ma}.layer.self_attention.embedding_dim=32",
        f"{ma}.layer.self_attention.feat_sizes=[{grid},{grid}]",
        f"{ma}.layer.cross_attention.embedding_dim=32",
        f"{ma}.layer.cross_attention.kv_in_dim=16",
        f"{ma}.layer.cross_attention.feat_sizes=[{grid},{grid}]",
        f"{me}.in_dim=32",
        f"{me}.out_dim=16",
        f"{me}.position_encoding.num_pos_feats=16",
        f"{me}.mask_downsampler.embed_dim=32",
        f"{me}.fuser.layer.dim=32",
        f"{me}.fuser.num_layers=1",
    ]


@register_backbone
def sam2_hiera_micro(*, img_size: int = 128, checkpoint: str | None = None, with_memory: bool = False) -> Sam2Backbone:
    """A tiny SAM 2.1 of the same classes for tests and the demo.

    Hiera width 16, stages 1-1-2-1 (global attention in block 3), 32-d neck / decoder / memory
    attention, 16-d memories; memory modules work (tested through ``track_step``).
    """
    img_size = check_img_size(img_size, STRIDE_MULTIPLE, model="sam2_hiera_micro")
    return build_sam2_backbone(
        "configs/sam2.1/sam2.1_hiera_t.yaml", img_size=img_size, checkpoint=checkpoint, with_memory=with_memory,
        overrides=_micro_overrides(img_size), name="sam2_hiera_micro", version="2.1",
    )

"""SAM (v1) backbones: the official ``segment_anything`` ViT image encoder, prompt encoder and mask decoder.

Reference: Kirillov et al., "Segment Anything", ICCV 2023; code facebookresearch/segment-anything
(``build_sam.py``). The entry points pass only what differs between sizes (width, depth, heads,
global-attention blocks), as ``build_sam_vit_b/l/h`` do; :func:`build_sam_backbone` fixes the
rest (patch 16, window 14, relative positions, 256-channel neck, 3 multimask outputs) and adds
what the official builder lacks: any image size (a multiple of 16) and a checked loader that
resizes the checkpoint's absolute position embedding (bicubic) and the global blocks'
relative-position tables (linear) to that size.
"""
from __future__ import annotations

import os
from functools import partial
from typing import Sequence

import torch
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, TwoWayTransformer
from torch import nn

from mmsam.backbones.checkpoints import (
    check_family,
    describe_state_dict,
    load_checked,
    read_checkpoint,
    resize_pos_embed,
    resize_rel_pos,
)
from mmsam.backbones.common import check_img_size, normalize_indices, run_capturing
from mmsam.backbones.registry import register_backbone
from mmsam.backbones.sam_attention import set_sam_attention

PATCH_SIZE = 16


class SamBackbone(nn.Module):
    """A frozen-SAM backbone: the official modules, handed in ready-built.

    Attributes:
        family: ``"sam"``.
        image_encoder: the official ``ImageEncoderViT`` (adapters are injected here).
        prompt_encoder, mask_decoder: the official, pretrained ``PromptEncoder`` / ``MaskDecoder``.
        img_size: the square input size the encoder was built for.
        embed_dim: channels of the image embedding (256 for the official sizes).
        feature_strides: ``(16,)``.
        checkpoint: path of the loaded checkpoint file, or ``None`` (random weights).

    ``forward(images (N, 3, img_size, img_size))`` returns ``[image_embedding (N, embed_dim, H/16, W/16)]``.
    Images are expected normalised already (SAM's own mean/std are ImageNet's, on 0–255).
    """

    family = "sam"
    feature_strides = (PATCH_SIZE,)

    def __init__(
        self,
        image_encoder: ImageEncoderViT,
        prompt_encoder: PromptEncoder,
        mask_decoder: MaskDecoder,
        *,
        name: str = "sam",
    ) -> None:
        super().__init__()
        self.image_encoder = image_encoder
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = mask_decoder
        self.name = name
        self.img_size: int = image_encoder.img_size
        self.embed_dim: int = prompt_encoder.embed_dim
        self.checkpoint: str | None = None

    @property
    def depth(self) -> int:
        """Number of transformer blocks in the image encoder."""
        return len(self.image_encoder.blocks)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        self._check_input(x)
        return [self.image_encoder(x)]

    def forward_intermediates(
        self, x: torch.Tensor, indices: Sequence[int]
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """``forward(x)`` plus the outputs of the chosen encoder blocks, each ``(N, width, H/16, W/16)``."""
        self._check_input(x)
        idx = normalize_indices(indices, self.depth, model=self.name)
        emb, inter = run_capturing(lambda: self.image_encoder(x), self.image_encoder.blocks, idx)
        return [emb], inter

    def load_checkpoint(self, path: str | os.PathLike) -> None:
        """Load an official SAM ``.pth`` (or ``.safetensors``) file, resized to ``img_size``, strictly."""
        sd = read_checkpoint(path)
        check_family(sd, "sam", path=path, model=self.name)
        sd = self._fit_to_img_size(sd)
        mine = describe_state_dict(self.state_dict())
        theirs = describe_state_dict(sd)
        hint = f"the file holds a {theirs}, the backbone is a {mine}" if theirs != mine else ""
        load_checked(self, sd, path=path, model=self.name, hint=hint)
        self.checkpoint = str(path)

    def _fit_to_img_size(self, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Resize ``pos_embed`` and global blocks' rel-pos tables where only the token grid differs."""
        sd = dict(state_dict)
        enc = self.image_encoder
        key = "image_encoder.pos_embed"
        if enc.pos_embed is not None and key in sd:
            src, dst = sd[key], enc.pos_embed
            if src.ndim == 4 and src.shape[-1] == dst.shape[-1] and src.shape[1:3] != dst.shape[1:3]:
                sd[key] = resize_pos_embed(src, tuple(dst.shape[1:3]))
        for i, blk in enumerate(enc.blocks):
            if blk.window_size != 0 or not blk.attn.use_rel_pos:
                continue  # a window block's table depends on the window size only
            for axis in ("h", "w"):
                key = f"image_encoder.blocks.{i}.attn.rel_pos_{axis}"
                dst = getattr(blk.attn, f"rel_pos_{axis}")
                src = sd.get(key)
                if src is not None and src.ndim == 2 and src.shape[1] == dst.shape[1] and src.shape[0] != dst.shape[0]:
                    sd[key] = resize_rel_pos(src, dst.shape[0])
        return sd

    def _check_input(self, x: torch.Tensor) -> None:
        if x.ndim != 4 or tuple(x.shape[-2:]) != (self.img_size, self.img_size):
            raise ValueError(
                f"backbone {self.name!r} was built for {self.img_size}x{self.img_size} images "
                f"(its absolute position embedding is fixed), got input of shape {tuple(x.shape)}"
            )


def build_sam_backbone(
    *,
    encoder_embed_dim: int,
    encoder_depth: int,
    encoder_num_heads: int,
    encoder_global_attn_indexes: Sequence[int],
    img_size: int = 1024,
    window_size: int = 14,
    prompt_embed_dim: int = 256,
    decoder_mlp_dim: int = 2048,
    decoder_num_heads: int = 8,
    iou_head_hidden_dim: int = 256,
    checkpoint: str | os.PathLike | None = None,
    name: str = "sam",
) -> SamBackbone:
    """Assemble the official SAM modules for ``img_size`` (a multiple of 16) and load ``checkpoint``.

    The defaults are the official constants of ``segment_anything.build_sam._build_sam``.
    """
    img_size = check_img_size(img_size, PATCH_SIZE, model=name)
    grid = img_size // PATCH_SIZE
    image_encoder = ImageEncoderViT(
        depth=encoder_depth,
        embed_dim=encoder_embed_dim,
        img_size=img_size,
        mlp_ratio=4,
        norm_layer=partial(nn.LayerNorm, eps=1e-6),
        num_heads=encoder_num_heads,
        patch_size=PATCH_SIZE,
        qkv_bias=True,
        use_rel_pos=True,
        global_attn_indexes=tuple(encoder_global_attn_indexes),
        window_size=window_size,
        out_chans=prompt_embed_dim,
    )
    prompt_encoder = PromptEncoder(
        embed_dim=prompt_embed_dim,
        image_embedding_size=(grid, grid),
        input_image_size=(img_size, img_size),
        mask_in_chans=16,
    )
    mask_decoder = MaskDecoder(
        num_multimask_outputs=3,
        transformer=TwoWayTransformer(
            depth=2, embedding_dim=prompt_embed_dim, mlp_dim=decoder_mlp_dim, num_heads=decoder_num_heads
        ),
        transformer_dim=prompt_embed_dim,
        iou_head_depth=3,
        iou_head_hidden_dim=iou_head_hidden_dim,
    )
    backbone = SamBackbone(image_encoder, prompt_encoder, mask_decoder, name=name)
    backbone.eval()
    if checkpoint is not None:
        backbone.load_checkpoint(checkpoint)
    return backbone


@register_backbone
def sam_vit_b(*, img_size: int = 1024, checkpoint: str | None = None) -> SamBackbone:
    """SAM ViT-B (official ``sam_vit_b_01ec64.pth``)."""
    return build_sam_backbone(
        encoder_embed_dim=768, encoder_depth=12, encoder_num_heads=12, encoder_global_attn_indexes=(2, 5, 8, 11),
        img_size=img_size, checkpoint=checkpoint, name="sam_vit_b",
    )


@register_backbone
def sam_vit_l(*, img_size: int = 1024, checkpoint: str | None = None) -> SamBackbone:
    """SAM ViT-L (official ``sam_vit_l_0b3195.pth``)."""
    return build_sam_backbone(
        encoder_embed_dim=1024, encoder_depth=24, encoder_num_heads=16, encoder_global_attn_indexes=(5, 11, 17, 23),
        img_size=img_size, checkpoint=checkpoint, name="sam_vit_l",
    )


@register_backbone
def sam_vit_h(*, img_size: int = 1024, checkpoint: str | None = None) -> SamBackbone:
    """SAM ViT-H (official ``sam_vit_h_4b8939.pth``)."""
    return build_sam_backbone(
        encoder_embed_dim=1280, encoder_depth=32, encoder_num_heads=16, encoder_global_attn_indexes=(7, 15, 23, 31),
        img_size=img_size, checkpoint=checkpoint, name="sam_vit_h",
    )


@register_backbone
def sam_vit_tiny(*, img_size: int = 128, checkpoint: str | None = None) -> SamBackbone:
    """A tiny SAM of the same classes (2 blocks, width 32, 32-channel neck and decoder) for tests and the demo."""
    return build_sam_backbone(
        encoder_embed_dim=32, encoder_depth=2, encoder_num_heads=2, encoder_global_attn_indexes=(1,),
        img_size=img_size, window_size=4, prompt_embed_dim=32, decoder_mlp_dim=64, decoder_num_heads=2,
        iou_head_hidden_dim=32, checkpoint=checkpoint, name="sam_vit_tiny",
    )

"""Frozen SAM / SAM 2 backbones built from the official packages, by name.

``create_backbone("sam_vit_b", img_size=512, checkpoint="sam_vit_b_01ec64.pth")``;
``list_backbones("sam2.1_*")``. Importing this package registers every entry point.
"""
from mmsam.backbones import sam, sam2  # noqa: F401  (registers the entry points)
from mmsam.backbones.checkpoints import read_checkpoint, sha256_of
from mmsam.backbones.grad_checkpointing import set_grad_checkpointing
from mmsam.backbones.registry import create_backbone, list_backbones, register_backbone
from mmsam.backbones.sam import SamBackbone, build_sam_backbone
from mmsam.backbones.sam2 import Sam2Backbone, build_sam2_backbone

__all__ = [
    "Sam2Backbone", "SamBackbone", "build_sam2_backbone", "build_sam_backbone", "create_backbone",
    "list_backbones", "read_checkpoint", "register_backbone", "set_grad_checkpointing", "sha256_of",
]

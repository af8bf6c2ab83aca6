"""Fusion of per-modality features."""
from mmsam.fusion.dfm import DeepFusionModule, SEUnit
from mmsam.fusion.router import ModalityRouter

__all__ = ["DeepFusionModule", "ModalityRouter", "SEUnit"]

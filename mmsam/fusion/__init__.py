"""Fusion of per-modality features."""
from mmsam.fusion.router import ModalityRouter

__all__ = ["ModalityRouter"]

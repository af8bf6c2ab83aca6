"""Methods: backbone + adapters + fusion + head, built from a config by name."""
from mmsam.methods.base import SegmentationMethod
from mmsam.methods.registry import create_method, list_methods, register_method
from mmsam.methods.conv_lora_sam import ConvLoRASAM
from mmsam.methods.mlesam import MLESAM
from mmsam.methods.mfnet import MFNet
from mmsam.methods.memorysam import MemorySAM
from mmsam.methods.sam_lora import SamLoRA

__all__ = ["MLESAM", "SamLoRA", "SegmentationMethod", "create_method", "list_methods", "register_method"]

"""Methods: backbone + adapters + fusion + head (configs name the class: ``class_path: mmsam.methods.SamLoRA``)."""
from mmsam.methods.base import SegmentationMethod
from mmsam.methods.conv_lora_sam import ConvLoRASAM
from mmsam.methods.mlesam import MLESAM
from mmsam.methods.mfnet import MFNet
from mmsam.methods.memorysam import MemorySAM
from mmsam.methods.sam_lora import SamLoRA

__all__ = ["ConvLoRASAM", "MFNet", "MLESAM", "MemorySAM", "SamLoRA", "SegmentationMethod"]

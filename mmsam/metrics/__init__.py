from mmsam.metrics.binary import BinarySegmentationMetrics
from mmsam.metrics.segmentation import SegmentationMetrics

__all__ = ["BinarySegmentationMetrics", "SegmentationMetrics"]

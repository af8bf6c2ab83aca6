from mmsam.metrics.segmentation import SegmentationMetrics

__all__ = ["SegmentationMetrics"]

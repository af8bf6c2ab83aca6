from mmsam.metrics.binary import BinaryScore, BinarySegmentationMetrics, binary_scores
from mmsam.metrics.segmentation import SegmentationMetrics, SegmentationScore, segmentation_scores

__all__ = ["BinaryScore", "BinarySegmentationMetrics", "SegmentationMetrics", "SegmentationScore", "binary_scores", "segmentation_scores"]

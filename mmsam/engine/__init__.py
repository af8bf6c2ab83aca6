from mmsam.engine.prediction_writer import ColorMaskWriter, colorize
from mmsam.engine.task import SegmentationTask

__all__ = ["ColorMaskWriter", "SegmentationTask", "colorize"]

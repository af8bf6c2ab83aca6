from mmsam.engine.evaluation import Evaluation
from mmsam.engine.prediction_writer import ColorMaskWriter, colorize
from mmsam.engine.rank_sync import RankSyncCheck
from mmsam.engine.task import SegmentationTask

__all__ = ["ColorMaskWriter", "Evaluation", "RankSyncCheck", "SegmentationTask", "colorize"]

from mmsam.losses.mask_classification import (
    MaskClassificationLoss,
    balanced_bce_loss,
    linear_sum_assignment,
    semantic_inference,
    structure_loss,
)
from mmsam.losses.ohem_ce import OhemCrossEntropy, build_loss

__all__ = ["OhemCrossEntropy", "build_loss"]
__all__ += ["MaskClassificationLoss", "balanced_bce_loss", "linear_sum_assignment", "semantic_inference", "structure_loss"]

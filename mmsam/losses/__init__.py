from mmsam.losses.ohem_ce import OhemCrossEntropy, build_loss

__all__ = ["OhemCrossEntropy", "build_loss"]

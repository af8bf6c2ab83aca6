"""Using a trained model: model folders, the Python predictor, folder prediction, merged export."""
from mmsam.deploy.model_folder import build_task, export_model, read_model_folder
from mmsam.deploy.predictor import Prediction, Predictor, load

__all__ = ["Prediction", "Predictor", "build_task", "export_model", "load", "read_model_folder"]

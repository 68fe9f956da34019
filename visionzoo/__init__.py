"""visionzoo: a PyTorch vision model zoo (classifiers, detectors, segmenters, trackers, generative models).

Notebook API:
    visionzoo.list_models("resnet*")
    visionzoo.create_model("resnet18", weights="shapes")
    visionzoo.model_info("vgg16")
"""
from visionzoo.factory import create_model
from visionzoo.registry import list_models, model_info, register_model

__all__ = ["create_model", "list_models", "model_info", "register_model"]
__version__ = "0.1.0"

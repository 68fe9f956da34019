"""visionzoo: a PyTorch vision model zoo (classifiers, detectors, segmenters, trackers, generative models).

Notebook API:
    visionzoo.list_models("resnet*")
    visionzoo.create_model("resnet18", weights="shapes")
    visionzoo.model_info("vgg16")
    visionzoo.extract_features("resnet18", images, weights="shapes")   # (N, 512) L2-normalised features
    visionzoo.Detector("mask_rcnn_resnet18_fpn", weights="shapes")("image.png")
    visionzoo.Segmenter("fcn4s_resnet18", weights="shapes", crf=True)("image.png")
    tracker = visionzoo.create_tracker("siamfc_alexnet", weights="shapes"); tracker.init(frame, box)
"""
from visionzoo.factory import create_model
from visionzoo.features import extract_features
from visionzoo.predict import Detections, Detector, Segmentation, Segmenter
from visionzoo.registry import list_models, model_info, register_model
from visionzoo.tracking import create_tracker, track_sequence

__all__ = ["Detections", "Detector", "Segmentation", "Segmenter", "create_model", "create_tracker", "extract_features",
           "list_models", "model_info", "register_model", "track_sequence"]
__version__ = "0.1.0"

"""visionzoo: a PyTorch vision model zoo (classifiers, detectors, segmenters, trackers, generative models).

Notebook API:
    visionzoo.list_models("resnet*")
    visionzoo.create_model("resnet18", weights="shapes")
    visionzoo.model_info("vgg16")
    visionzoo.extract_features("resnet18", images, weights="shapes")   # (N, 512) L2-normalised features
    visionzoo.Classifier("resnet18", weights="shapes")("image.png")     # top-k labels and scores
    visionzoo.Detector("mask_rcnn_resnet18_fpn", weights="shapes")("image.png")
    visionzoo.Segmenter("fcn4s_resnet18", weights="shapes", crf=True)("image.png")
    tracker = visionzoo.create_tracker("siamfc_alexnet", weights="shapes"); tracker.init(frame, box)
    seq = visionzoo.read_sequence("GOT-10k_Val_000001"); visionzoo.track_sequence(tracker, seq, seq.boxes[0])
"""
import visionzoo.models  # noqa: F401  (its architecture files fill the registry)
from visionzoo.datasets.sequences import read_sequence
from visionzoo.factory import create_model
from visionzoo.features import extract_features
from visionzoo.predict import Classification, Classifier, Detections, Detector, Segmentation, Segmenter
from visionzoo.registry import list_models, model_info, register_model
from visionzoo.tracking import create_tracker, track_sequence

__all__ = ["Classification", "Classifier", "Detections", "Detector", "Segmentation", "Segmenter", "create_model",
           "create_tracker", "extract_features", "list_models", "model_info", "read_sequence", "register_model",
           "track_sequence"]
__version__ = "0.1.0"

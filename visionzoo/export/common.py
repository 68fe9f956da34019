"""Names shared by the export modules."""
from __future__ import annotations

FORMATS = {"onnx": ".onnx", "torchscript": ".torchscript.pt", "export": ".pt2"}
FORMAT_NAMES = {"onnx": "ONNX", "torchscript": "TorchScript", "export": "torch.export"}
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
LEGACY_OPSET = 17  # the TorchScript-based ONNX exporter's default; torchvision's detectors need >= 11


class ExportError(ValueError):
    """A model that cannot be exported in the asked format, or an export that does not match PyTorch."""



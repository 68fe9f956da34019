"""Feature extractors for FID / KID, all offline: weights come from local files only.

Every extractor is an `nn.Module` with
  * `name`: exactly what it is (architecture, layer, weights file); report it next to every score,
    because scores from different extractors are not comparable,
  * `dim`: feature dimension,
  * `comparable_to_published`: True only for the weights published FIDs are computed with,
  * `forward(images) -> (B, dim)` float32 features for float images in [0, 1] of shape (B, C, H, W),
    C = 1 or 3 (grayscale is repeated to 3), any H, W (resized inside, bilinear with antialiasing).

Extractors stay in eval mode (`.train()` is a no-op) and run without gradients.

Inception weights are never downloaded. Two files are understood:
  * torchvision's `inception_v3_google-0cc3c7bd.pth` (IMAGENET1K_V1),
  * pytorch-fid's `pt_inception-2015-12-05-6726825d.pth`, the TF Inception port behind published FIDs;
    it needs TF's pooling variants of some Inception blocks (implemented below).
"""
from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torchvision.models.inception import InceptionA, InceptionC, InceptionE

from visionzoo.factory import create_model
from visionzoo.registry import get_entry
from visionzoo.weights import read_state_dict, strip_prefixes

__all__ = [
    "INCEPTION_ENV_VAR",
    "DEFAULT_FALLBACK_SPEC",
    "FeatureExtractor",
    "InceptionFeatures",
    "ZooClassifierFeatures",
    "build_feature_extractor",
    "extract_features",
]

INCEPTION_ENV_VAR = "VISIONZOO_INCEPTION_WEIGHTS"
DEFAULT_FALLBACK_SPEC = "zoo:resnet18:shapes"

TORCHVISION_INCEPTION_FILE = "inception_v3_google-0cc3c7bd.pth"
TORCHVISION_INCEPTION_URL = "https://download.pytorch.org/models/inception_v3_google-0cc3c7bd.pth"
PYTORCH_FID_INCEPTION_FILE = "pt_inception-2015-12-05-6726825d.pth"
PYTORCH_FID_INCEPTION_URL = (
    "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth"
)
# Both file names carry the first 8 hex digits of the file's sha256 (torch.hub's convention).
_TORCHVISION_SHA256_PREFIX = "0cc3c7bd"
_PYTORCH_FID_SHA256_PREFIX = "6726825d"

_SPEC_FORMS = (
    "None (the env var VISIONZOO_INCEPTION_WEIGHTS if set, else 'zoo:resnet18:shapes'), "
    "'inception:<path to weights file>', a path to an Inception weights file (.pth/.pt/.safetensors), "
    "or 'zoo:<model>:<weights tag>' (e.g. 'zoo:resnet18:shapes')"
)
_WEIGHT_SUFFIXES = (".pth", ".pt", ".safetensors")


class FeatureExtractor(nn.Module):
    """Base class: input checks, grayscale -> RGB, resizing; subclasses implement `_features`."""

    name: str
    dim: int
    comparable_to_published: bool = False
    channels: int = 3  # what the network takes: grey images are repeated to 3 channels, or stay 1 for 1-channel nets

    def __init__(self, input_size: tuple[int, int]):
        super().__init__()
        self.input_size = (int(input_size[0]), int(input_size[1]))

    def train(self, mode: bool = True):
        # BatchNorm running statistics must never change while extracting features.
        return super().train(False)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def _prepare(self, images: torch.Tensor) -> torch.Tensor:
        if not isinstance(images, torch.Tensor):
            raise TypeError(f"{self.name}: expected a torch.Tensor of images, got {type(images).__name__}")
        if images.ndim != 4 or images.shape[1] not in (1, 3):
            raise ValueError(
                f"{self.name}: expected images of shape (B, C, H, W) with C = 1 or 3, got {tuple(images.shape)}"
            )
        if images.dtype == torch.uint8:
            images = images.float() / 255.0
        elif not images.is_floating_point():
            raise TypeError(f"{self.name}: expected float images in [0, 1] (or uint8), got dtype {images.dtype}")
        images = images.to(self.device, torch.float32)
        if not torch.isfinite(images).all():
            raise ValueError(f"{self.name}: the images contain NaN or Inf")
        if images.numel():
            lo, hi = float(images.min()), float(images.max())
            if lo < -1e-3 or hi > 1 + 1e-3:
                raise ValueError(
                    f"{self.name}: expected images in [0, 1], got values in [{lo:.4g}, {hi:.4g}]"
                    + (" (generator outputs in [-1, 1] must be mapped with (x + 1) / 2 first)" if lo < 0 else "")
                )
        if images.shape[1] != self.channels:
            if self.channels == 1:
                raise ValueError(f"{self.name}: takes grey images (B, 1, H, W), got {images.shape[1]} channels")
            images = images.expand(-1, 3, -1, -1)
        if tuple(images.shape[-2:]) != self.input_size:
            images = F.interpolate(images, size=self.input_size, mode="bilinear", align_corners=False,
                                   antialias=True)
        return images

    def _features(self, images: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        images = self._prepare(images)
        # Always float32, also inside a training run's bf16/fp16 autocast: FID's covariances amplify the
        # rounding of half-precision features.
        with torch.autocast(device_type=images.device.type, enabled=False):
            features = self._features(images)
        return features.reshape(features.shape[0], -1).float()

    def extra_repr(self) -> str:
        return f"name={self.name!r}, dim={self.dim}"


# --- TF (FID) Inception blocks -------------------------------------------------------------------------
# The TF Inception graph that published FIDs use differs from torchvision's Inception in its pooling
# branches: TF's average pooling ignores the zero padding (count_include_pad=False) in the A, C and first
# E blocks, and the last E block (Mixed_7c) max-pools there instead. Everything else is identical, so the
# blocks reuse torchvision's layers and only redefine `_forward`.


def _tf_avg_pool(x: torch.Tensor) -> torch.Tensor:
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


def _tf_max_pool(x: torch.Tensor) -> torch.Tensor:
    return F.max_pool2d(x, kernel_size=3, stride=1, padding=1)


class _TFInceptionA(InceptionA):
    def _forward(self, x):
        return [
            self.branch1x1(x),
            self.branch5x5_2(self.branch5x5_1(x)),
            self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
            self.branch_pool(_tf_avg_pool(x)),
        ]


class _TFInceptionC(InceptionC):
    def _forward(self, x):
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        b7dbl = x
        for layer in (self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4,
                      self.branch7x7dbl_5):
            b7dbl = layer(b7dbl)
        return [self.branch1x1(x), b7, b7dbl, self.branch_pool(_tf_avg_pool(x))]


class _TFInceptionE(InceptionE):
    def __init__(self, in_channels: int, max_pool: bool):
        super().__init__(in_channels)
        self.max_pool = max_pool

    def _forward(self, x):
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        b3dbl = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        b3dbl = torch.cat([self.branch3x3dbl_3a(b3dbl), self.branch3x3dbl_3b(b3dbl)], 1)
        pooled = _tf_max_pool(x) if self.max_pool else _tf_avg_pool(x)
        return [self.branch1x1(x), b3, b3dbl, self.branch_pool(pooled)]


def _fid_inception_v3() -> torchvision.models.Inception3:
    """torchvision's Inception-v3 with the TF graph's blocks: 1008 classes (TF's label set), no aux head."""
    model = torchvision.models.inception_v3(weights=None, aux_logits=False, init_weights=False,
                                            num_classes=1008, transform_input=False)
    model.Mixed_5b = _TFInceptionA(192, pool_features=32)
    model.Mixed_5c = _TFInceptionA(256, pool_features=64)
    model.Mixed_5d = _TFInceptionA(288, pool_features=64)
    model.Mixed_6b = _TFInceptionC(768, channels_7x7=128)
    model.Mixed_6c = _TFInceptionC(768, channels_7x7=160)
    model.Mixed_6d = _TFInceptionC(768, channels_7x7=160)
    model.Mixed_6e = _TFInceptionC(768, channels_7x7=192)
    model.Mixed_7b = _TFInceptionE(1280, max_pool=False)
    model.Mixed_7c = _TFInceptionE(2048, max_pool=True)
    return model


def _sha256_prefix(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()[:8]


def _missing_inception_message(path) -> str:
    return (
        f"Inception weights file not found: {path}. FID/KID with Inception features needs a local copy of "
        f"torchvision's {TORCHVISION_INCEPTION_FILE} ({TORCHVISION_INCEPTION_URL}) or pytorch-fid's "
        f"{PYTORCH_FID_INCEPTION_FILE} ({PYTORCH_FID_INCEPTION_URL}; the weights published FIDs use). "
        f"Nothing is downloaded: put the file anywhere and point the config key eval.fid_features "
        f"('inception:/path/to/file') or the environment variable {INCEPTION_ENV_VAR} at it."
    )


class InceptionFeatures(FeatureExtractor):
    """Inception-v3 pool3 features (2048-d, the global average pool before the classifier), 299x299 input.

    `weights_path`: torchvision's IMAGENET1K_V1 file or pytorch-fid's FID-Inception file (or any
    state dict with either layout, e.g. re-saved as .safetensors); the layout is detected from the keys
    (1000 vs 1008 classes) and named in `.name`. `.pth`/`.pt` files are read with
    `torch.load(weights_only=True)`, never by unpickling arbitrary objects.
    """

    def __init__(self, weights_path: str | os.PathLike):
        super().__init__((299, 299))
        path = Path(weights_path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(_missing_inception_message(path))
        state = strip_prefixes(read_state_dict(path))
        fc = state.get("fc.weight")
        if fc is None or fc.ndim != 2 or fc.shape[1] != 2048 or fc.shape[0] not in (1000, 1008):
            found = "no fc.weight" if fc is None else f"fc.weight of shape {tuple(fc.shape)}"
            raise ValueError(
                f"{path}: not an Inception-v3 state dict ({found}; expected fc.weight of shape (1000, 2048) "
                f"for torchvision's {TORCHVISION_INCEPTION_FILE} or (1008, 2048) for pytorch-fid's "
                f"{PYTORCH_FID_INCEPTION_FILE})"
            )
        sha = _sha256_prefix(path)
        if fc.shape[0] == 1008:
            self.kind = "pytorch-fid"
            model = _fid_inception_v3()
            official = sha == _PYTORCH_FID_SHA256_PREFIX
            source = ("pytorch-fid FID-Inception, TF inception-2015-12-05 port" if official
                      else "pytorch-fid FID-Inception layout, not the published file")
        else:
            self.kind = "torchvision"
            # transform_input=False: forward() feeds 2x - 1 itself (see _features).
            model = torchvision.models.inception_v3(weights=None, aux_logits="AuxLogits.fc.weight" in state,
                                                    init_weights=False, transform_input=False)
            official = sha == _TORCHVISION_SHA256_PREFIX
            source = ("torchvision IMAGENET1K_V1" if official
                      else "torchvision inception_v3 layout, not the IMAGENET1K_V1 file")
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as e:
            raise ValueError(f"{path}: does not fit the {self.kind} Inception-v3 layout: {e}") from None
        model.fc = nn.Identity()
        self.model = model.eval()
        self.dim = 2048
        self.weights_path = str(path)
        self.sha256_prefix = sha
        # Published FIDs use the TF Inception (pytorch-fid's file); torchvision's weights give other values.
        self.comparable_to_published = self.kind == "pytorch-fid" and official
        self.name = f"inception_v3 pool3 2048-d ({source}; file {path.name}, sha256 {sha})"
        self.requires_grad_(False)

    def _features(self, images):
        # Both weight sets expect inputs in [-1, 1]: the TF port natively, and torchvision's IMAGENET1K_V1
        # through transform_input=True, which maps ImageNet-normalised input (x - mean) / std to exactly 2x - 1.
        return self.model(images * 2.0 - 1.0)


class ZooClassifierFeatures(FeatureExtractor):
    """Penultimate (global-pooled) features of a visionzoo classifier, e.g. ResNet-18 trained on shapes.

    The weights' `pretrained_cfg` gives the input size and normalisation. Useful offline and for
    in-domain data, but its scores are NOT comparable to published (Inception) FIDs.
    """

    def __init__(self, model_name: str = "resnet18", weights: str = "shapes"):
        entry = get_entry(model_name)
        if entry.task != "classification" or len(entry.head_prefixes) != 1:
            raise ValueError(
                f"ZooClassifierFeatures needs a classifier with one head layer, got {model_name!r} "
                f"(task {entry.task!r}, head {entry.head_prefixes})"
            )
        if weights is None:
            raise ValueError(f"ZooClassifierFeatures({model_name!r}): weights are required; random features "
                             f"would make FID meaningless")
        model = create_model(model_name, weights=weights)
        cfg = getattr(model, "pretrained_cfg", {})
        missing = [k for k in ("input_size", "mean", "std") if not cfg.get(k)]
        if missing:
            raise ValueError(f"{model_name} weights {weights!r}: the model card lacks {missing}; cannot normalise")
        channels, height, width = cfg["input_size"]
        # the normalisation has one value per input channel (a grey classifier's card may still say 3 channels)
        channels = len(cfg["mean"]) if len(cfg["mean"]) == len(cfg["std"]) else channels
        if channels not in (1, 3):
            raise ValueError(f"{model_name} weights {weights!r}: expected a 1- or 3-channel classifier, got {channels}")
        super().__init__((height, width))
        self.channels = channels

        # Drop the head: the registry names it by its state-dict prefix, e.g. "fc." or "classifier.6.".
        head_name = entry.head_prefixes[0].rstrip(".")
        parent_name, _, attr = head_name.rpartition(".")
        parent = model.get_submodule(parent_name)
        head = getattr(parent, attr)
        if not isinstance(head, nn.Linear):
            raise ValueError(f"{model_name}: expected a Linear head at {head_name}, got {type(head).__name__}")
        setattr(parent, attr, nn.Identity())  # also works for nn.Sequential children ("classifier.6")
        self.model = model.eval()
        self.head = head.eval()  # head(features) = the classifier's logits (e.g. a conditional GAN's accuracy)
        self.class_names = list(cfg.get("class_names") or [])
        self.dim = head.in_features
        self.register_buffer("mean", torch.tensor(cfg["mean"], dtype=torch.float32).view(1, channels, 1, 1))
        self.register_buffer("std", torch.tensor(cfg["std"], dtype=torch.float32).view(1, channels, 1, 1))
        tag = Path(str(weights)).stem if os.sep in str(weights) else str(weights)
        file_name = Path(cfg.get("file", "")).name or "?"
        self.name = (f"{model_name}.{tag} (visionzoo classifier, weights {file_name}, "
                     f"{self.dim}-d pooled penultimate features)")
        self.requires_grad_(False)

    def _features(self, images):
        return self.model((images - self.mean) / self.std)


def build_feature_extractor(spec=None, device: str | torch.device = "cpu") -> FeatureExtractor:
    """The extractor for `spec` (see `_SPEC_FORMS`), on `device`.

    With spec None, Inception weights named by the environment variable VISIONZOO_INCEPTION_WEIGHTS are
    used when it is set, else the offline fallback 'zoo:resnet18:shapes' (label its scores accordingly).
    """
    if isinstance(spec, FeatureExtractor):
        return spec.to(device)
    if spec is None:
        env = os.environ.get(INCEPTION_ENV_VAR, "").strip()
        spec = f"inception:{env}" if env else DEFAULT_FALLBACK_SPEC
    if isinstance(spec, os.PathLike):
        return InceptionFeatures(spec).to(device)
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"unknown feature extractor spec {spec!r}; accepted forms: {_SPEC_FORMS}")
    spec = spec.strip()
    if spec.startswith("inception:"):
        path = spec[len("inception:"):]
        if not path:
            raise ValueError(f"feature extractor spec {spec!r} names no file; expected 'inception:<path>'")
        return InceptionFeatures(path).to(device)
    if spec.startswith("zoo:"):
        parts = spec.split(":", 2)  # the weights tag may itself contain ':' (torchvision:IMAGENET1K_V1)
        if len(parts) != 3 or not parts[1] or not parts[2]:
            raise ValueError(f"feature extractor spec {spec!r}: expected 'zoo:<model>:<weights tag>', "
                             f"e.g. 'zoo:resnet18:shapes'")
        return ZooClassifierFeatures(parts[1], parts[2]).to(device)
    if spec.lower().endswith(_WEIGHT_SUFFIXES) or Path(spec).expanduser().is_file():
        return InceptionFeatures(spec).to(device)
    raise ValueError(f"unknown feature extractor spec {spec!r}; accepted forms: {_SPEC_FORMS}")


def extract_features(
    extractor: FeatureExtractor,
    images: torch.Tensor | Iterable,
    batch_size: int = 64,
    device: str | torch.device | None = None,
) -> torch.Tensor:
    """(N, dim) float32 CPU features of `images`: one (N, C, H, W) tensor, split into batches of
    `batch_size`, or an iterable of batches (tensors, or (images, ...) tuples as a DataLoader yields)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if device is not None:
        extractor = extractor.to(device)
    batches = images.split(batch_size) if isinstance(images, torch.Tensor) else images
    out = []
    for batch in batches:
        if isinstance(batch, (tuple, list)):
            batch = batch[0]
        out.append(extractor(batch).cpu())
    if not out:
        raise ValueError("extract_features: no images were given")
    return torch.cat(out)

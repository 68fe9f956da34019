"""What is exported for each kind of model: the module to trace, example inputs, input and output names."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from visionzoo.datasets.write_shapes_scenes import make_scene
from visionzoo.engine.targets import build_target_model, load_target
from visionzoo.export.common import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ExportError,
)
from visionzoo.factory import create_model
from visionzoo.registry import get_entry

# ---- loading ------------------------------------------------------------------------------------------------


@dataclass
class LoadedModel:
    model: nn.Module
    name: str  # registry name
    task: str
    meta: dict  # class names, input size, normalisation (model card / checkpoint meta / pretrained_cfg)
    source: str  # where the weights came from ("random init" when none)
    stem: str  # default output file name


def load_model(target: str, weights: str | None = None) -> LoadedModel:
    """A weights file, run directory or checkpoint through evaluate.py's `load_target`, else a registered
    model name through `create_model` (random init unless `weights`)."""
    path = Path(target)
    if path.exists():
        if weights is not None:
            raise ExportError(f"--weights {weights} given with {target}: a file or run directory brings its own "
                              "weights; --weights goes with a registered model name")
        loaded = load_target(path)
        cfg, meta = loaded.cfg, dict(loaded.meta)
        model = build_target_model(loaded, cfg)
        stem = path.name if path.is_dir() else (path.name[: -len(".safetensors")] if path.suffix == ".safetensors"
                                                else cfg.model.name)
        return LoadedModel(model.eval(), cfg.model.name, cfg.task, meta, str(loaded.weights), stem)
    if os.sep in target or target.endswith((".safetensors", ".pt", ".pth")):
        raise FileNotFoundError(f"{target}: no such weights file or run directory")
    try:
        entry = get_entry(target)
    except ValueError as e:
        raise ExportError(f"{target} is neither a weights file, a run directory nor a registered model name: {e}") \
            from None
    model = create_model(target, weights=weights)
    meta = dict(model.pretrained_cfg)
    source = meta.get("file") or "random init"
    stem = f"{target}.{weights}" if weights and not Path(weights).exists() else target
    return LoadedModel(model.eval(), target, entry.task, meta, source, stem)


# ---- what is exported: one module, example inputs and names per kind of model --------------------------------


@dataclass
class ExportSpec:
    module: nn.Module  # what gets exported (the model or a thin wrapper with tensor inputs and outputs)
    inputs: tuple  # example inputs the export traces with
    input_names: list[str]
    output_names: list[str]
    check_inputs: list[tuple]  # the inputs the saved file is compared on (the example first)
    reference: object  # callable giving the PyTorch outputs for an input tuple (the model's own API)
    batch_inputs: list[int] = field(default_factory=list)  # which inputs have a batch axis 0 (--dynamic-batch)
    # axes that always vary, {input index: {axis: name}}: proposal / RoI counts, SiamFC's crop sizes
    variable_axes: dict[int, dict[int, str]] = field(default_factory=dict)
    onnx_exporter: str = "dynamo"
    script: bool = False  # TorchScript by scripting (data-dependent control flow) instead of tracing
    allows_batch: bool = True
    card: dict = field(default_factory=dict)  # input/output descriptions and extra facts for the JSON card
    hint: str = ""  # said when an export fails


def as_tuple(out) -> tuple:
    if isinstance(out, torch.Tensor):
        return (out,)
    if isinstance(out, dict):
        return tuple(out.values())
    return tuple(out)


class DictOutputs(nn.Module):
    """A model returning {"out": ..., "aux": ...} as a tuple, so the outputs can be named in the export."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor):
        return tuple(self.model(images).values())


class BoxDetector(nn.Module):
    """One image (3, H, W) in [0, 1] -> boxes (N, 4) XYXY, labels (N,), scores (N,): torchvision's detection
    models take a list of images and return a list of dicts, which neither ONNX nor torch.export has."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def detect(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        if torch.jit.is_scripting():  # scripted detectors always return (losses, detections)
            return self.model([image])[1][0]
        return self.model([image])[0]

    def forward(self, image: torch.Tensor):
        d = self.detect(image)
        return d["boxes"], d["labels"], d["scores"]


class MaskDetector(BoxDetector):
    def forward(self, image: torch.Tensor):
        d = self.detect(image)
        return d["boxes"], d["labels"], d["scores"], d["masks"]


class ProposalDetector(nn.Module):
    """Fast R-CNN on one image and its proposals (P, 4) XYXY in the image's pixels."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor, proposals: torch.Tensor):
        d = self.model([image], proposals=[proposals])[0]
        return d["boxes"], d["labels"], d["scores"]


class Embedding(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor):
        return self.model.embed(images)


class RoIEmbedding(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor, rois: torch.Tensor):
        return self.model(images, rois)


def _one_hot(labels: torch.Tensor, num_classes: int, dtype: torch.dtype) -> torch.Tensor:
    # A comparison instead of F.one_hot and the models' label checks: both read label values (data-dependent),
    # which torch.export cannot trace. The check against the model's own API still covers this path.
    return (labels.long()[:, None] == torch.arange(num_classes, device=labels.device)).to(dtype)


class GeneratorExport(nn.Module):
    """A GAN's generator: z (B, latent) [+ labels (B,) int64] -> images in [-1, 1]."""

    def __init__(self, gan: nn.Module):
        super().__init__()
        self.generator, self.num_classes = gan.generator, gan.num_classes

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None):
        if self.num_classes is None:
            return self.generator(z)
        return torch.tanh(self.generator.body(torch.cat([z, _one_hot(labels, self.num_classes, z.dtype)], 1)))


class DecoderExport(nn.Module):
    """A VAE's decoder: z (B, latent) [+ labels] -> the mean image in [0, 1]."""

    def __init__(self, vae: nn.Module):
        super().__init__()
        self.vae = vae

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None):
        if self.vae.num_classes is None:
            return self.vae.decode(z)
        z = torch.cat([z, _one_hot(labels, self.vae.num_classes, z.dtype)], 1)
        return torch.sigmoid(self.vae.decoder(z).reshape(z.shape[0], *self.vae.image_shape))


def _images(n: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    """Shapes scenes in [0, 1] as check inputs: real image statistics (so trained models give real outputs
    and detectors real boxes), deterministic, rendered in memory."""
    size = max(height, width)
    out = []
    for i in range(n):
        image, _, _ = make_scene(1000 + seed * 97 + i, image_size=size)
        out.append(torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).permute(2, 0, 1)[:, :height, :width])
    return torch.stack(out)


def _normalise(images: torch.Tensor, mean, std) -> torch.Tensor:
    return (images - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(std).view(1, -1, 1, 1)


def _hw(input_size, default) -> tuple[int, int]:
    size = list(input_size or default)
    if len(size) == 3:
        size = size[1:]
    if len(size) == 1:
        size = size * 2
    if len(size) != 2 or min(size) < 1:
        raise ExportError(f"--input-size {' '.join(map(str, input_size or default))}: expected S, H W or C H W "
                          "with positive sizes")
    return int(size[0]), int(size[1])


def _batches(batch: int, dynamic: bool) -> tuple[int, list[int]]:
    """The traced batch and the batches checked. A dynamic batch is traced at >= 2 (torch.export fixes
    sizes 0 and 1 as constants) and checked at a second size, which proves the axis really varies."""
    if batch < 1:
        raise ExportError(f"--batch {batch}: expected a positive batch size")
    if not dynamic:
        return batch, [batch]
    traced = max(batch, 2)
    return traced, [traced, traced + 1]


def build_spec(loaded: LoadedModel, *, input_size=None, batch: int = 1, dynamic_batch: bool = False) -> ExportSpec:
    builders = {"classification": _classifier_spec, "segmentation": _segmenter_spec, "detection": _detector_spec,
                "tracking": _tracker_spec, "generative": _generative_spec}
    return builders[loaded.task](loaded, input_size, batch, dynamic_batch)


def _image_model_spec(loaded, input_size, batch, dynamic, module, output_names, card) -> ExportSpec:
    entry = get_entry(loaded.name)
    h, w = _hw(input_size, loaded.meta.get("input_size") or entry.default_input_size)
    mean = loaded.meta.get("mean") or IMAGENET_MEAN
    std = loaded.meta.get("std") or IMAGENET_STD
    traced, checked = _batches(batch, dynamic)
    check = [(_normalise(_images(b, h, w, seed=b), mean, std),) for b in checked]
    return ExportSpec(module, check[0], ["images"], output_names, check,
                      reference=lambda *x: as_tuple(loaded.model(*x)), batch_inputs=[0],
                      card={"inputs": {"images": f"(B, 3, {h}, {w}) float32, RGB in [0, 1] normalised by mean/std"},
                            "input_size": [3, h, w], **card})


def _classifier_spec(loaded, input_size, batch, dynamic) -> ExportSpec:
    return _image_model_spec(loaded, input_size, batch, dynamic, loaded.model, ["logits"],
                             {"outputs": {"logits": "(B, classes) float32, before softmax"}})


def _segmenter_spec(loaded, input_size, batch, dynamic) -> ExportSpec:
    h, w = _hw(input_size, loaded.meta.get("input_size") or get_entry(loaded.name).default_input_size)
    with torch.no_grad():
        keys = list(loaded.model(torch.zeros(1, 3, h, w)).keys())
    return _image_model_spec(loaded, input_size, batch, dynamic, DictOutputs(loaded.model), keys,
                             {"outputs": {k: "(B, classes, H, W) float32 logits at the input size" for k in keys}})


def _detector_spec(loaded, input_size, batch, dynamic) -> ExportSpec:
    model = loaded.model
    if batch != 1 or dynamic:
        raise ExportError(f"{loaded.name}: detectors are exported for one image per call (torchvision's detection "
                          "models take a list of images, which ONNX has no type for); drop --batch / --dynamic-batch")
    min_size = loaded.meta.get("min_size") or model.transform.min_size[0]
    h, w = _hw(input_size, [min_size])
    images = _images(2, h, w)
    check_images = [images[0], images[1].flip(-1)]
    card = {"input_size": [3, h, w], "min_size": model.transform.min_size[0], "max_size": model.transform.max_size,
            "mean": list(model.transform.image_mean), "std": list(model.transform.image_std),
            "normalisation": "inside the model (mean/std listed for information)",
            "class_names_note": "labels index class_names; index 0 is the background",
            "outputs": {"boxes": "(N, 4) float32 XYXY in the input image's pixels", "labels": "(N,) int64",
                        "scores": "(N,) float32"}}
    # torch.export (and so the dynamo ONNX exporter) stops at torchvision's batched_nms, whose output size
    # depends on the data (measured with torch 2.14 / torchvision 0.29); the TorchScript-based ONNX exporter
    # and torch.jit.script handle it, as torchvision's own ONNX tests do.
    hint = ("detection post-processing (score threshold, NMS) gives a data-dependent number of boxes, which "
            "torch.export cannot capture; use --format onnx or --format torchscript")
    if getattr(model, "needs_proposals", False):
        proposals = _grid_proposals(h, w)
        check = [(check_images[0], proposals), (check_images[1], proposals[::2].contiguous())]
        card["inputs"] = {"image": f"(3, {h}, {w}) float32 RGB in [0, 1]",
                          "proposals": "(P, 4) float32 XYXY in the image's pixels (P may vary)"}
        return ExportSpec(ProposalDetector(model), check[0], ["image", "proposals"], ["boxes", "labels", "scores"],
                          check, reference=lambda x, p: _detections(model([x], proposals=[p])[0], False),
                          variable_axes={1: {0: "num_proposals"}}, onnx_exporter="torchscript", allows_batch=False,
                          card=card, hint=hint)
    masks = bool(model.roi_heads.has_mask())
    names = ["boxes", "labels", "scores"] + (["masks"] if masks else [])
    if masks:
        card["outputs"]["masks"] = "(N, 1, H, W) float32 mask probabilities in the input image's pixels"
    card["inputs"] = {"image": f"(3, {h}, {w}) float32 RGB in [0, 1]"}
    module = (MaskDetector if masks else BoxDetector)(model)
    return ExportSpec(module, (check_images[0],), ["image"], names, [(x,) for x in check_images],
                      reference=lambda x: _detections(model([x])[0], masks), onnx_exporter="torchscript",
                      script=True, allows_batch=False, card=card, hint=hint)


def _detections(d: dict, masks: bool) -> tuple:
    return (d["boxes"], d["labels"], d["scores"]) + ((d["masks"],) if masks else ())


def _grid_proposals(h: int, w: int) -> torch.Tensor:
    """Sliding windows at three sizes: proposals for checking Fast R-CNN without running selective search."""
    boxes = []
    for frac in (0.25, 0.4, 0.6):
        bh, bw = max(2, int(h * frac)), max(2, int(w * frac))
        for y in range(0, h - bh + 1, max(1, bh // 2)):
            for x in range(0, w - bw + 1, max(1, bw // 2)):
                boxes.append([x, y, x + bw, y + bh])
    return torch.tensor(boxes, dtype=torch.float32)


def _tracker_spec(loaded, input_size, batch, dynamic) -> ExportSpec:
    model, entry = loaded.model, get_entry(loaded.name)
    mean = loaded.meta.get("mean") or IMAGENET_MEAN
    std = loaded.meta.get("std") or IMAGENET_STD
    traced, checked = _batches(batch, dynamic)
    if entry.capabilities.tracker_kind == "siamfc":
        if input_size:
            raise ExportError(f"{loaded.name}: --input-size does not apply: the SiamFC embedding is exported for "
                              "any crop size (127-px exemplars and 255-px search crops alike)")
        ez, sz = entry.extra["exemplar_size"], entry.extra["search_size"]
        check = [(_normalise(_images(traced, ez, ez), mean, std),),
                 (_normalise(_images(checked[-1], sz, sz, seed=1), mean, std),)]
        card = {"part": "embedding (the tracker embeds the exemplar once, then every search crop)",
                "inputs": {"images": "(B, 3, H, W) float32 crops, RGB in [0, 1] normalised by mean/std"},
                "outputs": {"features": "(B, C, H', W') float32, total stride 8"},
                "exemplar_size": ez, "search_size": sz, "total_stride": model.total_stride,
                "head": "response = out_scale * conv2d(search_features, exemplar_features) + bias",
                "out_scale": model.out_scale, "bias": float(model.bias.detach()), "mean": mean, "std": std}
        return ExportSpec(Embedding(model), check[0], ["images"], ["features"], check,
                          reference=lambda x: (model.embed(x),), batch_inputs=[0],
                          variable_axes={0: {2: "height", 3: "width"}}, card=card)
    h, w = _hw(input_size, entry.default_input_size)
    check = []
    for i, b in enumerate(checked):
        images = _normalise(_images(b, h, w, seed=i), mean, std)
        boxes = _grid_proposals(h, w)[:: 3 + i]
        rois = torch.cat([(torch.arange(len(boxes)) % b).float()[:, None], boxes], 1)
        check.append((images, rois))
    card = {"inputs": {"images": f"(B, 3, {h}, {w}) float32, RGB in [0, 1] normalised by mean/std",
                       "rois": "(K, 5) float32: image index in the batch, then x1, y1, x2, y2 in pixels"},
            "outputs": {"embeddings": "(K, D) float32, L2-normalised"}, "input_size": [3, h, w],
            "mean": mean, "std": std}
    # torchvision::roi_pool has no translation in the dynamo ONNX exporter (measured, torch 2.14); the
    # TorchScript-based exporter maps it to ONNX MaxRoiPool.
    return ExportSpec(RoIEmbedding(model), check[0], ["images", "rois"], ["embeddings"], check,
                      reference=lambda x, r: (model(x, r),), batch_inputs=[0], variable_axes={1: {0: "num_rois"}},
                      onnx_exporter="torchscript", card=card)


def _generative_spec(loaded, input_size, batch, dynamic) -> ExportSpec:
    model, kind = loaded.model, get_entry(loaded.name).capabilities.generative_kind
    traced, checked = _batches(batch, dynamic)
    gen = torch.Generator().manual_seed(0)
    if kind == "autoencoder":
        if input_size:
            raise ExportError(f"{loaded.name}: --input-size does not apply: the autoencoder takes images of its "
                              f"own size {list(model.image_shape)}")
        c, h, w = model.image_shape
        check = [(_images(b, h, w, seed=i)[:, :c],) for i, b in enumerate(checked)]
        card = {"part": "the whole autoencoder (encode + decode)",
                "inputs": {"images": f"(B, {c}, {h}, {w}) float32 in [0, 1]"
                           + (" (the corrupted image for the denoising autoencoder)" if model.corruption else "")},
                "outputs": {"reconstruction": f"(B, {c}, {h}, {w}) float32 in [0, 1]"}, "input_size": [c, h, w]}
        return ExportSpec(model, check[0], ["images"], ["reconstruction"], check,
                          reference=lambda x: (model.reconstruct(x),), batch_inputs=[0], card=card)
    if input_size:
        raise ExportError(f"{loaded.name}: --input-size does not apply: its exported part takes latents "
                          f"(B, {model.latent_dim}), not images")
    conditional = model.num_classes is not None
    check = []
    for b in checked:
        z = torch.randn((b, model.latent_dim), generator=gen)
        check.append((z, torch.arange(b) % model.num_classes) if conditional else (z,))
    names = ["z", "labels"] if conditional else ["z"]
    inputs = {"z": f"(B, {model.latent_dim}) float32, standard normal"}
    if conditional:
        inputs["labels"] = f"(B,) int64 class indices in [0, {model.num_classes})"
    if kind == "gan":
        module, part, rng = GeneratorExport(model), "generator", "[-1, 1]"
    else:
        module, part, rng = DecoderExport(model), "decoder (mean image)", "[0, 1]"

    def reference(z, y=None):  # the model's own API: what the export must reproduce
        return (model.generator(z, y) if kind == "gan" else model.decode(z, y),)

    c, h, w = model.image_shape
    card = {"part": part, "inputs": inputs, "outputs": {"images": f"(B, {c}, {h}, {w}) float32 in {rng}"},
            "latent_dim": model.latent_dim, "image_size": [c, h, w]}
    return ExportSpec(module, check[0], names, ["images"], check, reference=reference,
                      batch_inputs=list(range(len(names))), card=card)



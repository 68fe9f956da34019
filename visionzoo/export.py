"""Export a model of the zoo to ONNX, TorchScript or torch.export (.pt2), and check the saved file.

    python -m visionzoo.export weights/resnet18.shapes.safetensors --format onnx --dynamic-batch
    python -m visionzoo.export runs/fcn4s_r18_shapes --format torchscript --input-size 128
    python -m visionzoo.export faster_rcnn_resnet18_fpn --weights shapes --format onnx
    python -m visionzoo.export dcgan --weights shapes --format export

TARGET is what evaluate.py takes (a weights file with its model card, a run directory, a checkpoint) or a
registered model name (random init, or `--weights`). After writing, the file is loaded back (onnxruntime
for ONNX, torch.jit.load / torch.export.load otherwise) and run on the same inputs as the PyTorch model;
the largest absolute difference of every output is printed, and an export outside --atol/--rtol fails.
A JSON card beside the file (`<file>.json`) says what the inputs and outputs are, the input size,
normalisation, class names and the measured differences.

What is exported, per task:
  classification  images (B, 3, H, W), normalised -> logits (B, classes)
  segmentation    images (B, 3, H, W), normalised -> out (B, classes, H, W) [+ aux]
  detection       Faster/Mask R-CNN: image (3, H, W) in [0, 1] -> boxes, labels, scores [+ masks];
                  Fast R-CNN: image + proposals (P, 4) XYXY -> boxes, labels, scores. One image per call,
                  fixed image size (the model resizes to its min_size anyway).
  tracking        SiamFC: the embedding, images (B, 3, H, W) of any crop size -> features (the card gives
                  the correlation head's scale and bias); SINT: images + RoIs (K, 5) -> embeddings (K, D)
  generative      GANs: the generator z (B, latent) [+ labels] -> images in [-1, 1]; VAEs: the decoder
                  z [+ labels] -> mean image in [0, 1]; autoencoders: images -> reconstructions
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from visionzoo.config import ConfigError
from visionzoo.engine.targets import load_target
from visionzoo.factory import INIT_ONLY_KWARGS, create_model
from visionzoo.registry import get_entry

FORMATS = {"onnx": ".onnx", "torchscript": ".torchscript.pt", "export": ".pt2"}
FORMAT_NAMES = {"onnx": "ONNX", "torchscript": "TorchScript", "export": "torch.export"}
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
LEGACY_OPSET = 17  # the TorchScript-based ONNX exporter's default; torchvision's detectors need >= 11


class ExportError(ValueError):
    """A model that cannot be exported in the asked format, or an export that does not match PyTorch."""


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
        class_names = meta.get("class_names")
        model = create_model(cfg.model.name, weights=loaded.weights,
                             num_classes=len(class_names) if class_names else cfg.model.num_classes,
                             **{k: v for k, v in cfg.model.kwargs.items() if k not in INIT_ONLY_KWARGS})
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


def _as_tuple(out) -> tuple:
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
    from visionzoo.datasets.write_shapes_scenes import make_scene

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
                      reference=lambda *x: _as_tuple(loaded.model(*x)), batch_inputs=[0],
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
    if entry.family == "siamfc":
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
    model, kind = loaded.model, get_entry(loaded.name).family
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


# ---- exporters ----------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _quiet():
    """The exporters' deprecation and tracer warnings, and the graph dumps torch logs when an export fails,
    are about their own internals: a failure is reported as one line instead (see _short_reason)."""
    previous = logging.root.manager.disable
    logging.disable(logging.CRITICAL)
    try:
        # torch.export also prints the partial graph of a failed export straight to stderr
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(previous)


def _short_reason(exc: BaseException) -> str:
    """The gist of an exporter's error: its first line and where in the code it was raised (torch's
    errors run to pages of graph dumps)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    summary = next((i for i, ln in enumerate(lines) if ln.startswith("## Exception summary")), None)
    if summary is not None:
        lines = lines[summary + 1:]
        lines = lines[1:] if lines and lines[0].startswith("<class") else lines
    head = lines[0] if lines else type(exc).__name__
    where = next((ln for ln in lines if ln.startswith("Caused by")), "")
    text = f"{type(exc).__name__}: {head}" + (f" {where}" if where else "")
    return text[:600]


def _varying_axes(spec: ExportSpec, dynamic_batch: bool) -> list[dict[int, str]]:
    """Per input, the axes that may vary in the exported file and their names."""
    axes = []
    for i in range(len(spec.inputs)):
        dims = {0: "batch"} if dynamic_batch and i in spec.batch_inputs else {}
        axes.append({**dims, **spec.variable_axes.get(i, {})})
    return axes


def _dynamic_shapes(spec: ExportSpec, dynamic_batch: bool):
    """torch.export's form: one named Dim for the batch, which every batched input shares; the other axes
    AUTO, so torch.export derives their ranges (SiamFC's crops must give feature maps larger than 1x1)."""
    batch = torch.export.Dim("batch", min=1, max=1 << 16)
    shapes = [{axis: batch if name == "batch" else torch.export.Dim.AUTO for axis, name in dims.items()} or None
              for dims in _varying_axes(spec, dynamic_batch)]
    return tuple(shapes) if any(s is not None for s in shapes) else None


def _dynamic_axes(spec: ExportSpec, dynamic_batch: bool) -> dict:
    return {name: dims for name, dims in zip(spec.input_names, _varying_axes(spec, dynamic_batch)) if dims}


def _export_onnx(spec: ExportSpec, out: Path, *, dynamic_batch: bool, opset: int | None, exporter: str) -> dict:
    param_bytes = sum(p.numel() * p.element_size() for p in spec.module.parameters())
    chosen = spec.onnx_exporter if exporter == "auto" else exporter
    info: dict = {}
    if chosen == "dynamo":
        try:
            # the dynamo exporter prints its progress steps; the result (or its failure) is reported here
            with _quiet(), open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
                torch.onnx.export(spec.module, spec.inputs, str(out), dynamo=True, input_names=spec.input_names,
                                  output_names=spec.output_names, opset_version=opset, verbose=False,
                                  dynamic_shapes=_dynamic_shapes(spec, dynamic_batch),
                                  external_data=param_bytes > 1_500_000_000)  # one file below ONNX's 2 GB limit
            return {"exporter": "torch.onnx (dynamo)"}
        except Exception as e:  # noqa: BLE001 - any exporter failure: retry with the other exporter or explain
            if exporter == "dynamo":
                raise
            info["dynamo_failed"] = _short_reason(e)
    if opset is not None and opset < 11:
        raise ExportError(f"--opset {opset}: the TorchScript-based ONNX exporter needs opset >= 11 for these models")
    with _quiet():
        torch.onnx.export(spec.module, spec.inputs, str(out), dynamo=False, input_names=spec.input_names,
                          output_names=spec.output_names, opset_version=opset or LEGACY_OPSET,
                          dynamic_axes=_dynamic_axes(spec, dynamic_batch) or None)
    return {"exporter": "torch.onnx (TorchScript-based, dynamo=False)", **info}


def _export_torchscript(spec: ExportSpec, out: Path) -> dict:
    with _quiet():
        if spec.script:
            module = torch.jit.script(spec.module)
            how = "torch.jit.script"
        else:
            module = torch.jit.trace(spec.module, spec.inputs, check_trace=False)
            how = "torch.jit.trace"
        torch.jit.save(module, str(out))
    return {"exporter": how}


def _export_program(spec: ExportSpec, out: Path, *, dynamic_batch: bool) -> dict:
    with _quiet():
        program = torch.export.export(spec.module, spec.inputs, dynamic_shapes=_dynamic_shapes(spec, dynamic_batch))
        torch.export.save(program, str(out))
    return {"exporter": "torch.export"}


# ---- checks -------------------------------------------------------------------------------------------------


def _run_saved(fmt: str, path: Path):
    """A function running the saved file on an input tuple and returning numpy outputs."""
    if fmt == "onnx":
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3  # the mask paste loop's shape warnings are expected (dynamic N)
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        names = [i.name for i in session.get_inputs()]
        return lambda inputs: session.run(None, {n: x.numpy() for n, x in zip(names, inputs)})
    with _quiet():
        module = torch.jit.load(str(path)) if fmt == "torchscript" else torch.export.load(str(path)).module()

    def run(inputs):
        with torch.no_grad(), _quiet():
            return [o.detach().numpy() for o in _as_tuple(module(*inputs))]

    return run


def check_export(spec: ExportSpec, fmt: str, path: Path, atol: float, rtol: float, name: str) -> dict:
    """Run the saved file and the PyTorch model on every check input; max abs difference per output.
    Raises ExportError naming the output and input when shapes differ or values are out of tolerance."""
    run = _run_saved(fmt, path)
    diffs = {n: 0.0 for n in spec.output_names}
    output_shapes = []
    for inputs in spec.check_inputs:
        with torch.no_grad():
            expected = [t.detach().numpy() for t in spec.reference(*inputs)]
        got = run(inputs)
        shapes = " ".join(f"{n}={tuple(x.shape)}" for n, x in zip(spec.input_names, inputs))
        if len(got) != len(expected):
            raise ExportError(f"{name}: the {fmt} file gives {len(got)} outputs, PyTorch {len(expected)}")
        output_shapes.append({n: list(e.shape) for n, e in zip(spec.output_names, expected)})
        for out_name, g, e in zip(spec.output_names, got, expected):
            g = np.asarray(g)
            if g.shape != e.shape:
                raise ExportError(f"{name}: output {out_name!r} has shape {g.shape} from the {fmt} file but "
                                  f"{e.shape} from PyTorch (input {shapes})")
            if g.size == 0:
                continue
            diff = float(np.abs(g.astype(np.float64) - e.astype(np.float64)).max())
            diffs[out_name] = max(diffs[out_name], diff)
            if not np.allclose(g, e, atol=atol, rtol=rtol):
                raise ExportError(f"{name}: output {out_name!r} of the {fmt} file differs from PyTorch by up to "
                                  f"{diff:.3g} (atol {atol:g}, rtol {rtol:g}; input {shapes})")
    return {"max_abs_diff": diffs, "atol": atol, "rtol": rtol,
            "inputs": [{n: list(x.shape) for n, x in zip(spec.input_names, inputs)} for inputs in spec.check_inputs],
            "outputs": output_shapes}


# ---- the whole export -----------------------------------------------------------------------------------------


def _versions() -> dict:
    import torchvision

    versions = {"torch": torch.__version__, "torchvision": torchvision.__version__}
    for mod in ("onnx", "onnxruntime", "onnxscript"):
        with contextlib.suppress(ImportError):
            versions[mod] = __import__(mod).__version__
    return versions


def _onnx_opset(path: Path) -> int | None:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)


def _require_onnx(check: bool, exporter: str) -> None:
    needed = ["onnx"] + (["onnxscript"] if exporter != "torchscript" else []) + (["onnxruntime"] if check else [])
    missing = [m for m in needed if not _importable(m)]
    if missing:
        raise ExportError(f"ONNX export needs {', '.join(missing)}: pip install 'visionzoo[export]' "
                          "(or pip install onnx onnxruntime onnxscript)")


def _importable(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def export(target: str, fmt: str = "onnx", *, out: str | Path | None = None, weights: str | None = None,
           input_size=None, batch: int = 1, dynamic_batch: bool = False, opset: int | None = None,
           check: bool = True, atol: float = 1e-4, rtol: float = 1e-3, exporter: str = "auto",
           log=print) -> dict:
    """Export TARGET in `fmt`, check it and write the JSON card; returns the card."""
    if fmt not in FORMATS:
        raise ExportError(f"--format {fmt!r}: expected one of {', '.join(FORMATS)} (export = torch.export .pt2)")
    if exporter not in ("auto", "dynamo", "torchscript"):
        raise ExportError(f"exporter {exporter!r}: expected auto, dynamo or torchscript")
    if fmt == "onnx":
        _require_onnx(check, exporter)
    if out is not None and fmt == "export" and Path(out).suffix != ".pt2":
        raise ExportError(f"--out {out}: a torch.export file must end in .pt2 (torch.export.load reads no other)")
    loaded = load_model(target, weights)
    spec = build_spec(loaded, input_size=input_size, batch=batch, dynamic_batch=dynamic_batch)
    spec.module.eval()  # wrappers too: an exporter that restores the training flag would switch the model back
    out = Path(out) if out else Path("exports") / f"{loaded.stem}{FORMATS[fmt]}"
    out.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    try:
        with torch.no_grad():
            if fmt == "onnx":
                how = _export_onnx(spec, out, dynamic_batch=dynamic_batch, opset=opset, exporter=exporter)
            elif fmt == "torchscript":
                how = _export_torchscript(spec, out)
            else:
                how = _export_program(spec, out, dynamic_batch=dynamic_batch)
    except ExportError:
        raise
    except Exception as e:  # noqa: BLE001 - turned into one clear line naming model, format and reason
        out.unlink(missing_ok=True)
        hint = f" Why: {spec.hint}." if spec.hint else ""
        raise ExportError(f"{loaded.name} cannot be exported to {FORMAT_NAMES[fmt]}: {_short_reason(e)}.{hint}") \
            from None
    seconds = time.perf_counter() - start
    log(f"exported {loaded.name} to {out} with {how['exporter']} in {seconds:.1f} s")
    if how.get("dynamo_failed"):
        log(f"  (the dynamo exporter failed: {how['dynamo_failed']})")
    checked = None
    if check:
        start_check = time.perf_counter()
        try:
            checked = check_export(spec, fmt, out, atol, rtol, loaded.name)
        except ExportError as e:
            out.unlink(missing_ok=True)
            raise ExportError(f"{e}; {out} was removed (--no-check keeps an unchecked export)") from None
        checked["seconds"] = round(time.perf_counter() - start_check, 2)
        for name, diff in checked["max_abs_diff"].items():
            log(f"  {name}: max abs diff {diff:.3g} vs PyTorch")
        log(f"  check passed on {len(spec.check_inputs)} input(s) (atol {atol:g}, rtol {rtol:g})")
    meta = loaded.meta
    card = {
        "model": loaded.name, "task": loaded.task, "format": fmt, "file": out.name, **how,
        "opset": _onnx_opset(out) if fmt == "onnx" else None,
        "source": loaded.source, "dynamic_batch": dynamic_batch,
        "batch": None if dynamic_batch else (spec.inputs[0].shape[0] if spec.allows_batch else 1),
        "input_names": spec.input_names, "output_names": spec.output_names,
        "mean": meta.get("mean"), "std": meta.get("std"), "input_size": meta.get("input_size"),
        "class_names": meta.get("class_names"), "num_classes": meta.get("num_classes"),
        **spec.card,
        "seconds": round(seconds, 2), "size_bytes": out.stat().st_size, "check": checked, "versions": _versions(),
    }
    card_path = out.with_name(out.name + ".json")
    card_path.write_text(json.dumps(card, indent=2))
    log(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB) and {card_path}")
    return card


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m visionzoo.export", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("target", help="weights file (.safetensors with its model card), run directory, checkpoint, "
                                  "or a registered model name")
    p.add_argument("--format", default="onnx", help="onnx, torchscript or export (torch.export .pt2); default onnx")
    p.add_argument("--out", help="output file (default exports/<name>.onnx | .torchscript.pt | .pt2)")
    p.add_argument("--weights", help="with a model name: a weights tag (shapes), file or torchvision:<TAG>")
    p.add_argument("--input-size", type=int, nargs="+", metavar="N",
                   help="image size: S, H W or C H W (default: the model card's, or the model's default)")
    p.add_argument("--batch", type=int, default=1, help="batch size of the example input (default 1)")
    p.add_argument("--dynamic-batch", action="store_true", help="let the batch axis vary (checked at two sizes)")
    p.add_argument("--opset", type=int, help="ONNX opset (default: the exporter's; 18 dynamo, 17 TorchScript-based)")
    p.add_argument("--exporter", default="auto", choices=["auto", "dynamo", "torchscript"],
                   help="ONNX exporter: auto (dynamo, the TorchScript-based one where dynamo cannot: detectors, "
                        "SINT, or after a dynamo failure)")
    p.add_argument("--check", action=argparse.BooleanOptionalAction, default=True,
                   help="load the saved file and compare it with PyTorch (default on)")
    p.add_argument("--atol", type=float, default=1e-4, help="absolute tolerance of the check (default 1e-4)")
    p.add_argument("--rtol", type=float, default=1e-3, help="relative tolerance of the check (default 1e-3)")
    args = p.parse_args(argv)
    try:
        export(args.target, args.format, out=args.out, weights=args.weights, input_size=args.input_size,
               batch=args.batch, dynamic_batch=args.dynamic_batch, opset=args.opset, check=args.check,
               atol=args.atol, rtol=args.rtol, exporter=args.exporter)
    except (ExportError, ConfigError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

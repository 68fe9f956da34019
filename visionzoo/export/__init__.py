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
import importlib.util
import json
import sys
import time
from pathlib import Path

import torch
import torchvision

from visionzoo.config import ConfigError
from visionzoo.export.common import FORMAT_NAMES, FORMATS, ExportError
from visionzoo.export.formats import (
    check_export,
    export_onnx,
    export_program,
    export_torchscript,
    short_reason,
)
from visionzoo.export.specs import ExportSpec, LoadedModel, build_spec, load_model

__all__ = ["FORMATS", "ExportError", "ExportSpec", "LoadedModel", "build_spec", "check_export", "export",
           "load_model", "main"]

# ---- the whole export -----------------------------------------------------------------------------------------


def _versions() -> dict:
    versions = {"torch": torch.__version__, "torchvision": torchvision.__version__}
    for mod in ("onnx", "onnxruntime", "onnxscript"):
        with contextlib.suppress(ImportError):
            versions[mod] = __import__(mod).__version__
    return versions


def _onnx_opset(path: Path) -> int | None:
    import onnx  # local: the optional 'export' extra (checked by _require_onnx before any export)

    model = onnx.load(str(path), load_external_data=False)
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)


def _require_onnx(check: bool, exporter: str) -> None:
    needed = ["onnx"] + (["onnxscript"] if exporter != "torchscript" else []) + (["onnxruntime"] if check else [])
    missing = [m for m in needed if not _importable(m)]
    if missing:
        raise ExportError(f"ONNX export needs {', '.join(missing)}: pip install 'visionzoo[export]' "
                          "(or pip install onnx onnxruntime onnxscript)")


def _importable(module: str) -> bool:
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
                how = export_onnx(spec, out, dynamic_batch=dynamic_batch, opset=opset, exporter=exporter)
            elif fmt == "torchscript":
                how = export_torchscript(spec, out)
            else:
                how = export_program(spec, out, dynamic_batch=dynamic_batch)
    except ExportError:
        raise
    except Exception as e:  # noqa: BLE001 - turned into one clear line naming model, format and reason
        out.unlink(missing_ok=True)
        hint = f" Why: {spec.hint}." if spec.hint else ""
        raise ExportError(f"{loaded.name} cannot be exported to {FORMAT_NAMES[fmt]}: {short_reason(e)}.{hint}") \
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


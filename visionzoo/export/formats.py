"""The three exporters (ONNX, TorchScript, torch.export) and the check of a saved file against PyTorch."""
from __future__ import annotations

import contextlib
import io
import logging
import os
import warnings
from pathlib import Path

import numpy as np
import torch

from visionzoo.export.common import (
    LEGACY_OPSET,
    ExportError,
)
from visionzoo.export.specs import ExportSpec, as_tuple

# ---- exporters ----------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _quiet():
    """The exporters' deprecation and tracer warnings, and the graph dumps torch logs when an export fails,
    are about their own internals: a failure is reported as one line instead (see short_reason)."""
    previous = logging.root.manager.disable
    logging.disable(logging.CRITICAL)
    try:
        # torch.export also prints the partial graph of a failed export straight to stderr
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(previous)


def short_reason(exc: BaseException) -> str:
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


def export_onnx(spec: ExportSpec, out: Path, *, dynamic_batch: bool, opset: int | None, exporter: str) -> dict:
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
            info["dynamo_failed"] = short_reason(e)
    if opset is not None and opset < 11:
        raise ExportError(f"--opset {opset}: the TorchScript-based ONNX exporter needs opset >= 11 for these models")
    with _quiet():
        torch.onnx.export(spec.module, spec.inputs, str(out), dynamo=False, input_names=spec.input_names,
                          output_names=spec.output_names, opset_version=opset or LEGACY_OPSET,
                          dynamic_axes=_dynamic_axes(spec, dynamic_batch) or None)
    return {"exporter": "torch.onnx (TorchScript-based, dynamo=False)", **info}


def export_torchscript(spec: ExportSpec, out: Path) -> dict:
    with _quiet():
        if spec.script:
            module = torch.jit.script(spec.module)
            how = "torch.jit.script"
        else:
            module = torch.jit.trace(spec.module, spec.inputs, check_trace=False)
            how = "torch.jit.trace"
        torch.jit.save(module, str(out))
    return {"exporter": how}


def export_program(spec: ExportSpec, out: Path, *, dynamic_batch: bool) -> dict:
    with _quiet():
        program = torch.export.export(spec.module, spec.inputs, dynamic_shapes=_dynamic_shapes(spec, dynamic_batch))
        torch.export.save(program, str(out))
    return {"exporter": "torch.export"}


# ---- checks -------------------------------------------------------------------------------------------------


def _run_saved(fmt: str, path: Path):
    """A function running the saved file on an input tuple and returning numpy outputs."""
    if fmt == "onnx":
        import onnxruntime as ort  # local: the optional 'export' extra, needed only to check an ONNX file

        options = ort.SessionOptions()
        options.log_severity_level = 3  # the mask paste loop's shape warnings are expected (dynamic N)
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        names = [i.name for i in session.get_inputs()]
        return lambda inputs: session.run(None, {n: x.numpy() for n, x in zip(names, inputs)})
    with _quiet():
        module = torch.jit.load(str(path)) if fmt == "torchscript" else torch.export.load(str(path)).module()

    def run(inputs):
        with torch.no_grad(), _quiet():
            return [o.detach().numpy() for o in as_tuple(module(*inputs))]

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



"""Numerical gradient checks: analytic gradients (autograd, custom backward passes) against central finite
differences in float64, through torch.autograd.gradcheck.

Each differentiable argument is one check (input 0, input 1, ..., and the module's parameters together, taken
as inputs through torch.func.functional_call). torch's gradcheck decides pass/fail; beside it each check
reports the largest error between the analytic and the numerical directional derivative v^T J u over a few
random directions (the quantity gradcheck's fast mode compares), so a failure comes with a size.

How models are made checkable:
- float64 throughout (finite differences in float32 have errors of ~1e-3 at best);
- mode "eval" (default): BatchNorm uses its running statistics and dropout is off, so the model is a fixed
  function of its input. Mode "train" checks the training graph (batch statistics) instead;
- random operations (dropout in train mode, a VAE's sampling noise) are made repeatable by re-seeding the RNG
  before every call, so every evaluation of the function draws the same noise;
- ReLU and max-pooling have kinks: a check can fail when a finite-difference step crosses one. Inputs are
  random normal and eps is 1e-6, which makes that rare; a failure at one seed only points to that.
"""
from __future__ import annotations

import difflib
import importlib
import math
import time
from dataclasses import asdict, dataclass
from typing import Callable, Sequence

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from tqdm.auto import tqdm

from visionzoo.diagnostics.common import find_module
from visionzoo.factory import create_model
from visionzoo.registry import get_entry, model_info

try:  # the exception type gradcheck raises (public since torch 1.13)
    from torch.autograd.gradcheck import GradcheckError
except ImportError:  # pragma: no cover
    GradcheckError = RuntimeError

FULL_MODE_SECONDS = 10.0  # full mode costs 2 forward passes per checked number: above this estimate, fast mode


class _PrecisionWatch(TorchFunctionMode):
    """Records the torch functions that produced floating-point tensors below float64 during a call: the usual
    reason a float64 check fails on correct code is a cast inside it (x.float(), a float32 constant)."""

    def __init__(self):
        super().__init__()
        self.found: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor) and t.is_floating_point() and t.dtype != torch.float64:
                name = f"{getattr(func, '__name__', str(func))} -> {str(t.dtype).replace('torch.', '')}"
                if name not in self.found:
                    self.found.append(name)
        return out


@dataclass
class GradCheckResult:
    name: str  # what was checked, e.g. "resnet18: input 0" or "resnet18: parameters"
    passed: bool
    max_abs_error: float  # max over random directions of |analytic - numerical| directional derivative
    max_rel_error: float
    numel: int  # numbers checked
    mode: str  # "full" (whole Jacobian) or "fast" (random projections)
    seconds: float
    message: str = ""

    def to_dict(self) -> dict:
        return asdict(self)

    def line(self) -> str:
        status = "PASS" if self.passed else "FAIL"
        text = (f"{status}  {self.name}: max abs error {self.max_abs_error:.2e}, rel {self.max_rel_error:.2e} "
                f"({self.numel} numbers, {self.mode} mode, {self.seconds:.1f} s)")
        return text + (f"\n      {self.message}" if self.message else "")


def _tensor_outputs(out) -> tuple[torch.Tensor, ...]:
    """The floating-point tensors of a function's output (a tensor, tuple/list or dict of them)."""
    if isinstance(out, torch.Tensor):
        items = [out]
    elif isinstance(out, dict):
        items = list(out.values())
    elif isinstance(out, (list, tuple)):
        items = [t for o in out for t in _tensor_outputs(o)]
    else:
        raise ValueError(f"the function returned {type(out).__name__}; a gradient check needs tensor outputs "
                        "(a tensor, or a tuple / list / dict of tensors)")
    items = [t for t in items if isinstance(t, torch.Tensor) and t.is_floating_point()]
    if not items:
        raise ValueError("the function returned no floating-point tensor to check")
    return tuple(items)


def _directional_errors(fn, inputs: Sequence[torch.Tensor], eps: float, directions: int,
                        seed: int) -> tuple[float, float]:
    """max |a - n| and max |a - n| / max(|n|, |a|, 1e-12) over random unit directions u (input space) and v
    (output space), with a = v^T J u from autograd and n = v^T (f(x + eps u) - f(x - eps u)) / (2 eps)."""
    g = torch.Generator().manual_seed(seed + 1)
    worst_abs, worst_rel = 0.0, 0.0
    for _ in range(directions):
        us = [torch.randn(x.shape, generator=g, dtype=x.dtype).to(x.device) for x in inputs]
        norm = math.sqrt(sum(float((u * u).sum()) for u in us)) or 1.0
        us = [u / norm for u in us]
        xs = [x.detach().clone().requires_grad_(True) for x in inputs]
        outs = fn(*xs)
        vs = [torch.randn(o.shape, generator=g, dtype=o.dtype).to(o.device) for o in outs]
        total = sum((o * v).sum() for o, v in zip(outs, vs) if o.requires_grad)
        if not isinstance(total, torch.Tensor):  # no output depends on the inputs
            analytic = 0.0
        else:
            grads = torch.autograd.grad(total, xs, allow_unused=True)
            analytic = sum(float((gr * u).sum()) for gr, u in zip(grads, us) if gr is not None)
        with torch.no_grad():
            plus = fn(*[x.detach() + eps * u for x, u in zip(inputs, us)])
            minus = fn(*[x.detach() - eps * u for x, u in zip(inputs, us)])
            numerical = sum(float(((p - m) * v).sum()) for p, m, v in zip(plus, minus, vs)) / (2 * eps)
        err = abs(analytic - numerical)
        worst_abs = max(worst_abs, err)
        worst_rel = max(worst_rel, err / max(abs(numerical), abs(analytic), 1e-12))
    return worst_abs, worst_rel


def _seeded(fn: Callable, seed: int) -> Callable:
    """`fn` re-seeded before every call, so random draws inside it repeat (a fixed function for gradcheck)."""

    def call(*args):
        with torch.random.fork_rng(devices=[a.device for a in args if isinstance(a, torch.Tensor) and a.is_cuda][:1]):
            torch.manual_seed(seed)
            return _tensor_outputs(fn(*args))

    return call


def check_function(fn: Callable, inputs: Sequence, *, wrt: Sequence[int] | None = None, name: str = "function",
                   eps: float = 1e-6, atol: float = 1e-5, rtol: float = 1e-3, fast: bool | None = None,
                   directions: int = 3, seed: int = 0, dtype: torch.dtype = torch.float64) -> list[GradCheckResult]:
    """Check `fn(*inputs)` against finite differences, one check per floating-point input in `wrt` (default:
    every floating-point tensor input). Inputs are converted to `dtype` (float64; float32 only for code that
    computes in float32 anyway, with eps and tolerances to match); the others stay as they are."""
    inputs = [x.detach().to(dtype) if isinstance(x, torch.Tensor) and x.is_floating_point() else x
              for x in inputs]
    if wrt is None:
        wrt = [i for i, x in enumerate(inputs) if isinstance(x, torch.Tensor) and x.is_floating_point()]
    if not wrt:
        raise ValueError(f"{name}: no floating-point tensor input to check")
    results = []
    for i in wrt:
        x = inputs[i]
        if not (isinstance(x, torch.Tensor) and x.is_floating_point()):
            raise ValueError(f"{name}: input {i} is {type(x).__name__}, not a floating-point tensor")

        def partial(xi, i=i):
            args = list(inputs)
            args[i] = xi
            return fn(*args)

        results.append(_check(_seeded(partial, seed), [x], f"{name}: input {i}", eps, atol, rtol, fast, directions,
                              seed))
    return results


def check_module(module: nn.Module, inputs: Sequence, *, name: str | None = None, params: bool = True,
                 mode: str = "eval", eps: float = 1e-6, atol: float = 1e-5, rtol: float = 1e-3,
                 fast: bool | None = None, directions: int = 3, seed: int = 0,
                 progress: bool = False) -> list[GradCheckResult]:
    """Check a module (converted to float64, in `mode` "eval" or "train") with respect to each floating-point
    input and, if `params`, to all its trainable parameters at once."""
    if mode not in ("eval", "train"):
        raise ValueError(f"mode must be 'eval' or 'train', got {mode!r}")
    name = name or type(module).__name__
    module = module.to(torch.float64).train(mode == "train")
    inputs = [x.detach().to(torch.float64) if isinstance(x, torch.Tensor) and x.is_floating_point() else x
              for x in inputs]
    with torch.no_grad():
        try:
            _seeded(module, seed)(*inputs)
        except Exception as e:  # the user's shapes did not fit the module: say so before any check runs
            shapes = [tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__ for x in inputs]
            raise ValueError(f"{name}: forward on inputs of shape {shapes} failed: {e}") from e
    wrt = [i for i, x in enumerate(inputs) if isinstance(x, torch.Tensor) and x.is_floating_point()]
    jobs = list(wrt) + ([None] if params else [])  # None: the parameters
    results = []
    for i in tqdm(jobs, desc=f"gradcheck {name}", unit="check", disable=not progress):
        if i is not None:
            results += check_function(module, inputs, wrt=[i], name=name, eps=eps, atol=atol, rtol=rtol, fast=fast,
                                      directions=directions, seed=seed)
            continue
        named = [(k, p) for k, p in module.named_parameters() if p.requires_grad]
        if not named:
            continue
        keys = [k for k, _ in named]

        def with_params(*values, keys=keys):
            return torch.func.functional_call(module, dict(zip(keys, values)), tuple(inputs))

        results.append(_check(_seeded(with_params, seed), [p.detach() for _, p in named], f"{name}: parameters",
                              eps, atol, rtol, fast, directions, seed))
    return results


def _check(fn, xs: list[torch.Tensor], label: str, eps, atol, rtol, fast, directions, seed) -> GradCheckResult:
    started = time.time()
    numel = sum(x.numel() for x in xs)
    xs = [x.detach().clone().requires_grad_(True) for x in xs]
    with torch.no_grad(), _PrecisionWatch() as watch:
        tic = time.perf_counter()
        fn(*xs)
        forward_seconds = time.perf_counter() - tic
    if fast is None:  # the whole Jacobian when it is affordable, else random projections
        fast = 2 * numel * forward_seconds > FULL_MODE_SECONDS
    message = ""
    try:
        torch.autograd.gradcheck(fn, tuple(xs), eps=eps, atol=atol, rtol=rtol, raise_exception=True,
                                 fast_mode=fast)
        passed = True
    except GradcheckError as e:
        passed = False
        message = " ".join(str(e).split())[:400]
    abs_err, rel_err = _directional_errors(fn, xs, eps, directions, seed)
    if watch.found and all(x.dtype == torch.float64 for x in xs) and not passed:
        message = (f"lower-precision tensors were computed inside ({', '.join(watch.found[:4])}): a cast to float32 "
                   "makes float64 finite differences meaningless; check at that precision (dtype=torch.float32, "
                   "eps ~1e-3, loose tolerances) or remove the cast. " + message)
    return GradCheckResult(label, passed, abs_err, rel_err, numel, "fast" if fast else "full",
                           round(time.time() - started, 2), message)


def load_callable(spec: str):
    """`package.module:attribute` -> the attribute (a module class, factory or function)."""
    if ":" not in spec:
        raise ValueError(f"{spec!r} is neither a registered model name nor a 'package.module:attribute' path")
    module_name, attr = spec.split(":", 1)
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ValueError(f"{spec!r}: cannot import {module_name!r}: {e}") from e
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            names = [n for n in dir(obj) if not n.startswith("_")]
            close = difflib.get_close_matches(part, names, n=3)
            raise ValueError(f"{spec!r}: {module_name} has no attribute {part!r}"
                             + (f"; did you mean {', '.join(close)}?" if close else ""))
        obj = getattr(obj, part)
    return obj


def default_input_shapes(model_name: str) -> list[tuple[int, ...]]:
    """Small inputs per task: for classifiers and segmenters the model's own input when it is small (LeNet-5's
    1x28x28, the distorted-MNIST CNN's 1x42x42), else 32-px images with its channels (divisible by every stride in
    the zoo); the generative model's own image shape (check_model)."""
    info = model_info(model_name)
    task = info.get("task")
    if task == "tracking":
        raise ValueError(f"{model_name} takes exemplar and search crops: give them with --input-shape twice "
                         "(e.g. 1,3,127,127 and 1,3,255,255 for siamfc_alexnet), or check a sub-module")
    if task == "detection":
        raise ValueError(f"{model_name} takes a list of images and returns detections, not a tensor function; "
                         "check a sub-module with --submodule (e.g. backbone.body with --input-shape 1,3,64,64)")
    channels, height, width = get_entry(model_name).default_input_size
    return [(1, channels, height, width) if max(height, width) <= 64 else (1, channels, 32, 32)]


def check_model(name: str, *, input_shapes: Sequence[Sequence[int]] | None = None, submodule: str | None = None,
                params: bool = True, mode: str = "eval", seed: int = 0, fast: bool | None = None,
                progress: bool = True, **model_kwargs) -> list[GradCheckResult]:
    """Check a registered model (random init; or one of its sub-modules) on small random float64 inputs."""
    model = create_model(name, **model_kwargs)
    label = name
    if submodule:
        model = find_module(model, submodule, what="sub-module")
        label = f"{name}.{submodule}"
    if input_shapes is None:
        if submodule:
            raise ValueError("give --input-shape for a sub-module")
        if hasattr(model, "image_shape"):  # generative models: their own image shape
            input_shapes = [(2, *model.image_shape)]
        else:
            input_shapes = default_input_shapes(name)
    g = torch.Generator().manual_seed(seed)
    inputs = [torch.randn(tuple(s), generator=g, dtype=torch.float64) for s in input_shapes]
    if getattr(model, "kind", None) == "gan":
        raise ValueError(f"{name} is a GAN: check its players with --submodule generator (input: latent, e.g. "
                         f"2,{getattr(model, 'latent_dim', 100)}) or --submodule discriminator (input: images)")
    return check_module(model, inputs, name=label, params=params, mode=mode, seed=seed, fast=fast, progress=progress)

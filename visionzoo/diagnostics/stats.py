"""Per-layer activation, weight and gradient statistics during training, with warnings when they cross
thresholds. Built to plug into any training loop:

    stats = ActivationStats(interval=10)
    stats.attach(model)
    for step, batch in enumerate(loader):
        stats.begin_step(step)              # hooks record on every `interval`-th step only
        loss = ...; loss.backward()
        stats.after_backward(optimizer)     # gradient norms; snapshot of the weights about to change
        optimizer.step()
        stats.after_optimizer_step()        # update / weight ratios
        stats.end_step({"loss": float(loss)})
    stats.detach()
    print(stats.warnings())

What is recorded (forward hooks on the activation modules and the conv / linear layers; a module called
several times per step, like torchvision's shared ReLU in a residual block, gets one entry per call: "relu",
"relu#2"):
- ReLU / ReLU6: fraction of dead units (channels of a feature map, or features of a vector, that output 0
  for every input of the batch at every position) and the fraction of zero outputs;
- Sigmoid / Tanh: fraction of saturated outputs (sigmoid outside [0.01, 0.99], |tanh| > 0.99), where the
  local gradient is under 1 % of its maximum;
- 4-D outputs: mean absolute Pearson correlation between channels (up to `max_channels` channels on up to
  `max_positions` sampled positions): near 1, the maps are largely redundant;
- every trainable parameter: weight norm, gradient norm, and the update / weight ratio ||dW|| / ||W|| of the
  optimizer step (about 1e-3 is the usual healthy order for weight matrices and kernels, CS231n; biases and
  normalisation scales are recorded but not warned about).
Activations computed by functional calls (F.relu) have no module and are not visible to hooks.
"""
from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import asdict

import torch
from torch import nn
from tqdm.auto import tqdm

from visionzoo.engine.hooks import HookBase
from visionzoo.reports.layer_stats import StatsThresholds, find_warnings, summarize

RELU_TYPES = (nn.ReLU, nn.ReLU6)
SATURATING_TYPES = (nn.Sigmoid, nn.Tanh)
LAYER_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.Linear)


def channel_correlation(x: torch.Tensor, max_channels: int = 64, max_positions: int = 4096,
                        generator: torch.Generator | None = None) -> float | None:
    """Mean absolute off-diagonal Pearson correlation between the channels of x (N, C, ...), computed over the
    (sample, position) pairs; channels with no variance are left out. None with fewer than 2 usable channels."""
    if x.ndim < 2 or x.shape[1] < 2:
        return None
    c = x.shape[1]
    feats = x.detach().float().transpose(0, 1).reshape(c, -1)  # C x (N * positions)
    if c > max_channels:
        feats = feats[torch.randperm(c, generator=generator)[:max_channels].to(feats.device)]
    if feats.shape[1] > max_positions:
        feats = feats[:, torch.randperm(feats.shape[1], generator=generator)[:max_positions].to(feats.device)]
    feats = feats - feats.mean(1, keepdim=True)
    std = feats.pow(2).mean(1).sqrt()
    feats = feats[std > 1e-8]
    std = std[std > 1e-8]
    if feats.shape[0] < 2 or feats.shape[1] < 2:
        return None
    z = feats / std[:, None]
    corr = (z @ z.T) / z.shape[1]
    k = corr.shape[0]
    off = corr.abs().sum() - corr.diagonal().abs().sum()
    return float(off / (k * (k - 1)))


def dead_fraction(out: torch.Tensor) -> tuple[float, float]:
    """(fraction of units that are 0 for the whole batch, fraction of zero outputs) of a ReLU output: units
    are channels (dim 1) of an N-D output, features of a 2-D one."""
    o = out.detach()
    active = (o > 0).transpose(0, 1).reshape(o.shape[1], -1).any(1) if o.ndim >= 2 else (o > 0).any().view(1)
    return float(1 - active.float().mean()), float((o <= 0).float().mean())


def saturated_fraction(module: nn.Module, out: torch.Tensor) -> float:
    o = out.detach()
    if isinstance(module, nn.Sigmoid):
        return float(((o < 0.01) | (o > 0.99)).float().mean())
    return float((o.abs() > 0.99).float().mean())


class ActivationStats:
    """Forward hooks plus per-step gradient / update bookkeeping; see the module docstring for the protocol.

    `records` holds one dict per recorded step: {"step", "losses", "activations": {name: {...}},
    "params": {name: {"weight_norm", "grad_norm", "update_ratio"}}}."""

    def __init__(self, interval: int = 1, thresholds: StatsThresholds | None = None, max_channels: int = 64,
                 max_positions: int = 4096, correlation: bool = True, seed: int = 0):
        if interval < 1:
            raise ValueError(f"interval must be >= 1, got {interval}")
        self.interval = interval
        self.thresholds = thresholds or StatsThresholds()
        self.max_channels, self.max_positions = max_channels, max_positions
        self.correlation = correlation
        self.generator = torch.Generator().manual_seed(seed)
        self.records: list[dict] = []
        self.model: nn.Module | None = None
        self._handles: list = []
        self._names: dict[nn.Module, str] = {}
        self.active = False
        self._current: dict | None = None
        self._calls: dict[str, int] = defaultdict(int)
        self._snapshot: dict[str, torch.Tensor] = {}
        self._param_names: dict[torch.nn.Parameter, str] = {}

    # ---- hooks -------------------------------------------------------------------------------
    def attach(self, model: nn.Module) -> ActivationStats:
        if self.model is not None:
            raise RuntimeError("ActivationStats is already attached; detach() first")
        self.model = model
        self._param_names = {p: n for n, p in model.named_parameters()}
        for name, module in model.named_modules():
            if isinstance(module, RELU_TYPES + SATURATING_TYPES + LAYER_TYPES):
                self._names[module] = name or type(module).__name__
                self._handles.append(module.register_forward_hook(self._forward_hook))
        return self

    def detach(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles, self._names, self.model = [], {}, None
        self.active = False

    @property
    def hooked_layers(self) -> list[str]:
        return list(self._names.values())

    def _forward_hook(self, module, inputs, output) -> None:
        if not self.active or not isinstance(output, torch.Tensor) or not output.is_floating_point():
            return
        name = self._names[module]
        self._calls[name] += 1
        key = name if self._calls[name] == 1 else f"{name}#{self._calls[name]}"
        with torch.no_grad():
            entry: dict = {"kind": type(module).__name__, "shape": list(output.shape),
                           "mean": float(output.detach().float().mean()),
                           "std": float(output.detach().float().std()) if output.numel() > 1 else 0.0}
            if not torch.isfinite(output).all():
                entry["non_finite"] = True
            if isinstance(module, RELU_TYPES):
                entry["dead_fraction"], entry["zero_fraction"] = dead_fraction(output)
            if isinstance(module, SATURATING_TYPES):
                entry["saturated_fraction"] = saturated_fraction(module, output)
            if self.correlation and output.ndim == 4:
                entry["channel_correlation"] = channel_correlation(output, self.max_channels, self.max_positions,
                                                                   self.generator)
        self._current["activations"][key] = entry

    # ---- the step protocol ---------------------------------------------------------------------
    def begin_step(self, step: int) -> bool:
        """Start step `step`; returns whether it is recorded (every `interval`-th step)."""
        self.active = step % self.interval == 0
        self._calls.clear()
        self._snapshot = {}
        self._current = {"step": step, "activations": {}, "params": {}} if self.active else None
        return self.active

    def _params_of(self, optimizer) -> list[tuple[str, torch.nn.Parameter]]:
        if optimizer is None:
            params = [p for p in self._param_names if p.requires_grad]
        else:
            params = [p for g in optimizer.param_groups for p in g["params"] if p.requires_grad]
        return [(self._param_names.get(p, f"param{i}"), p) for i, p in enumerate(params)]

    @torch.no_grad()
    def after_backward(self, optimizer: torch.optim.Optimizer | None = None) -> None:
        """Gradient and weight norms of the parameters `optimizer` will update (all trainable ones if None);
        keeps a copy of them to measure the update. Call between backward() and optimizer.step()."""
        if not self.active:
            return
        for name, p in self._params_of(optimizer):
            if p.grad is None:
                continue
            self._current["params"][name] = {"ndim": p.ndim, "weight_norm": float(p.detach().float().norm()),
                                             "grad_norm": float(p.grad.detach().float().norm())}
            self._snapshot[name] = p.detach().clone()
        self._optimizer = optimizer

    @torch.no_grad()
    def after_optimizer_step(self) -> None:
        if not self.active:
            return
        for name, p in self._params_of(getattr(self, "_optimizer", None)):
            before = self._snapshot.pop(name, None)
            if before is None:
                continue
            w = float(before.float().norm())
            if w > 1e-6 * math.sqrt(before.numel()):  # a zero-initialised bias has no scale to compare with
                self._current["params"][name]["update_ratio"] = float((p.detach() - before).float().norm()) / w

    def end_step(self, losses: dict | None = None) -> dict | None:
        """Close the step; returns its record (None when the step was not recorded)."""
        if not self.active:
            return None
        record = self._current
        record["losses"] = {k: float(v) for k, v in (losses or {}).items()}
        self.records.append(record)
        self.active, self._current, self._snapshot = False, None, {}
        return record

    # ---- results -------------------------------------------------------------------------------
    def summary(self) -> dict:
        """Per activation layer and per parameter: the mean over recorded steps and the last value of each
        statistic ({"activations": {name: {stat: {"mean", "last"}}}, "params": {...}, "steps": n})."""
        return summarize(self.records)

    def warnings(self) -> list[dict]:
        """One warning per (layer, problem) where a statistic crossed its threshold: {"layer", "kind",
        "value" (the worst one), "step" (first step it happened), "message"}."""
        return find_warnings(self.records, self.thresholds)

    def to_json_records(self) -> list[dict]:
        """JSON-lines records: one "stats" per recorded step, then the "warning"s and one "summary"."""
        out = [{"type": "stats", **r} for r in self.records]
        out += [{"type": "warning", **w} for w in self.warnings()]
        out.append({"type": "summary", "thresholds": asdict(self.thresholds), **self.summary()})
        return out


class LayerStatsHook(HookBase):
    """ActivationStats as a trainer hook (rank 0 only): records every `interval`-th step that ends an
    accumulation window into the log ("layer_stats" records) and reports each new threshold crossing once,
    on the console and in the log, after every epoch."""

    def __init__(self, interval: int):
        self.interval = interval
        self.stats: ActivationStats | None = None
        self.due = False  # whether the step being run is recorded
        self.warned: set = set()

    def attach(self, trainer) -> None:
        super().attach(trainer)
        if trainer.is_main:
            self.stats = ActivationStats(interval=self.interval).attach(trainer.model)

    def before_step(self) -> None:
        self.due = self.stats is not None and self.trainer.window_end
        if self.due:
            self.stats.begin_step(self.trainer.pos.global_step)

    def after_backward(self, optimizer) -> None:
        if self.due:
            self.stats.after_backward(optimizer)

    def after_optimizer_step(self) -> None:
        if self.due:
            self.stats.after_optimizer_step()

    def after_step(self, losses: dict) -> None:
        if not self.due:
            return
        record = self.stats.end_step({k: v.detach() for k, v in losses.items()})
        if record is not None:
            self.trainer.log({"type": "layer_stats", "epoch": self.trainer.pos.epoch + 1, **record})

    def after_epoch(self) -> None:
        if self.stats is None:
            return
        t = self.trainer
        for w in self.stats.warnings():
            if (w["layer"], w["kind"]) in self.warned:
                continue
            self.warned.add((w["layer"], w["kind"]))
            tqdm.write(f"warning: step {w['step']}: {w['message']}")
            t.log({"type": "warning", "epoch": t.pos.epoch + 1, "step": w["step"], "message": w["message"],
                   "layer": w["layer"], "kind": w["kind"]})

    def after_train(self) -> None:
        if self.stats is not None:
            self.stats.detach()

"""Exponential moving average of a model's weights (and float buffers), for evaluation and best.pt.

Written here rather than with torch.optim.swa_utils.AveragedModel: that one keeps its step counter as a
tensor and copies it to the GPU once per dtype group each step (blocking host-device syncs), loops in
Python over integer buffers, and never updates them (BatchNorm's `num_batches_tracked` stays at its first
value). Here float tensors move in one `torch._foreach_lerp_` per dtype and device, integer buffers are
copied, and the counter is a Python int.
"""
from __future__ import annotations

import copy
from collections import defaultdict

import torch
from torch import nn


class ModelEma:
    """`module` holds ema = decay * ema + (1 - decay) * model after each `update_parameters(model)`; the first
    update copies the model. Parameters and buffers are matched by position (the model's own layout)."""

    def __init__(self, model: nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = float(decay)
        self.module = copy.deepcopy(model)
        for m in self.module.modules():  # Module.compile() state: a copy would call the original's forward
            m.__dict__.pop("_compiled_call_impl", None)
        self.module.requires_grad_(False)
        self.n_averaged = 0

    def _pairs(self, model: nn.Module):
        ema = list(self.module.parameters()) + list(self.module.buffers())
        src = list(model.parameters()) + list(model.buffers())
        if len(ema) != len(src):
            raise ValueError(f"EMA: the model has {len(src)} parameters and buffers, its average {len(ema)}")
        return zip(ema, src)

    @torch.no_grad()
    def update_parameters(self, model: nn.Module) -> None:
        groups: dict[tuple, tuple[list, list]] = defaultdict(lambda: ([], []))
        for ema_t, src_t in self._pairs(model):
            if self.n_averaged == 0 or not ema_t.is_floating_point():
                ema_t.copy_(src_t)  # first update, and integer buffers (step counters): the model's value
            else:
                dst, src = groups[(ema_t.device, ema_t.dtype)]
                dst.append(ema_t)
                src.append(src_t.detach().to(ema_t.dtype))
        for dst, src in groups.values():
            torch._foreach_lerp_(dst, src, 1.0 - self.decay)
        self.n_averaged += 1

    def state_dict(self) -> dict:
        return self.module.state_dict()

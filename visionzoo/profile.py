"""Parameter and FLOP counts without running real arithmetic (meta tensors)."""
from __future__ import annotations

import copy

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def gflops(model: nn.Module, input_size, on_meta: bool = True) -> float | None:
    """Multiply-add GFLOPs (the convention of torchvision's and the papers' tables) for one image of
    `input_size` (C, H, W). FlopCounterMode counts a multiply-add as two FLOPs, hence the /2."""
    try:
        probe = model
        if on_meta:
            probe = copy.deepcopy(model).to("meta") if any(p.device.type != "meta" for p in model.parameters()) else model
        device = "meta" if on_meta else next(model.parameters()).device
        was_training = probe.training
        probe.eval()
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            probe(torch.empty((1, *input_size), device=device))
        probe.train(was_training)
        return counter.get_total_flops() / 2 / 1e9
    except Exception:  # models that need more than an image tensor (detection targets, pairs)
        return None

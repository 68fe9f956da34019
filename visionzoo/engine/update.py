"""One optimisation update, written once: the trainer, the diagnostics (lr finder, overfit check, layer
statistics) and the benchmarks all step a model through this object, so they cannot drift apart in how
losses are summed, scaled, clipped or accumulated.

An `Updater` builds from a config what an update needs (the task's update phases, one optimizer per
`optimizers.<name>` or the single `optim`, their lr schedules, the fp16 grad scaler, autocast) and runs one
update: for each phase due at this step the task's `training_losses`, backward (scaled, divided over the
accumulation window), and at the window's end gradient averaging across ranks (when DDP cannot), clipping,
the optimizer and scheduler steps. Observers (trainer hooks, ActivationStats) see each optimizer step."""
from __future__ import annotations

import contextlib

import torch
import torch.distributed as dist
from torch import nn

from visionzoo.engine.evaluator import autocast_context
from visionzoo.engine.optim import build_optimizer, build_scheduler


def build_optimizers(model: nn.Module, cfg) -> dict[str, torch.optim.Optimizer]:
    """One optimizer per `optimizers.<name>` of the config, else {"main": the `optim` section's}."""
    optim_cfgs = cfg.optimizers or {"main": cfg.optim}
    return {name: build_optimizer(model, oc, f"optimizers.{name}" if cfg.optimizers else "optim")
            for name, oc in optim_cfgs.items()}


def average_gradients(params: list[torch.Tensor], world_size: int) -> None:
    """Mean of every rank's gradients, in one flat all-reduce. For tasks that DistributedDataParallel cannot
    wrap (several forwards per update, or players updated in turn); a parameter without a gradient on some
    rank contributes zeros, so every rank reduces the same buffer."""
    if not params:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch._utils._flatten_dense_tensors(grads)
    dist.all_reduce(flat)
    flat /= world_size
    for p, g in zip(params, torch._utils._unflatten_dense_tensors(flat, grads)):
        if p.grad is None:
            p.grad = g
        else:
            p.grad.copy_(g)


def total_loss(losses: dict[str, torch.Tensor], phases: list) -> dict[str, torch.Tensor]:
    """The one summation rule: with several phases, "loss" is the sum of the `<phase>_loss` terms of the
    phases that ran (a single phase's terms are not prefixed and carry their own "loss")."""
    if len(phases) > 1 and "loss" not in losses:
        ran = [losses[f"{p.name}_loss"].detach() for p in phases if f"{p.name}_loss" in losses]
        losses["loss"] = sum(ran)
    return losses


class Updater:
    """Optimizers, schedules, update phases, grad scaler and precision of the task's config for `model`, and
    `update()`.

    `updates_per_epoch` and `epochs` give the lr schedules their grid; without them (a diagnostic that sets
    the lr itself) there are no schedulers. `accumulate` defaults to cfg.train.accumulate."""

    def __init__(self, task, model: nn.Module, device: torch.device, updates_per_epoch: int | None = None,
                 epochs: int | None = None, accumulate: int | None = None):
        cfg = task.cfg
        self.cfg, self.task, self.model, self.device = cfg, task, model, device
        self.forward_model: nn.Module = model  # what the task calls: the model, its DDP wrapper or compiled form
        self.ddp = None  # the DistributedDataParallel wrapper, when the task's updates allow one
        self.world_size = 1
        self.accumulate = cfg.train.accumulate if accumulate is None else accumulate
        self.phases = task.update_phases()
        self.optimizers = build_optimizers(model, cfg)
        for phase in self.phases:
            if phase.optimizer not in self.optimizers:
                raise ValueError(f"task {task.name!r} updates with optimizer {phase.optimizer!r}, but the config "
                                 f"defines {sorted(self.optimizers)}: add optimizers.{phase.optimizer}")
        if len(self.phases) > 1 and self.accumulate > 1:
            raise ValueError("train.accumulate > 1 is not supported for tasks with several update phases")
        self.schedulers = {} if updates_per_epoch is None else {
            name: build_scheduler(opt, cfg.schedule, updates_per_epoch, epochs)
            for name, opt in self.optimizers.items()}
        self.scaler = torch.amp.GradScaler(device.type, enabled=cfg.train.amp == "fp16")
        self.stepped = False  # whether the last update() stepped an optimizer (the end of an accumulation window)

    # ---- placement --------------------------------------------------------------------------
    def distribute(self, world_size: int) -> None:
        """Under torchrun: wrap the model in DistributedDataParallel when each update is one forward and one
        backward through it; otherwise start every rank from rank 0's weights and average the gradients in
        update(). Then torch.compile when the config asks."""
        self.world_size = world_size
        cfg, model = self.cfg, self.model
        if world_size > 1:
            if self.task.one_forward_per_update() and len(self.phases) == 1:
                self.ddp = torch.nn.parallel.DistributedDataParallel(
                    model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                    find_unused_parameters=cfg.train.find_unused_parameters)
                self.forward_model = self.ddp
            else:
                for tensor in list(model.parameters()) + list(model.buffers()):
                    dist.broadcast(tensor.data, src=0)
        if cfg.train.compile:
            players = self.players()
            if players:  # the task calls each player itself (a GAN), never the model: compile them in place
                for player in players:
                    player.compile()
            else:
                self.forward_model = torch.compile(self.forward_model)

    def players(self) -> list[nn.Module]:
        """The sub-modules that tasks with several update phases train in turn (a GAN's generator and
        discriminator: `optimizers.<name>.params`); empty for a model updated as a whole."""
        if len(self.phases) < 2:
            return []
        paths = {self.cfg.optimizers[p.optimizer].params for p in self.phases if p.optimizer in self.cfg.optimizers}
        return [self.model.get_submodule(path) for path in sorted(paths) if path]

    # ---- the update -------------------------------------------------------------------------
    def update(self, batch, step: int, window_start: bool = True, window_end: bool = True,
               observers=()) -> dict[str, torch.Tensor]:
        """Every phase due at global step `step` (phase.every): zero the grads at the start of an accumulation
        window, forward and backward; at its end average, clip and step. Each observer's
        `after_backward(optimizer)` and `after_optimizer_step()` frame every optimizer step. Returns the loss
        terms (prefixed by the phase name when there are several) with "loss" their total."""
        cfg, accumulate = self.cfg, self.accumulate
        all_losses: dict[str, torch.Tensor] = {}
        self.stepped = False
        for phase in self.phases:
            if step % phase.every:
                continue
            optimizer = self.optimizers[phase.optimizer]
            if window_start:
                self.model.zero_grad(set_to_none=True)
            # DDP all-reduces gradients in its backward hooks; in an accumulation window only the last one needs to
            sync = contextlib.nullcontext() if self.ddp is None or window_end else self.ddp.no_sync()
            with sync:
                with autocast_context(self.device, cfg.train.amp):
                    losses = self.task.training_losses(self.forward_model, batch, phase)
                if "loss" not in losses:
                    raise KeyError(f"task {self.task.name!r} returned no 'loss' term for phase {phase.name!r}")
                self.scaler.scale(losses["loss"] / accumulate).backward()
            prefix = "" if len(self.phases) == 1 else f"{phase.name}_"
            all_losses.update({prefix + k: v for k, v in losses.items()})
            if window_end:
                self._step(phase, optimizer, observers)
        if self.stepped:
            self.scaler.update()
        return total_loss(all_losses, self.phases)

    def _step(self, phase, optimizer: torch.optim.Optimizer, observers) -> None:
        params = [p for g in optimizer.param_groups for p in g["params"]]
        if self.world_size > 1 and self.ddp is None:
            average_gradients(params, self.world_size)
        if self.cfg.train.grad_clip:
            self.scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(params, self.cfg.train.grad_clip)
        for observer in observers:
            observer.after_backward(optimizer)
        self.scaler.step(optimizer)
        for observer in observers:
            observer.after_optimizer_step()
        if phase.optimizer in self.schedulers:
            self.schedulers[phase.optimizer].step()
        self.stepped = True

    # ---- lr and state -----------------------------------------------------------------------
    def current_lr(self) -> float:
        return float(next(iter(self.optimizers.values())).param_groups[0]["lr"])

    def set_lr(self, lr: float) -> None:
        for opt in self.optimizers.values():
            for group in opt.param_groups:
                group["lr"] = lr

    def state_dict(self) -> dict:
        """The checkpoint entries of the optimisation state (their keys are the checkpoint format's)."""
        return {"optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
                "schedulers": {k: s.state_dict() for k, s in self.schedulers.items()},
                "scaler": self.scaler.state_dict()}

    def load_state_dict(self, ckpt: dict, where) -> None:
        missing = set(self.optimizers) ^ set(ckpt["optimizers"])
        if missing:
            raise ValueError(f"{where}: checkpoint optimizers {sorted(ckpt['optimizers'])} do not match the config's "
                             f"{sorted(self.optimizers)}")
        for k, opt in self.optimizers.items():
            opt.load_state_dict(ckpt["optimizers"][k])
            self.schedulers[k].load_state_dict(ckpt["schedulers"][k])
        self.scaler.load_state_dict(ckpt["scaler"])

    def move_schedules(self, updates: int) -> None:
        """Put every lr schedule at update `updates` (a resume on another steps-per-epoch grid)."""
        for scheduler in self.schedulers.values():
            scheduler.last_epoch = updates
            lrs = [base * fn(updates) for base, fn in zip(scheduler.base_lrs, scheduler.lr_lambdas)]
            for group, lr in zip(scheduler.optimizer.param_groups, lrs):
                group["lr"] = lr
            scheduler._last_lr = lrs

"""Overfit check (the first sanity test of a training setup, as in Karpathy's "recipe for training neural
networks"): a working model, loss and data pipeline can memorise a handful of training samples. The check
trains on K samples with augmentation off until the training error is ~0 (or the loss has fallen to a small
fraction of its start) within a step budget, and otherwise says what went wrong."""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field

import torch
from tqdm.auto import tqdm

from visionzoo.diagnostics.common import build_setup, subset
from visionzoo.reports.figures import new_figure


@dataclass
class OverfitResult:
    status: str  # "passed", "failed" or "inconclusive" (GANs: no loss that should reach 0)
    verdict: str  # one line for the console
    steps: int
    samples: int
    losses: list[float]
    errors: list[tuple[int, float]]  # (step, training error) where the task defines an error
    reached_step: int | None = None
    diagnosis: str | None = None  # "loss_nan", "not_falling", "one_class", "not_enough_steps"
    predicted_classes: list[int] | None = None
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


# --- per-task training error (eval mode, so dropout is off and BatchNorm uses its running statistics) ------

@torch.no_grad()
def _classification_error(model, batch):
    images, targets = batch[0], batch[1]
    pred = model(images).argmax(1)
    return pred, targets, float((pred != targets).float().mean())


@torch.no_grad()
def _segmentation_error(model, batch):
    images, masks = batch[0], batch[1]
    out = model(images)
    logits = out["out"] if isinstance(out, dict) else out
    pred = logits.argmax(1)
    valid = masks != 255
    return pred[valid], masks[valid], float((pred[valid] != masks[valid]).float().mean())


ERROR_FUNCTIONS = {"classification": _classification_error, "segmentation": _segmentation_error}
DEFAULT_TARGET_ERROR = {"classification": 0.0, "segmentation": 0.01}


def diagnose(losses: list[float], *, error: float | None, target_error: float | None, target_loss: float,
             predicted: torch.Tensor | None, targets: torch.Tensor | None, min_drop: float = 0.1,
             lr: float | None = None) -> tuple[str, str]:
    """(diagnosis, message) for a run that did not reach its target. Checked in order: non-finite loss, a model
    that predicts one class for inputs of several classes, a loss that did not fall by `min_drop` of its start,
    and otherwise too few steps."""
    bad = next((i for i, v in enumerate(losses) if not math.isfinite(v)), None)
    if bad is not None:
        return "loss_nan", (f"loss {losses[bad]} at step {bad + 1}: lower the lr, check the inputs for NaN/inf and "
                            "the loss for log(0) or division by zero")
    if predicted is not None and targets is not None and targets.numel():
        n_pred, n_true = int(predicted.unique().numel()), int(targets.unique().numel())
        if n_pred == 1 and n_true > 1:
            return "one_class", (f"predicts one class ({int(predicted.flatten()[0])}) for every input while the "
                                 f"samples have {n_true} classes: check the labels, the loss and the lr (too high "
                                 "can collapse the output; too low never leaves the prior)")
    head = losses[: max(1, min(5, len(losses) // 10))]
    tail = losses[-max(1, min(5, len(losses) // 10)):]
    first, last = sum(head) / len(head), sum(tail) / len(tail)
    if last > (1 - min_drop) * first:
        lr_text = "the lr" if lr is None else f"the lr ({lr:.3g})"
        return "not_falling", (f"loss not falling ({first:.4g} -> {last:.4g} in {len(losses)} steps): check {lr_text}, "
                               "that the labels match the inputs, and the loss (a detached graph, a frozen model)")
    what = f"training error {error:.3g}" if error is not None else f"loss {last:.4g}"
    goal = f"error <= {target_error:g}" if target_error is not None else f"loss <= {target_loss:.4g}"
    return "not_enough_steps", (f"the loss fell ({first:.4g} -> {last:.4g}) but {what} is short of {goal} after "
                                f"{len(losses)} steps: give more --steps or a higher lr; a model that cannot fit a "
                                "few samples may lack capacity or see contradictory labels")


def overfit_check(cfg, *, samples: int = 16, steps: int = 300, batch_size: int | None = None,
                  target_error: float | None = None, target_loss: float | None = None, rel_target_loss: float = 0.05,
                  eval_every: int = 10, device: str | None = None, seed: int = 0,
                  progress: bool = True) -> OverfitResult:
    """Train the config's model on `samples` training samples (augmentation off, each sample with the same
    random state every pass) for at most `steps` steps.

    Success: classification / segmentation, the training error (eval mode, all K samples) <= `target_error`
    (0 and 1 % of the pixels by default); other tasks, the loss <= `target_loss` (default `rel_target_loss` x
    the first step's loss). GANs have no loss that should reach 0: their result is "inconclusive" with the
    losses recorded."""
    started = time.time()
    setup = build_setup(cfg, device=device, augment=False)
    task = setup.task
    data = subset(setup.train_set, samples, seed)
    batch_size = batch_size or min(samples, cfg.data.batch_size)
    error_fn = ERROR_FUNCTIONS.get(task.name)
    if target_error is None and error_fn is not None:
        target_error = DEFAULT_TARGET_ERROR[task.name]
    adversarial = len(setup.phases) > 1
    eval_batches = [task.to_device(b, setup.device, cfg.train.channels_last)
                    for b, _, _ in setup.loader(data, batch_size, shuffle=False, drop_last=False, num_workers=0)
                    ] if error_fn else []
    batches = setup.batches(data, batch_size, fixed_epoch=True)

    def training_error():
        setup.model.eval()
        preds, trues, wrong, total = [], [], 0.0, 0
        for b in eval_batches:
            p, t, e = error_fn(setup.model, b)
            preds.append(p.flatten().cpu())
            trues.append(t.flatten().cpu())
            wrong += e * t.numel()
            total += t.numel()
        setup.model.train()
        return wrong / max(total, 1), torch.cat(preds), torch.cat(trues)

    losses, errors = [], []
    reached, predicted, targets, error = None, None, None, None
    try:
        bar = tqdm(range(steps), desc=f"overfit {samples} samples", unit="step", dynamic_ncols=True, disable=not progress)
        for step in bar:
            loss = setup.train_step(next(batches), step)["loss"]
            losses.append(loss)
            if not math.isfinite(loss):
                break
            if target_loss is None and not adversarial:
                target_loss = rel_target_loss * loss
            postfix = {"loss": f"{loss:.4g}"}
            if error_fn is not None and ((step + 1) % eval_every == 0 or step + 1 == steps):
                error, predicted, targets = training_error()
                errors.append((step + 1, error))
                postfix["error"] = f"{error:.3g}"
                if error <= target_error:
                    reached = step + 1
            elif error_fn is None and not adversarial and loss <= target_loss:
                reached = step + 1
            bar.set_postfix(postfix)
            if reached is not None:
                break
    finally:
        batches.close()  # stops the loader's workers
    bar.close()

    result = OverfitResult("failed", "", len(losses), samples, losses, errors, reached,
                           predicted_classes=None if predicted is None else sorted(predicted.unique().tolist()),
                           seconds=round(time.time() - started, 2), notes=list(setup.notes))
    nan = next((i for i, v in enumerate(losses) if not math.isfinite(v)), None)
    if reached is not None:
        result.status = "passed"
        result.verdict = (f"reached {'0' if target_error == 0 else f'<= {target_error:g}'} training error at step "
                          f"{reached} ({samples} samples)" if error_fn is not None else
                          f"loss fell to {losses[-1]:.4g} (<= {target_loss:.4g}, {rel_target_loss:g} x the first "
                          f"step's) at step {reached} ({samples} samples)")
    elif adversarial and nan is None:
        result.status = "inconclusive"
        result.verdict = (f"adversarial training has no loss that should reach 0: losses finite over {len(losses)} "
                          f"steps, summed phase loss {losses[0]:.4g} -> {losses[-1]:.4g}; look at the samples instead")
    else:
        result.diagnosis, message = diagnose(losses, error=error, target_error=target_error,
                                             target_loss=target_loss if target_loss is not None else 0.0,
                                             predicted=predicted, targets=targets,
                                             lr=next(iter(setup.optimizers.values())).param_groups[0]["lr"])
        result.verdict = message
    return result


def loss_figure(result: OverfitResult, title: str = "Overfit check"):
    fig = new_figure(7, 3.6)
    ax = fig.add_subplot()
    steps = list(range(1, len(result.losses) + 1))
    ax.plot(steps, result.losses, color="#1f77b4", label="training loss")
    if all(v > 0 for v in result.losses if math.isfinite(v)):
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    if result.errors:
        ax2 = ax.twinx()
        ax2.plot([s for s, _ in result.errors], [e for _, e in result.errors], color="#d62728", marker="o",
                 markersize=3, label="training error")
        ax2.set_ylabel("training error")
        ax2.set_ylim(-0.02, 1.02)
    ax.set_title(f"{title}: {result.status}", fontsize=11)
    ax.grid(True, alpha=0.3)
    return fig

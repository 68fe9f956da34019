"""Diagnostics for making training work, on any task's config.

    python -m visionzoo.diagnose lr-find CONFIG [KEY=VALUE ...] [--steps 100] [--start-lr 1e-7] [--end-lr 10]
    python -m visionzoo.diagnose overfit CONFIG [KEY=VALUE ...] [--samples 16] [--steps 300]
    python -m visionzoo.diagnose gradcheck MODEL_OR_CALLABLE [--input-shape 1,3,32,32 ...] [--submodule PATH]
    python -m visionzoo.diagnose stats CONFIG [KEY=VALUE ...] [--steps 50] [--interval 5]
    python -m visionzoo.diagnose visualize TARGET [--image PNG ...] [--layer layer1] [--channel 0]
    python -m visionzoo.diagnose gan-classes TARGET [--samples 60000] [--per-class 1000] [--split test]

Outputs go to --out (default: OUTPUT_DIR/diagnose/NAME/COMMAND, e.g. runs/diagnose/resnet18_shapes/lr_find).
TARGET of visualize and gan-classes is a run directory, a checkpoint or a weights file with its model card (as evaluate.py).
Exit codes: 0 done (or the check passed), 1 bad input, 2 the check failed (overfit, gradcheck).
"""
from __future__ import annotations

import argparse
import difflib
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from torchvision.transforms import v2
from tqdm.auto import tqdm

from visionzoo.config import ConfigError, load_config
from visionzoo.datasets.common import ImageReadError
from visionzoo.diagnostics import visualize as vis
from visionzoo.diagnostics.common import build_setup, find_module
from visionzoo.diagnostics.gan_classes import check_arguments, class_balance, summary_lines
from visionzoo.diagnostics.gradcheck import check_function, check_model, check_module, load_callable
from visionzoo.diagnostics.lr_finder import lr_find_config, save_lr_find
from visionzoo.diagnostics.overfit import loss_figure, overfit_check
from visionzoo.diagnostics.report import build_stats_report
from visionzoo.diagnostics.stats import ActivationStats
from visionzoo.engine.targets import build_target_model, load_target, pick_split
from visionzoo.registry import list_models
from visionzoo.reports.html import HtmlReport
from visionzoo.tasks import task_for
from visionzoo.tasks.classification.task import build_transforms

COMMANDS = ("lr-find", "overfit", "gradcheck", "stats", "visualize", "gan-classes")


def _shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(v) for v in text.replace("x", ",").split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a shape like 1,3,32,32") from None
    if not shape or any(s < 1 for s in shape):
        raise argparse.ArgumentTypeError(f"{text!r} is not a shape of positive sizes like 1,3,32,32")
    return shape


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m visionzoo.diagnose", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def config_command(name, help_text):
        s = sub.add_parser(name, help=help_text, description=help_text)
        s.add_argument("config", help="YAML config file")
        s.add_argument("overrides", nargs="*", help="config overrides KEY=VALUE (as train.py)")
        s.add_argument("--device", help="cpu, cuda, cuda:1 (default: the config's train.device)")
        s.add_argument("--workers", type=int, help="data-loading workers (default: the config's)")
        s.add_argument("--out", help="output directory")
        s.add_argument("--no-progress", action="store_true")
        return s

    s = config_command("lr-find", "learning-rate range test: sweep the lr exponentially, plot loss against lr, "
                                  "suggest a value")
    s.add_argument("--start-lr", type=float, default=1e-7)
    s.add_argument("--end-lr", type=float, default=10.0)
    s.add_argument("--steps", type=int, default=100)
    s.add_argument("--smooth", type=float, default=0.9, help="EMA factor of the loss (default 0.9)")
    s.add_argument("--diverge", type=float, default=4.0, help="stop when the loss exceeds this x its best")

    s = config_command("overfit", "train on a few samples without augmentation until the training error is ~0")
    s.add_argument("--samples", type=int, default=16)
    s.add_argument("--steps", type=int, default=300, help="step budget")
    s.add_argument("--batch-size", type=int, help="default: min(samples, data.batch_size)")
    s.add_argument("--target-error", type=float, help="success threshold of the training error (classification 0, "
                                                      "segmentation 0.01)")
    s.add_argument("--target-loss", type=float, help="success threshold of the loss for tasks without an error "
                                                     "(default: 0.05 x the first step's loss)")
    s.add_argument("--eval-every", type=int, default=10)

    s = config_command("stats", "per-layer activation / weight / gradient statistics during a short training run")
    s.add_argument("--steps", type=int, default=50)
    s.add_argument("--interval", type=int, default=5, help="record every n-th step")

    s = sub.add_parser("gradcheck", help="compare analytic gradients with finite differences (float64)")
    s.add_argument("target", help="a registered model name, or package.module:attribute (an nn.Module class built "
                                  "with no arguments, or a function of tensors)")
    s.add_argument("--input-shape", type=_shape, action="append", metavar="SHAPE",
                   help="shape of an input, e.g. 1,3,32,32; repeat for several inputs")
    s.add_argument("--submodule", help="check this sub-module of the model (e.g. backbone.body)")
    s.add_argument("--mode", choices=("eval", "train"), default="eval",
                   help="eval (default): BatchNorm running statistics, no dropout; train: batch statistics")
    s.add_argument("--no-params", action="store_true", help="check the input gradients only")
    s.add_argument("--fast", action="store_true", help="random-projection checks even for small inputs")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--json", help="write the results to this JSON file")
    s.add_argument("--no-progress", action="store_true")

    s = sub.add_parser("visualize", help="first-layer filters, feature maps, top-activating images, saliency")
    s.add_argument("target", help="run directory, checkpoint (.pt) or weights (.safetensors) with its model card")
    s.add_argument("--image", action="append", default=[], help="an input image (repeat for several)")
    s.add_argument("--layer", help="layer whose feature maps to show (default: the first conv layer)")
    s.add_argument("--channel", type=int, default=0, help="channel of --layer for the top-activating images")
    s.add_argument("--top-k", type=int, default=9)
    s.add_argument("--max-images", type=int, default=500, help="dataset images searched for the top activations")
    s.add_argument("--data", help="dataset root (default: the config's data.root)")
    s.add_argument("--split", default="val")
    s.add_argument("--class", dest="target_class", help="class (name or index) for the saliency maps "
                                                        "(default: the predicted one)")
    s.add_argument("--device", default="cpu")
    s.add_argument("--out", help="output directory")
    s.add_argument("--no-progress", action="store_true")
    s = sub.add_parser("gan-classes", help="how a GAN's samples read to the classifier behind its FID features: "
                                           "class mix, confident share, FID as drawn and class-balanced")
    s.add_argument("target", help="run directory, checkpoint (.pt) or weights (.safetensors) with its model card")
    s.add_argument("--samples", type=int, default=60000, help="samples drawn (default 60000)")
    s.add_argument("--per-class", type=int, default=1000,
                   help="samples per class in the balanced FIDs (default 1000; fewer if a class has fewer)")
    s.add_argument("--sure", type=float, default=0.9, help="softmax above which a sample counts as sure")
    s.add_argument("--features", help="FID feature extractor spec (default: the config's eval.fid_features)")
    s.add_argument("--data", help="dataset root of the real images (default: the config's data.root)")
    s.add_argument("--split", help="split of the real images (default: test if the data set has one, else val)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--device", default="cpu")
    s.add_argument("--out", help="output directory (default: OUTPUT_DIR/diagnose/MODEL/gan_classes)")
    s.add_argument("--no-progress", action="store_true")
    # argparse cannot intermix options and positionals under sub-commands: overrides that follow an option
    # come back unparsed, and are taken here when they look like KEY=VALUE
    args, extra = p.parse_known_args(argv)
    unknown = [e for e in extra if e.startswith("-") or "=" not in e or not hasattr(args, "overrides")]
    if unknown:
        p.error(f"unrecognized arguments: {' '.join(unknown)}")
    if extra:
        args.overrides = list(args.overrides) + extra
    return args


def _load_cfg(args):
    cfg = load_config(args.config, args.overrides)
    if args.workers is not None:
        cfg.data.num_workers = args.workers
    return cfg


def _out_dir(args, cfg, command: str) -> Path:
    if args.out:
        return Path(args.out)
    return Path(cfg.output.dir) / "diagnose" / cfg.output.name / command.replace("-", "_")


def _write_jsonl(path: Path, records) -> None:
    with path.open("w") as f:
        for r in records:
            f.write(json.dumps(r, default=str) + "\n")


def cmd_lr_find(args) -> int:
    cfg = _load_cfg(args)
    started = time.time()
    result = lr_find_config(cfg, start_lr=args.start_lr, end_lr=args.end_lr, steps=args.steps, smooth=args.smooth,
                            diverge=args.diverge, device=args.device, progress=not args.no_progress)
    result.seconds = round(time.time() - started, 2)
    out = _out_dir(args, cfg, "lr-find")
    files = save_lr_find(result, out, title=f"lr range test: {cfg.model.name} ({Path(args.config).name})")
    print(result.summary())
    for note in result.notes:
        print(f"note: {note}")
    print(json.dumps({"suggested_lr": result.suggested_lr, "steepest_lr": result.steepest_lr,
                      "min_loss_lr": result.min_loss_lr, "steps_run": len(result.lrs),
                      "stopped_early": result.stopped_early, "seconds": result.seconds}))
    print(f"plot: {files['png']}\ndata: {files['json']}")
    return 0


def cmd_overfit(args) -> int:
    cfg = _load_cfg(args)
    result = overfit_check(cfg, samples=args.samples, steps=args.steps, batch_size=args.batch_size,
                           target_error=args.target_error, target_loss=args.target_loss, eval_every=args.eval_every,
                           device=args.device, progress=not args.no_progress)
    out = _out_dir(args, cfg, "overfit")
    out.mkdir(parents=True, exist_ok=True)
    (out / "overfit.json").write_text(json.dumps(result.to_dict(), indent=2))
    loss_figure(result, f"Overfit check: {cfg.model.name}").savefig(out / "overfit.png", dpi=110)
    for note in result.notes:
        print(f"note: {note}")
    print(f"{result.status}: {result.verdict}")
    print(f"plot: {out / 'overfit.png'}\ndata: {out / 'overfit.json'}")
    return 2 if result.status == "failed" else 0


def cmd_gradcheck(args) -> int:
    params = not args.no_params
    fast = True if args.fast else None
    if ":" not in args.target:
        if args.target not in list_models():
            close = difflib.get_close_matches(args.target, list_models(), n=3)
            raise ValueError(f"unknown model {args.target!r}" + (f"; did you mean {', '.join(close)}?" if close else "")
                             + " (or give package.module:attribute)")
        results = check_model(args.target, input_shapes=args.input_shape, submodule=args.submodule, params=params,
                              mode=args.mode, seed=args.seed, fast=fast, progress=not args.no_progress)
    else:
        obj = load_callable(args.target)
        if not args.input_shape:
            raise ValueError(f"give the input shapes of {args.target} with --input-shape (once per input)")
        g = torch.Generator().manual_seed(args.seed)
        inputs = [torch.randn(s, generator=g, dtype=torch.float64) for s in args.input_shape]
        if isinstance(obj, type) and issubclass(obj, nn.Module):
            module = obj()
            if args.submodule:
                module = find_module(module, args.submodule, what="sub-module")
            results = check_module(module, inputs, name=args.target, params=params, mode=args.mode, seed=args.seed,
                                   fast=fast, progress=not args.no_progress)
        elif isinstance(obj, nn.Module):
            results = check_module(obj, inputs, name=args.target, params=params, mode=args.mode, seed=args.seed,
                                   fast=fast, progress=not args.no_progress)
        elif callable(obj):
            results = check_function(obj, inputs, name=args.target, fast=fast, seed=args.seed)
        else:
            raise ValueError(f"{args.target} is a {type(obj).__name__}, not a module or a function")
    for r in results:
        print(r.line())
    failed = [r for r in results if not r.passed]
    print(f"{len(results) - len(failed)} of {len(results)} checks passed")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps([r.to_dict() for r in results], indent=2))
    return 2 if failed else 0


def cmd_stats(args) -> int:
    cfg = _load_cfg(args)
    if args.steps < 1:
        raise ValueError(f"--steps must be >= 1, got {args.steps}")
    started = time.time()
    setup = build_setup(cfg, device=args.device)
    stats = ActivationStats(interval=args.interval).attach(setup.model)
    batches = setup.batches()
    losses = []
    bar = tqdm(range(args.steps), desc="training with layer statistics", unit="step", dynamic_ncols=True,
               disable=args.no_progress)
    try:
        for step in bar:
            losses.append(setup.train_step(next(batches), step, stats=stats)["loss"])
            bar.set_postfix(loss=f"{losses[-1]:.4g}")
    finally:
        batches.close()  # stops the loader's workers
        bar.close()
    stats.detach()
    out = _out_dir(args, cfg, "stats")
    out.mkdir(parents=True, exist_ok=True)
    _write_jsonl(out / "stats.jsonl", stats.to_json_records())
    info = {"config": args.config, "overrides": " ".join(args.overrides) or None, "model": cfg.model.name,
            "steps": args.steps, "interval": args.interval, "device": str(setup.device),
            "hooked layers": len(stats.hooked_layers), "seconds": round(time.time() - started, 1)}
    report = build_stats_report(out / "report.html", stats=stats, losses=losses, info=info,
                                title=f"Layer statistics: {cfg.model.name} ({Path(args.config).name})")
    warnings = stats.warnings()
    for w in warnings:
        print(f"warning: step {w['step']}: {w['message']}")
    print(json.dumps({"steps": args.steps, "recorded": len(stats.records), "warnings": len(warnings),
                      "first_loss": losses[0], "last_loss": losses[-1], "seconds": info["seconds"]}))
    print(f"report: {report}\ndata: {out / 'stats.jsonl'}")
    return 0


def _preprocess(cfg, task_name: str):
    """The evaluation preprocessing of the target's config (classification's own transform; otherwise resize
    to data.input_size and normalise with data.mean / data.std)."""
    if task_name == "classification":
        return build_transforms(cfg, train=False)
    size = cfg.data.input_size
    ops = [v2.ToImage(), v2.Resize((size, size), antialias=True), v2.ToDtype(torch.float32, scale=True)]
    if cfg.data.mean is not None and cfg.data.std is not None:
        ops.append(v2.Normalize(cfg.data.mean, cfg.data.std))
    return v2.Compose(ops)


def cmd_visualize(args) -> int:
    target = load_target(args.target)
    cfg = target.cfg
    if args.data:
        cfg.data.root = args.data
    task = task_for(cfg)
    class_names = target.meta.get("class_names")
    model = build_target_model(target, cfg)
    model = model.float().to(args.device).eval()
    out = Path(args.out) if args.out else Path(cfg.output.dir) / "diagnose" / cfg.model.name / "visualize"
    out.mkdir(parents=True, exist_ok=True)
    report = HtmlReport(f"What {cfg.model.name} sees", subtitle=str(args.target))
    summary: dict = {"target": str(args.target), "files": []}

    def save(image: Image.Image, name: str) -> Path:
        path = out / name
        image.save(path)
        summary["files"].append(str(path))
        return path

    conv_name, weights, grid = vis.first_layer_filters(model)
    save(grid, "filters.png")
    report.add_section("First-layer filters")
    report.add_image(None, grid, caption=f"{conv_name}: {weights.shape[0]} filters of "
                                         f"{weights.shape[1]}\u00d7{weights.shape[2]}\u00d7{weights.shape[3]}, each "
                                         "min-max normalised on its own.")
    layer = args.layer or conv_name
    vis.find_module(model, layer)  # an unknown name fails here, before any work, with the closest names
    preprocess = _preprocess(cfg, task.name)
    is_classifier = task.name == "classification"
    target_class = None
    if args.target_class is not None:
        if args.target_class.isdigit():
            target_class = int(args.target_class)
        elif class_names and args.target_class in class_names:
            target_class = class_names.index(args.target_class)
        else:
            raise ValueError(f"--class {args.target_class!r} is not a class index or one of {class_names}")
    if args.image:
        report.add_section(f"Feature maps of {layer}")
    saliency_items = []
    for i, path in enumerate(args.image):
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"--image {path}: no such file")
        pil = Image.open(path).convert("RGB")
        x = preprocess(pil).to(args.device)
        maps = vis.feature_maps(model, layer, x)
        grid = vis.feature_map_grid(maps)
        save(grid, f"features_{i}_{path.stem}.png")
        report.add_image(path.name, grid, caption=f"{maps.shape[0]} channels of {maps.shape[1]}\u00d7{maps.shape[2]} "
                                                  f"(first 64 shown), one common grey scale: "
                                                  f"min {maps.min():.3g}, max {maps.max():.3g}.")
        if is_classifier:
            sal, cls, score = vis.saliency(model, x, target_class)
            overlay = vis.heatmap_overlay(pil, sal)
            save(vis.heat_image(sal), f"saliency_{i}_{path.stem}.png")
            save(overlay, f"saliency_overlay_{i}_{path.stem}.png")
            np_path = out / f"saliency_{i}_{path.stem}.npy"
            np.save(np_path, sal)
            name = class_names[cls] if class_names and cls < len(class_names) else str(cls)
            saliency_items += [(pil.resize(overlay.size), path.name), (overlay, f"{name} (score {score:.2f})")]
    if saliency_items:
        report.add_section("Saliency")
        report.add_image_grid(None, saliency_items, columns=4,
                              caption="|d class score / d input pixel|, max over colour channels (Simonyan et al. "
                                      "2014), for the predicted class unless --class is given.")

    dataset = None
    try:
        dataset = task.build_dataset(args.split, train=False, class_names=class_names)
    except (FileNotFoundError, ValueError) as e:
        report.add_section("Top-activating images")
        report.add_note(f"no dataset to search ({e}); pass --data ROOT")
        print(f"note: top-activating images skipped: {e}", file=sys.stderr)
    if dataset is not None:
        if not isinstance(dataset[0][0], torch.Tensor) or dataset[0][0].ndim != 3:
            raise ValueError(f"{cfg.task} samples are not single images: top-activating images need an image dataset")
        top = vis.top_activating(model, layer, args.channel, dataset, k=args.top_k, max_images=args.max_images,
                                 device=args.device, progress=not args.no_progress)
        items = []
        for rank, (index, value) in enumerate(zip(top.indices, top.values)):
            image = dataset.load_image(index) if hasattr(dataset, "load_image") else None
            if image is None:
                continue
            save(image, f"top_{rank}_{index}.png")
            items.append((image, f"#{index}: {value:.3g}"))
        report.add_section(f"Top-activating images for {layer} channel {args.channel}")
        report.add_image_grid(None, items, columns=min(8, max(1, len(items))),
                              caption=f"The {len(items)} of {top.images_seen} '{args.split}' images with the highest "
                                      "spatial-mean activation of the channel (value under each).")
        summary["top_activating"] = {"layer": layer, "channel": args.channel, "indices": top.indices,
                                     "values": top.values}
    page = report.write(out / "visualize.html")
    (out / "visualize.json").write_text(json.dumps(summary, indent=2))
    print(f"wrote {len(summary['files'])} images\nreport: {page}")
    return 0


def cmd_gan_classes(args) -> int:
    check_arguments(args.samples, args.per_class, args.sure)  # before any loading
    target = load_target(args.target)
    cfg = target.cfg
    if cfg.task != "generative":
        raise ValueError(f"{args.target}: gan-classes needs a GAN, this is a {cfg.task} model ({cfg.model.name})")
    if args.data:
        cfg.data.root = args.data
    if args.features:
        cfg.eval.fid_features = args.features
    task = task_for(cfg)
    if task.kind != "gan":
        raise ValueError(f"{args.target}: gan-classes needs a GAN, {cfg.model.name} is a {task.kind} model")
    split = pick_split(task, args.split)
    gan = build_target_model(target, cfg).float().to(args.device).eval()
    extractor = task.feature_extractor(args.device)
    dataset = task.build_dataset(split, train=False)
    real = []
    for start in range(0, len(dataset), 1000):  # in chunks: a large split's images need not fit in memory at once
        chunk = torch.stack([dataset.image(i) for i in range(start, min(start + 1000, len(dataset)))])
        real.append(extractor(chunk).cpu())
    real = torch.cat(real)
    result = class_balance(gan, extractor, real, samples=args.samples, per_class=args.per_class, sure=args.sure,
                           seed=args.seed, show_progress=not args.no_progress)
    result.update(target=str(args.target), real_split=split, real_images=len(dataset))
    out = Path(args.out) if args.out else Path(cfg.output.dir) / "diagnose" / cfg.model.name / "gan_classes"
    out.mkdir(parents=True, exist_ok=True)
    (out / "gan_classes.json").write_text(json.dumps(result, indent=2))
    print("\n".join(summary_lines(result) + [f"against the {len(dataset)} images of split {split!r}",
                                               f"wrote {out / 'gan_classes.json'}"]))
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    handlers = {"lr-find": cmd_lr_find, "overfit": cmd_overfit, "gradcheck": cmd_gradcheck, "stats": cmd_stats,
                "visualize": cmd_visualize, "gan-classes": cmd_gan_classes}
    try:
        return handlers[args.command](args)
    except (ConfigError, FileNotFoundError, ValueError, ImageReadError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

"""`python evaluate.py TARGET --retrieval`: image retrieval with a classifier's features.

The gallery split (default: the config's train split) is indexed with the features of `--layer` (default:
the pooled penultimate features), each image of the query split (default: the test split, else val) is
searched for, and a result is relevant when it has the query's class. Writes metrics.json (+ report.html)
like the other evaluations, and `retrieval_<split>.json` into a run directory. One process: under torchrun
only rank 0 would be needed, so it is refused there.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from visionzoo.config import ConfigError, apply_overrides, to_dict, validate
from visionzoo.engine.evaluator import make_eval_loader
from visionzoo.engine.targets import apply_eval_options, build_target_model, load_target, pick_split
from visionzoo.engine.trainer import select_device
from visionzoo.features import LayerFeatures
from visionzoo.profile import count_parameters, gflops
from visionzoo.retrieval.metrics import retrieval_metrics
from visionzoo.retrieval.report import build_retrieval_report
from visionzoo.tasks import task_for

__all__ = ["embed_dataset", "run_retrieval"]


@torch.no_grad()
def embed_dataset(features: LayerFeatures, task, dataset, device, desc: str, show_progress: bool = True):
    """(features (N, D), labels (N,), dataset indices (N,), skipped samples) of a classification dataset,
    through the engine's evaluation loader (so unreadable files are skipped or reported as in evaluate)."""
    loader = make_eval_loader(task, dataset, device)
    feats, labels, indices, skipped = [], [], [], []
    for batch, batch_skipped, batch_indices in tqdm(loader, desc=desc, leave=False, dynamic_ncols=True,
                                                    disable=not show_progress):
        skipped.extend(batch_skipped)
        if batch is None:
            continue
        images, targets = task.to_device(batch, device, task.cfg.train.channels_last)
        feats.append(features(images).cpu())
        labels.append(targets.cpu())
        indices.extend(batch_indices)
    if not feats:
        raise ValueError(f"{desc}: no readable images")
    return torch.cat(feats), torch.cat(labels), indices, skipped


def _split_or_error(task, split: str, option: str) -> str:
    if not task.split_exists(split):
        raise FileNotFoundError(f"split folder {Path(task.cfg.data.root) / split} not found; choose another with {option}")
    return split


def run_retrieval(args) -> dict:
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError("--retrieval runs in one process; start it without torchrun")
    if getattr(args, "eval_config", None):
        raise ConfigError("--eval-config does not apply to --retrieval")
    target = load_target(args.target)
    cfg = target.cfg
    if args.overrides:
        cfg = validate(apply_overrides(to_dict(cfg), list(args.overrides)), where="overrides")
    if cfg.task != "classification":
        raise ConfigError(f"--retrieval needs a classifier trained on labelled images (an ImageFolder-style "
                          f"dataset); {args.target} is a {cfg.task} model")
    task = task_for(cfg)
    apply_eval_options(cfg, data=args.data, batch_size=args.batch_size, workers=args.workers, device=args.device)
    device = select_device(cfg.train.device)

    query_split = _split_or_error(task, pick_split(task, args.split), "--split")
    gallery_split = _split_or_error(task, args.gallery_split or cfg.data.train_split, "--gallery-split")

    class_names = target.meta.get("class_names")
    gallery = task.build_dataset(gallery_split, train=False, class_names=class_names)
    same = gallery_split == query_split
    queries = gallery if same else task.build_dataset(query_split, train=False, class_names=class_names)
    model = build_target_model(target, cfg).to(device)
    if cfg.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.eval()
    features = LayerFeatures(model, layer=args.layer, pool=args.pool or "avg")

    start = time.time()
    show = not args.no_progress
    g_feats, g_labels, g_index, g_skipped = embed_dataset(features, task, gallery, device,
                                                          f"features {gallery_split} (gallery)", show)
    if same:
        q_feats, q_labels, q_index, q_skipped = g_feats, g_labels, g_index, []
    else:
        q_feats, q_labels, q_index, q_skipped = embed_dataset(features, task, queries, device,
                                                              f"features {query_split} (queries)", show)
    embed_seconds = time.time() - start
    names = list(gallery.classes)
    result = retrieval_metrics(q_feats, q_labels, g_feats, g_labels, exclude_self=same, class_names=names)
    seconds = time.time() - start

    input_size = target.meta.get("input_size") or [3, cfg.data.input_size, cfg.data.input_size]
    summary = {"name": cfg.model.name, "task": cfg.task, "parameters": count_parameters(model),
               "gflops": gflops(model, input_size), "input_size": input_size, "weights": str(target.weights)}
    feature_info = {**features.describe(), "dim": int(g_feats.shape[1])}
    scalars = {k: float(v) for k, v in result.metrics.items()
               if (k == "mAP" or k.startswith(("recall@", "precision@"))) and v is not None}
    out = {
        "target": str(args.target), "command": "python evaluate.py " + " ".join(getattr(args, "argv", [])),
        "mode": "retrieval", "split": query_split, "gallery_split": gallery_split, "data_root": cfg.data.root,
        "num_samples": len(q_labels), "gallery_size": len(g_labels),
        "skipped_files": [s.path for s in g_skipped + q_skipped], "seconds": round(seconds, 2),
        "images_per_s": round((len(g_labels) + (0 if same else len(q_labels))) / max(embed_seconds, 1e-9), 2),
        "model": summary, "features": feature_info, "scalars": scalars, "metrics": result.metrics,
    }
    print(json.dumps({"split": query_split, "gallery_split": gallery_split, **scalars}))
    if target.run_dir is not None:
        (target.run_dir / f"retrieval_{query_split}.json").write_text(json.dumps(out, indent=2))
    if args.report:
        report_dir = Path(args.report)
        report_dir.mkdir(parents=True, exist_ok=True)
        (report_dir / "metrics.json").write_text(json.dumps(out, indent=2))
        info = {"query split": f"{query_split} ({len(q_labels):,} images)",
                "gallery split": f"{gallery_split} ({len(g_labels):,} images)"
                                 + (" (leave-one-out: each query is left out of its own gallery)" if same else ""),
                "data root": cfg.data.root, "features": f"{feature_info['layer']}, {feature_info['dim']}-d, "
                f"pool {feature_info['pool']}, {'L2-normalised' if features.normalize else 'not normalised'}",
                "similarity": result.metrics["similarity"], "seconds": round(seconds, 2)}
        run_info = {"config": to_dict(cfg), "run_dir": str(target.run_dir) if target.run_dir is not None else None,
                    "command": out["command"]}
        report = build_retrieval_report(
            report_dir / "report.html", result=result, class_names=names,
            query_image=lambda i: queries.load_image(q_index[i]), gallery_image=lambda j: gallery.load_image(g_index[j]),
            query_labels=q_labels.tolist(), gallery_labels=g_labels.tolist(), info=info, model_summary=summary,
            run_info=run_info,
            title=f"{cfg.model.name} retrieval on {Path(cfg.data.root).name if cfg.data.root else cfg.data.dataset} "
                  f"({query_split} \u2192 {gallery_split})")
        print(f"report: {report}")
    return out

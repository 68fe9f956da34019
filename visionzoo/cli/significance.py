"""Is classifier B really better than classifier A on the same test images? McNemar's exact test.

    python -m visionzoo.cli.significance --a runs/cnn_seed0 runs/cnn_seed1 --b runs/stn_seed0 runs/stn_seed1 --split test

Each target (run directory, checkpoint or weights file with its card) predicts every image of the split; the
i-th target of --a is paired with the i-th of --b (e.g. the same training seed) and the pairs of all of them are
pooled: b01 = images A got right and B wrong, b10 = the reverse; the p-value is the two-sided exact McNemar
test of visionzoo.tasks.classification.significance.
"""
from __future__ import annotations

import argparse
import json
import sys

import torch

from visionzoo.engine.evaluator import autocast_context, make_eval_loader
from visionzoo.engine.targets import apply_eval_options, build_target_model, load_target, pick_split
from visionzoo.engine.trainer import select_device
from visionzoo.tasks import task_for
from visionzoo.tasks.classification.significance import discordant, mcnemar_exact


@torch.no_grad()
def correct_predictions(target: str, split: str | None = None, data: str | None = None,
                        device: str | None = None) -> tuple[torch.Tensor, str]:
    """Whether the target's top-1 prediction is right, image by image, in dataset order; and the split used."""
    t = load_target(target)
    cfg = apply_eval_options(t.cfg, data=data, device=device)
    task = task_for(cfg)
    if task.name != "classification":
        raise ValueError(f"{target}: McNemar's test compares classifiers, this is a {task.name} model")
    split = pick_split(task, split)
    dev = select_device(cfg.train.device)
    model = build_target_model(t, cfg).to(dev).eval()
    dataset = task.build_dataset(split, train=False, class_names=t.meta.get("class_names"))
    right = torch.zeros(len(dataset), dtype=torch.bool)
    seen = torch.zeros(len(dataset), dtype=torch.bool)
    for batch, _, indices in make_eval_loader(task, dataset, dev):
        if batch is None:
            continue
        images, labels = task.to_device(batch, dev, False)
        with autocast_context(dev, cfg.train.amp):
            logits = model(images)
        index = torch.as_tensor(indices)
        right[index] = logits.float().argmax(1).cpu() == labels.cpu()
        seen[index] = True
    if not seen.all():
        raise ValueError(f"{target}: {int((~seen).sum())} images of split {split!r} could not be read")
    return right, split


def compare(a: list[str], b: list[str], split: str | None = None, data: str | None = None,
            device: str | None = None) -> dict:
    if len(a) != len(b) or not a:
        raise ValueError(f"--a and --b must list the same number of targets (got {len(a)} and {len(b)})")
    rows, b01, b10 = [], 0, 0
    for target_a, target_b in zip(a, b):
        right_a, split_a = correct_predictions(target_a, split, data, device)
        right_b, _ = correct_predictions(target_b, split_a, data, device)
        d01, d10 = discordant(right_a, right_b)
        b01, b10 = b01 + d01, b10 + d10
        rows.append({"a": target_a, "b": target_b, "images": len(right_a), "error_a": 1 - right_a.float().mean().item(),
                     "error_b": 1 - right_b.float().mean().item(), "a_right_b_wrong": d01, "a_wrong_b_right": d10,
                     "p_value": mcnemar_exact(d01, d10)})
    return {"split": split_a, "pairs": rows, "pooled": {"images": sum(r["images"] for r in rows),
            "a_right_b_wrong": b01, "a_wrong_b_right": b10, "p_value": mcnemar_exact(b01, b10)}}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--a", nargs="+", required=True, help="targets of classifier A (one per seed)")
    p.add_argument("--b", nargs="+", required=True, help="targets of classifier B, paired with --a in order")
    p.add_argument("--split", help="split (default: the config's test split, else val)")
    p.add_argument("--data", help="dataset root (default: each config's data.root)")
    p.add_argument("--device", help="cpu, cuda, ... (default: each config's)")
    args = p.parse_args(argv)
    try:
        result = compare(args.a, args.b, args.split, args.data, args.device)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for r in result["pairs"]:
        print(f"{r['a']} vs {r['b']}: error {100 * r['error_a']:.2f} % vs {100 * r['error_b']:.2f} %, "
              f"discordant {r['a_right_b_wrong']} / {r['a_wrong_b_right']}, p = {r['p_value']:.3g}")
    pooled = result["pooled"]
    print(f"pooled over {pooled['images']} pairs: discordant {pooled['a_right_b_wrong']} / {pooled['a_wrong_b_right']}, "
          f"McNemar exact p = {pooled['p_value']:.3g}")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

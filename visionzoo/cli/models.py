"""`visionzoo models`: the registered models, one model's details, or the packaged configs.

    visionzoo models                      # every model: task, family, weights found
    visionzoo models "resnet*" --task classification
    visionzoo models resnet18             # one model's details (parameters, GFLOPs, weights and their metrics)
    visionzoo models --configs            # the packaged configs `visionzoo train NAME` accepts
"""
from __future__ import annotations

import argparse
import fnmatch
import json
import sys

from visionzoo.cli.configs import PACKAGED_CONFIGS, packaged_config_names
from visionzoo.registry import TASKS, get_entry, list_models, model_info
from visionzoo.weights import available_weights


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("pattern", nargs="?", help="a model name (details) or an fnmatch pattern such as 'resnet*'")
    p.add_argument("--task", choices=TASKS, help="only models of this task")
    p.add_argument("--configs", action="store_true", help="list the packaged configs instead")
    p.add_argument("--json", action="store_true", help="print JSON")
    args = p.parse_args(argv)
    if args.configs:
        names = packaged_config_names()
        if args.pattern:
            names = [n for n in names if fnmatch.fnmatchcase(n, args.pattern) or args.pattern in n]
        print(json.dumps(names, indent=2) if args.json else "\n".join(names))
        if not args.json:
            print(f"({len(names)} configs in {PACKAGED_CONFIGS}; train one with `visionzoo train NAME`)",
                  file=sys.stderr)
        return 0
    try:
        if args.pattern and not any(c in args.pattern for c in "*?["):
            info = model_info(args.pattern)  # an unknown name is an error listing the closest ones
            print(json.dumps(info, indent=2))
            return 0
        names = list_models(args.pattern, task=args.task)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    rows = []
    for name in names:
        entry = get_entry(name)
        found = [tag for tag, w in available_weights(name, entry.torchvision_name).items() if w.get("source") != "torchvision"
                 or w.get("present")]
        rows.append({"name": name, "task": entry.task, "family": entry.family, "weights": found})
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    width = max([len(r["name"]) for r in rows] + [4])
    print(f"{'name':<{width}}  {'task':<14}  {'family':<12}  weights found")
    for r in rows:
        print(f"{r['name']:<{width}}  {r['task']:<14}  {r['family']:<12}  {', '.join(r['weights']) or '-'}")
    return 0

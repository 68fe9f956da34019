"""The `visionzoo` command: one entry point for training, evaluation, prediction, export and data.

    visionzoo train classification/resnet18_shapes              # a packaged config by name, or a YAML path
    visionzoo evaluate runs/resnet18_shapes --report runs/resnet18_shapes/report
    visionzoo predict resnet18 --weights shapes photos/ --out predictions/
    visionzoo export runs/resnet18_shapes --format onnx
    visionzoo diagnose lr-find configs/classification/resnet18_shapes.yaml
    visionzoo publish runs/resnet18_shapes --tag shapes
    visionzoo models "resnet*"                                   # registered models; --configs: packaged configs
    visionzoo weights list                                       # weights found; copy / get / where
    visionzoo data shapes data/shapes                            # write, unpack and list data sets

`visionzoo COMMAND --help` describes each command. Exit codes: 0 done, 1 bad input, 2 bad usage, others as
the command documents (train: 3 non-finite loss, 128+N stopped by signal N).
"""
from __future__ import annotations

import difflib
import importlib
import sys

from visionzoo import __version__

# command -> (module, function, one-line help). Imported only when run, so `visionzoo --help` is quick.
COMMANDS = {
    "train": ("visionzoo.cli.train", "main", "train a model from a YAML config or a packaged config's name"),
    "evaluate": ("visionzoo.cli.evaluate", "main", "evaluate a run, checkpoint or weights file; write a report"),
    "predict": ("visionzoo.cli.predict", "main", "classify, detect, segment or track image files and folders"),
    "export": ("visionzoo.export", "main", "export to ONNX, TorchScript or torch.export, checked against PyTorch"),
    "diagnose": ("visionzoo.diagnose", "main", "lr-find, overfit, gradcheck, stats, visualize"),
    "publish": ("visionzoo.publish", "main", "turn a run into a weights file with its model card"),
    "models": ("visionzoo.cli.models", "main", "list registered models (or packaged configs), or show one"),
    "weights": ("visionzoo.cli.weights", "main", "list, copy into the user cache, or fetch weights"),
    "data": ("visionzoo.cli.data", "main", "write the synthetic shapes data sets, unpack archives, list data"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {help_text}" for name, (_, _, help_text) in COMMANDS.items()]
    return "usage: visionzoo COMMAND [ARGS ...]\n\ncommands:\n" + "\n".join(lines) + "\n\n" + __doc__.split("\n\n")[1]


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0 if argv else 2
    if argv[0] in ("-V", "--version"):
        print(f"visionzoo {__version__}")
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        close = difflib.get_close_matches(command, list(COMMANDS), n=1)
        hint = f" Did you mean `visionzoo {close[0]}`?" if close else ""
        print(f"error: unknown command {command!r}.{hint}\n\n{usage()}", file=sys.stderr)
        return 2
    module_name, function, _ = COMMANDS[command]
    entry = getattr(importlib.import_module(module_name), function)
    previous = sys.argv
    # argparse's usage lines, and the command line a run records (run.json), name the command as typed
    sys.argv = [f"visionzoo {command}", *rest]
    try:
        return int(entry(rest) or 0)
    finally:
        sys.argv = previous


if __name__ == "__main__":
    sys.exit(main())

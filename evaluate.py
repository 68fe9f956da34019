"""Evaluate a trained model and write metrics.json and a self-contained report.html (the same as
`visionzoo evaluate`).

    python evaluate.py runs/resnet18_shapes --report runs/resnet18_shapes/report
    python evaluate.py weights/resnet18.shapes.safetensors --data data/shapes --split test
    python evaluate.py --compare runs/a runs/b runs/c
    torchrun --nproc_per_node=2 evaluate.py runs/resnet18_shapes   # split the data, reduce the metrics

The code lives in visionzoo/cli/evaluate.py so that an installed package has it too.
"""
import sys

from visionzoo.cli.evaluate import main

if __name__ == "__main__":
    sys.exit(main())

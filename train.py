"""Train any visionzoo model from a YAML config (the same as `visionzoo train`).

    python train.py configs/classification/resnet18_shapes.yaml                 # train
    python train.py classification/resnet18_shapes                              # a packaged config by name
    python train.py configs/classification/resnet18_shapes.yaml train.epochs=3  # with overrides
    python train.py --resume runs/resnet18_shapes                               # continue a run
    torchrun --nproc_per_node=4 train.py configs/classification/resnet18_shapes.yaml   # 4 processes (DDP)

The code lives in visionzoo/cli/train.py so that an installed package has it too.
Exit codes: 0 done, 1 bad input, 3 non-finite loss, 128+N stopped by signal N (checkpoint written).
"""
import sys

from visionzoo.cli.train import main

if __name__ == "__main__":
    sys.exit(main())

"""Run by torchrun (2 processes, gloo) from tests/test_distributed.py: trains a config with the shared
Trainer in-process, then writes this rank's parameters (a strided sample and the sum), its step count and a
draw of GAN latents, so the test can check that every rank holds the same model."""
import gc
import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from visionzoo.config import load_config  # noqa: E402
from visionzoo.training import build_trainer  # noqa: E402


def flat_params(model) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def main():
    config, out = sys.argv[1], Path(sys.argv[2])
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    trainer = build_trainer(load_config(config), out / "run", show_progress=False)
    before = flat_params(trainer.model).clone()
    summary = trainer.fit()
    after = flat_params(trainer.model)
    stride = max(1, after.numel() // 200)
    latents = trainer.model.latents(4) if hasattr(trainer.model, "latents") else torch.zeros(1)
    (out / f"rank{rank}.json").write_text(json.dumps({
        "params": after[::stride].tolist() + [float(after.double().sum())],
        "steps": summary["steps"],
        "changed": bool((after - before).abs().max() > 0),
        "latents": latents.reshape(-1)[:8].tolist(),
    }))
    del trainer  # DDP's reducer holds the group: free it first, or gloo may abort at the interpreter's exit
    gc.collect()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()

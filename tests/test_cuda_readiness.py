"""The GPU code paths, checked on a CPU: CUDA RNG state across GPU counts (torch.cuda stubbed at its boundary),
losses and heads that must stay float32 under bf16/fp16 autocast (CPU autocast, with CUDA's refusal of
binary_cross_entropy emulated), the EMA, buffer broadcast before validation and the background stop/NaN
agreement (real gloo processes), the per-step host-device syncs of tasks, compiling a GAN's players, and
the GPU defaults (TF32, cuDNN autotuning, loader workers)."""
from __future__ import annotations

import json
import os
import socket
import types

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

from visionzoo.engine import checkpoint
from visionzoo.engine.trainer import NonFiniteLoss, Trainer
from visionzoo.training import build_trainer


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield


# ---- 1. CUDA RNG state: the device in use, whatever the number of visible GPUs ------------------------------
class FakeCuda:
    """torch.cuda's RNG calls for `count` visible GPUs, each with its own state (the CUDA boundary only)."""

    def __init__(self, count: int, current: int = 0):
        self.states = {i: torch.full((16,), i, dtype=torch.uint8) for i in range(count)}
        self.count, self.current = count, current

    def install(self, monkeypatch):
        cuda = torch.cuda
        monkeypatch.setattr(cuda, "is_available", lambda: True)
        monkeypatch.setattr(cuda, "is_initialized", lambda: True)
        monkeypatch.setattr(cuda, "device_count", lambda: self.count)
        monkeypatch.setattr(cuda, "current_device", lambda: self.current)
        monkeypatch.setattr(cuda, "get_rng_state", self.get_rng_state)
        monkeypatch.setattr(cuda, "set_rng_state", self.set_rng_state)
        monkeypatch.setattr(cuda, "get_rng_state_all", lambda: [self.states[i] for i in range(self.count)])

        def set_all(states):  # torch's own loop: IndexError past the visible GPUs, as on a real machine
            for i, s in enumerate(states):
                self.set_rng_state(s, i)
        monkeypatch.setattr(cuda, "set_rng_state_all", set_all)

    def get_rng_state(self, device="cuda"):
        return self.states[self._index(device)].clone()

    def set_rng_state(self, state, device="cuda"):
        self.states[self._index(device)] = state.clone()

    def _index(self, device):
        index = device if isinstance(device, int) else (torch.device(device).index or self.current)
        if index >= self.count:
            raise IndexError(f"device {index} of {self.count}")
        return index


def test_cuda_rng_state_is_the_current_devices_and_resumes_on_fewer_gpus(monkeypatch, tmp_path):
    saving = FakeCuda(count=4, current=2)  # rank 2 of a 4-GPU node
    saving.install(monkeypatch)
    state = checkpoint.rng_state()
    assert torch.equal(state["cuda"], saving.states[2])
    checkpoint.atomic_save({"rng": state}, tmp_path / "c.pt")
    loaded = checkpoint.load_checkpoint(tmp_path / "c.pt")["rng"]

    resuming = FakeCuda(count=1, current=0)  # one GPU visible on resume (CUDA_VISIBLE_DEVICES=0)
    resuming.install(monkeypatch)
    checkpoint.set_rng_state(loaded)
    assert torch.equal(resuming.states[0], saving.states[2])


def test_old_checkpoints_with_every_gpus_state_resume_on_one_gpu(monkeypatch):
    old = FakeCuda(count=4)
    old.install(monkeypatch)
    state = {**checkpoint.rng_state(), "cuda": torch.cuda.get_rng_state_all()}  # the former format
    with pytest.raises(IndexError):  # what torch.cuda.set_rng_state_all did with it on one GPU
        FakeCuda(count=1).set_rng_state(state["cuda"][3], 3)
    resuming = FakeCuda(count=1)
    resuming.install(monkeypatch)
    checkpoint.set_rng_state(state)
    assert torch.equal(resuming.states[0], old.states[0])


def test_no_cuda_state_when_cuda_is_unused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)  # a CPU run on a GPU machine
    assert "cuda" not in checkpoint.rng_state()


# ---- 2. reconstruction BCE: float32 outside autocast --------------------------------------------------------
def cuda_like_bce(monkeypatch):
    """F.binary_cross_entropy that refuses to run under autocast, as CUDA autocast does (CPU autocast allows it)."""
    original = F.binary_cross_entropy

    def refusing(input, target, *args, **kwargs):
        if torch.is_autocast_enabled(input.device.type):
            raise RuntimeError("torch.nn.functional.binary_cross_entropy and torch.nn.BCELoss are unsafe to "
                               "autocast")
        return original(input, target, *args, **kwargs)
    monkeypatch.setattr(F, "binary_cross_entropy", refusing)


@pytest.mark.parametrize("kind", ["bce", "mse"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_reconstruction_loss_under_autocast_is_float32(monkeypatch, kind, dtype):
    from visionzoo.tasks.generative.losses import reconstruction_loss

    cuda_like_bce(monkeypatch)
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(4, 1, 8, 8, generator=g) > 0.5).float()
    probs = torch.rand(4, 1, 8, 8, generator=g)
    reference = reconstruction_loss(probs.to(dtype).float(), x, kind)
    with torch.autocast("cpu", dtype=dtype):
        loss = reconstruction_loss(probs.to(dtype), x, kind)  # half-precision decoder output
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(reference.item(), rel=1e-6)  # computed in float32
    if kind == "bce":
        p = probs.to(dtype).float().clamp(1e-6, 1 - 1e-6)
        expected = -(x * p.log() + (1 - x) * (1 - p).log()).mean()
        assert reference.item() == pytest.approx(expected.item(), rel=1e-5)


def test_autoencoder_training_step_under_autocast_with_cuda_rules(monkeypatch):
    from visionzoo.config import validate
    from visionzoo.tasks import task_for

    cuda_like_bce(monkeypatch)
    cfg = validate({"task": "generative", "model": {"name": "ae_conv", "kwargs": {"image_size": 32, "width": 8}},
                    "data": {"input_size": 32}, "loss": {"recon": "bce"},
                    "train": {"amp": "bf16"}})
    task = task_for(cfg)
    torch.manual_seed(0)
    model = task.build_model(None)
    batch = task.synthetic_batch(2, 32, "cpu")
    phase = task.update_phases()[0]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        losses = task.training_losses(model, batch, phase)
    assert losses["loss"].dtype == torch.float32 and torch.isfinite(losses["loss"])
    losses["loss"].backward()


# ---- 3. detection and FID features stay float32 under autocast ----------------------------------------------
def shapes_scene_768():
    """A shapes scene upsampled to 768 px: boxes far beyond 512 px, where bfloat16 keeps a 4-px grid."""
    import numpy as np

    from visionzoo.datasets.write_shapes_scenes import make_scene

    image, instances, _ = make_scene(7, image_size=256, max_objects=4)
    x = torch.from_numpy(np.array(image)).permute(2, 0, 1).float() / 255
    boxes = torch.tensor([i["box"] for i in instances], dtype=torch.float32) * 3
    return F.interpolate(x[None], size=(768, 768), mode="bilinear", align_corners=False)[0], boxes


def shipped(model_name):
    from visionzoo.weights import REPO_WEIGHTS_DIR

    path = REPO_WEIGHTS_DIR / f"{model_name}.shapes.safetensors"
    if not path.is_file():
        pytest.skip(f"needs the shipped weights file {path}")
    import visionzoo

    return visionzoo.create_model(model_name, weights="shapes").eval()


def matched_box_error(reference: dict, other: dict, min_score: float = 0.5) -> float:
    """Largest coordinate difference between each confident reference box and its best-IoU match."""
    from torchvision.ops import box_iou

    keep = reference["scores"] >= min_score
    ref_boxes = reference["boxes"][keep]
    assert len(ref_boxes) > 0, "the fp32 run found nothing to compare with"
    iou = box_iou(ref_boxes, other["boxes"].float())
    matched = other["boxes"].float()[iou.argmax(1)]
    return float((matched - ref_boxes).abs().max())


@pytest.mark.parametrize("model_name", ["faster_rcnn_resnet18_fpn", "mask_rcnn_resnet18_fpn",
                                        "fast_rcnn_resnet18_fpn"])
def test_detector_boxes_under_bf16_autocast_are_float32_and_match_fp32(model_name):
    model = shipped(model_name)
    image, gt = shapes_scene_768()
    kwargs = {}
    if model_name.startswith("fast_"):  # proposals: the ground-truth boxes and shifted copies of them
        kwargs["proposals"] = [torch.cat([gt, gt + 6, gt - 6]).clamp(0, 767)]
    with torch.no_grad():
        reference = model([image], **kwargs)[0]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model([image], **kwargs)[0]
    assert out["boxes"].dtype == torch.float32 and out["scores"].dtype == torch.float32
    assert float(reference["boxes"].max()) > 600  # coordinates where bfloat16 steps by 4 px
    assert matched_box_error(reference, out) < 1.0


def test_rpn_proposals_and_roi_outputs_are_float32_under_autocast():
    """Random weights, fp32 feature maps given to the heads directly: under autocast they compute exactly
    what they compute without it (before, the RPN ran in bfloat16 and its proposals came out bfloat16)."""
    import visionzoo

    torch.manual_seed(0)
    model = visionzoo.create_model("faster_rcnn_resnet18_fpn", num_classes=4, min_size=640, max_size=640).eval()
    images = [torch.rand(3, 640, 640)]
    with torch.no_grad():
        image_list, _ = model.transform(images)
        features = model.backbone(image_list.tensors)
        proposals, _ = model.rpn(image_list, features)
        detections, _ = model.roi_heads(features, proposals, image_list.image_sizes)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            proposals_amp, _ = model.rpn(image_list, features)
            detections_amp, _ = model.roi_heads(features, proposals_amp, image_list.image_sizes)
    assert proposals_amp[0].dtype == torch.float32 and detections_amp[0]["boxes"].dtype == torch.float32
    torch.testing.assert_close(proposals_amp[0], proposals[0])
    torch.testing.assert_close(detections_amp[0]["boxes"], detections[0]["boxes"])


def test_fid_features_are_float32_under_autocast():
    from visionzoo.tasks.generative.features import FeatureExtractor

    class TinyExtractor(FeatureExtractor):
        name, dim = "tiny", 8

        def __init__(self):
            super().__init__((16, 16))
            self.conv = nn.Conv2d(3, 8, 3)

        def _features(self, images):
            return self.conv(images).mean((2, 3))

    torch.manual_seed(0)
    extractor = TinyExtractor()
    images = torch.rand(4, 3, 16, 16)
    reference = extractor(images)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        features = extractor(images)
    assert features.dtype == torch.float32
    torch.testing.assert_close(features, reference)  # exactly the fp32 computation, not bf16 rounded up


# ---- 4. EMA -------------------------------------------------------------------------------------------------
def small_bn_net():
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.LazyLinear(2))


def test_ema_matches_averaged_model_and_follows_integer_buffers():
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    from visionzoo.engine.ema import ModelEma

    torch.manual_seed(0)
    model = small_bn_net()
    model(torch.rand(2, 3, 6, 6))  # materialise the lazy layer
    decay = 0.9
    ema = ModelEma(model, decay)
    reference = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(5):
        opt.zero_grad()
        model(torch.rand(8, 3, 6, 6)).sum().backward()
        opt.step()
        ema.update_parameters(model)
        reference.update_parameters(model)
    assert ema.n_averaged == 5
    got, want = ema.module.state_dict(), reference.module.state_dict()
    for key, value in want.items():
        if value.is_floating_point():  # weights and BatchNorm statistics: the same average as torch's
            torch.testing.assert_close(got[key], value, rtol=1e-5, atol=1e-6)
    bn = "1.num_batches_tracked"
    assert int(model.state_dict()[bn]) == 6  # the materialising forward and 5 steps
    assert int(got[bn]) == 6  # follows the model's counter
    assert int(want[bn]) == 2  # AveragedModel's stays at its first update's value
    # not a copy of the model: the average lags behind it
    assert not torch.equal(got["0.weight"], model.state_dict()["0.weight"])


def test_ema_does_not_call_the_models_compiled_forward():
    from visionzoo.engine.ema import ModelEma

    model = nn.Linear(3, 2)
    model._compiled_call_impl = lambda *a, **k: torch.zeros(1)  # what Module.compile() leaves on the module
    ema = ModelEma(model, 0.5)
    with torch.no_grad():
        ema.module.weight.fill_(1.0)
        ema.module.bias.zero_()
    assert torch.equal(ema.module(torch.ones(1, 3)), torch.full((1, 2), 3.0))


# ---- 5 and 6: buffers before validation, the background agreement (real gloo processes) ---------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_two_ranks(fn, *args):
    port = free_port()  # fork: the children need not import torch and the test module again (minutes on busy cores)
    mp.start_processes(_rank_entry, args=(fn, port, args), nprocs=2, join=True, start_method="fork")


def _rank_entry(rank, fn, port, args):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        fn(rank, *args)
    finally:
        dist.destroy_process_group()


def fake_trainer(rank, **fields):
    """The Trainer's state that _sync_buffers / _agree / _settle_agreement read, without data or a config."""
    state = {"world_size": 2, "rank": rank, "control_group": dist.group.WORLD, "stop_signal": None,
             "_nonfinite": None, "_pending_agreement": None, "ema": None, "ddp": None}
    t = types.SimpleNamespace(**{**state, **fields})
    for name in ("_sync_buffers", "_agree", "_settle_agreement"):
        setattr(t, name, types.MethodType(getattr(Trainer, name), t))
    t._raise_nonfinite = lambda: (_ for _ in ()).throw(NonFiniteLoss(f"rank {rank}"))
    return t


def _buffers_rank(rank, out_dir):
    from visionzoo.engine.ema import ModelEma

    torch.manual_seed(0)
    model = small_bn_net()
    model(torch.rand(2, 3, 6, 6))
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    ema = ModelEma(model, 0.5)
    torch.manual_seed(100 + rank)  # each rank its own data: BatchNorm statistics drift apart
    for _ in range(3):
        ddp(torch.rand(4, 3, 6, 6) + rank).sum().backward()  # the last forward's statistics are this rank's own
        ema.update_parameters(model)
    before = torch.cat([b.float().flatten() for b in list(model.buffers()) + list(ema.module.buffers())])
    t = fake_trainer(rank, model=model, ema=ema, ddp=ddp)
    t._sync_buffers()
    after = torch.cat([b.float().flatten() for b in list(model.buffers()) + list(ema.module.buffers())])
    torch.save({"before": before, "after": after}, out_dir / f"rank{rank}.pt")


def test_ddp_buffers_and_ema_buffers_agree_across_ranks_before_validation(tmp_path):
    run_two_ranks(_buffers_rank, tmp_path)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert not torch.equal(r0["before"], r1["before"])  # DDP alone leaves them different
    assert torch.equal(r0["after"], r1["after"])
    assert torch.equal(r1["after"], r0["before"])  # rank 0's values, as in its checkpoint


def _agree_rank(rank, out_dir):
    t = fake_trainer(rank)
    seen = []
    for step in range(6):
        if rank == 1 and step == 2:
            t.stop_signal = 15  # SIGTERM on rank 1 only, during step 2
        stop, finite = t._agree(t.stop_signal, True)
        seen.append(stop)
    t2 = fake_trainer(rank)
    if rank == 0:
        t2._nonfinite = (3, "loss=nan")  # rank 0 saw a NaN in the epoch's last step
    t2._agree(None, t2._nonfinite is None)  # its answer would only come next step: the settle must catch it
    try:
        t2._settle_agreement()
        raised = False
    except NonFiniteLoss:
        raised = True
    t3 = fake_trainer(rank)
    t3.stop_signal = 2 if rank == 0 else None  # a signal in the very last step of an epoch
    t3._agree(t3.stop_signal, True)
    t3._settle_agreement()
    (out_dir / f"rank{rank}.json").write_text(json.dumps({"seen": seen, "raised": raised, "stop_at_end": t3.stop_signal}))


def test_background_agreement_stops_every_rank_at_the_same_step(tmp_path):
    run_two_ranks(_agree_rank, tmp_path)
    for r in (0, 1):
        got = json.loads((tmp_path / f"rank{r}.json").read_text())
        assert got["seen"] == [None, None, None, 15, 15, 15]  # seen during step 2, agreed from step 3 on
        assert got["raised"] is True  # both ranks raise at the epoch's end
        assert got["stop_at_end"] == 2  # and both stop after it


# ---- 7. per-step syncs in tasks, compiled GAN players --------------------------------------------------------
def test_segmentation_class_weights_are_built_once_per_device():
    from visionzoo.config import validate
    from visionzoo.tasks import task_for

    cfg = validate({"task": "segmentation", "model": {"name": "fcn_resnet18", "num_classes": 3},
                    "data": {"input_size": 32}, "loss": {"class_weights": [1.0, 2.0, 0.5]}})
    task = task_for(cfg)
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 8, 8, requires_grad=True)
    masks = torch.randint(0, 3, (2, 8, 8))
    masks[0, 0, 0] = 255

    def model(images):
        return {"out": logits}

    first = task.training_losses(model, (torch.zeros(2, 3, 8, 8), masks, None), None)
    weight = task._class_weights((1.0, 2.0, 0.5), torch.device("cpu"))
    assert task._class_weights((1.0, 2.0, 0.5), torch.device("cpu")) is weight  # no new tensor per step
    expected = F.cross_entropy(logits, masks, weight=torch.tensor([1.0, 2.0, 0.5]), ignore_index=255)
    assert first["loss_out"].item() == pytest.approx(expected.item(), rel=1e-6)


def test_sint_similarity_means_need_no_boolean_indexing():
    from torch.profiler import ProfilerActivity, profile

    from visionzoo.tasks.tracking.task import masked_mean

    sim = torch.tensor([[0.9, 0.1, 0.2], [0.8, 0.3, -0.1]])
    labels = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 1.0]])
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        pos, neg = masked_mean(sim, labels > 0.5), masked_mean(sim, labels < 0.5)
    ops = {e.name for e in prof.events()}
    assert "aten::nonzero" not in ops and "aten::index" not in ops  # both wait for the device on a GPU
    assert pos.item() == pytest.approx(sim[labels > 0.5].mean().item())
    assert neg.item() == pytest.approx(sim[labels < 0.5].mean().item())
    assert masked_mean(sim, torch.zeros_like(labels, dtype=torch.bool)).item() == 0.0  # none: 0, not NaN


def test_sint_training_step_runs_without_nonzero(monkeypatch):
    from torch.profiler import ProfilerActivity, profile

    from visionzoo.config import validate
    from visionzoo.tasks import task_for

    cfg = validate({"task": "tracking", "model": {"name": "sint_resnet18"}})
    task = task_for(cfg)
    torch.manual_seed(0)
    model = task.build_model(None)
    batch = task.synthetic_batch(2, 64, "cpu")
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        losses = task.training_losses(model, batch, task.update_phases()[0])
    assert "aten::nonzero" not in {e.name for e in prof.events()}
    assert torch.isfinite(losses["cos_pos"]) and torch.isfinite(losses["cos_neg"])


def test_compile_compiles_each_gan_player_in_place(tmp_path, monkeypatch):
    from visionzoo.config import load_config
    from visionzoo.tasks.generative.gan import GANTask

    compiled = []
    monkeypatch.setattr(torch, "compile", lambda fn, *a, **k: compiled.append(fn) or fn)  # inductor: minutes
    monkeypatch.setattr(GANTask, "check_eval_dataset", lambda self, dataset, split: dataset)
    cfg = load_config("configs/generative/dcgan_shapes.yaml", [
        "train.compile=true", "train.device=cpu", "data.num_workers=0", "data.params.train_samples=8",
        "data.val_split=null", "data.batch_size=4", "model.kwargs.g_width=8", "model.kwargs.d_width=8", "train.ema.enabled=true"])
    trainer = build_trainer(cfg, tmp_path / "run", show_progress=False)
    gan = trainer.model
    assert {fn.__self__ for fn in compiled} == {gan.generator, gan.discriminator}
    assert trainer.forward_model is gan  # the model itself is never called by the GAN task
    assert "_compiled_call_impl" in gan.generator.__dict__
    assert "_compiled_call_impl" not in trainer.ema.module.generator.__dict__


# ---- 8. GPU defaults ----------------------------------------------------------------------------------------
def test_default_num_workers_scales_with_cores_per_gpu(monkeypatch):
    from visionzoo.config.machine import default_num_workers

    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert default_num_workers(cores=64, gpus=8) == 7
    assert default_num_workers(cores=16, gpus=1) == 8  # capped
    assert default_num_workers(cores=4, gpus=4) == 1  # at least one
    assert default_num_workers(cores=32, gpus=8, processes_per_node=2) == 8
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert default_num_workers(cores=24, gpus=8) == 5
    assert default_num_workers(cores=24, gpus=0) == 2  # no GPU: the former default


def test_config_default_for_num_workers_comes_from_the_machine(monkeypatch):
    from visionzoo.config import machine, validate

    monkeypatch.setattr(machine, "default_num_workers", lambda: 5)
    cfg = validate({"task": "classification", "model": {"name": "resnet18"}})
    assert cfg.data.num_workers == 5
    cfg = validate({"task": "classification", "model": {"name": "resnet18"}, "data": {"num_workers": 0}})
    assert cfg.data.num_workers == 0


@pytest.fixture
def restore_backend_flags():
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark)
    yield
    (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark) = saved


@pytest.mark.parametrize("task_name, autotune", [("classification", True), ("generative", True),
                                                 ("tracking", True), ("detection", False),
                                                 ("segmentation", False)])
def test_cudnn_benchmark_default_by_task_and_tf32(restore_backend_flags, task_name, autotune):
    from visionzoo.config import validate
    from visionzoo.engine.backends import configure_backends
    from visionzoo.tasks import get_task

    models = {"classification": "resnet18", "generative": "dcgan", "tracking": "siamfc_alexnet",
              "detection": "faster_rcnn_resnet18_fpn", "segmentation": "fcn_resnet18"}
    cfg = validate({"task": task_name, "model": {"name": models[task_name]}})
    task = get_task(task_name)
    torch.backends.cudnn.benchmark = not autotune
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    assert configure_backends(cfg, torch.device("cpu"), task) == {"tf32": True, "cudnn_benchmark": autotune}
    assert torch.backends.cudnn.benchmark is (not autotune)  # a CPU run changes nothing
    settings = configure_backends(cfg, torch.device("cuda", 0), task)
    assert settings == {"tf32": True, "cudnn_benchmark": autotune}
    assert torch.backends.cudnn.benchmark is autotune
    assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    cfg.train.tf32, cfg.train.cudnn_benchmark = False, True
    assert configure_backends(cfg, torch.device("cuda", 0), task) == {"tf32": False, "cudnn_benchmark": True}
    assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32


# ---- on a GPU only (benchmarks/gpu_smoke.py runs these) -----------------------------------------------------
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_bce_and_detector_under_autocast():
    from visionzoo.tasks.generative.losses import reconstruction_loss

    x = torch.rand(2, 1, 8, 8, device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        assert reconstruction_loss(torch.sigmoid(torch.randn_like(x)), x.round(), "bce").dtype == torch.float32
    model = shipped("faster_rcnn_resnet18_fpn").cuda()
    image, _ = shapes_scene_768()
    with torch.no_grad():
        reference = model([image.cuda()])[0]
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = model([image.cuda()])[0]
    assert out["boxes"].dtype == torch.float32
    assert matched_box_error({k: v.cpu() for k, v in reference.items()}, {k: v.cpu() for k, v in out.items()}) < 1.0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_rng_state_round_trip(tmp_path):
    torch.cuda.init()
    state = checkpoint.rng_state()
    expected = torch.rand(4, device="cuda")
    checkpoint.set_rng_state(state)
    assert torch.equal(torch.rand(4, device="cuda"), expected)

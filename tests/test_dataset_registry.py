"""The data-set registry (typed data.params, names per task), model capabilities, and the generative task's
three classes chosen by the model's declared kind."""
import ast
import dataclasses
import inspect
import json
import textwrap

import pytest

from visionzoo.config import ConfigError, load_config, validate
from visionzoo.datasets.registry import dataset_names, get_dataset
from visionzoo.registry import Capabilities, capabilities, list_models
from visionzoo.tasks import get_task, task_for
from visionzoo.tasks.detection.task import DetectionParams, VOCDetectionParams
from visionzoo.tasks.detection.task import data_params as detection_data_params
from visionzoo.tasks.generative.autoencoder import AutoencoderTask
from visionzoo.tasks.generative.common import GenerativeParams, GenerativeTaskBase, image_channels
from visionzoo.tasks.generative.gan import GANTask
from visionzoo.tasks.generative.vae import VAETask
from visionzoo.tasks.segmentation.task import SegmentationParams
from visionzoo.tasks.tracking.task import TrackingParams, TrackingTask

TASKS = ("classification", "detection", "segmentation", "tracking", "generative")


def test_every_task_registers_its_data_sets_in_order():
    assert dataset_names("classification") == ["image_folder", "mnist", "fashion_mnist", "mnist_distorted",
                                               "cifar10", "shapes"]
    assert dataset_names("detection") == ["coco", "voc", "pennfudan", "yolo"]
    assert dataset_names("segmentation") == ["voc", "folder", "camvid"]
    assert dataset_names("tracking") == ["got10k", "otb", "lasot", "sequences"]
    assert dataset_names("generative") == ["shapes", "image_folder", "mnist", "fashion_mnist"]


def test_unknown_data_set_lists_the_tasks_names():
    with pytest.raises(ValueError, match="'imagenet' is not a segmentation dataset; expected 'voc', 'folder' or "
                                         "'camvid'"):
        get_dataset("segmentation", "imagenet")


def test_params_are_typed_dataclasses_with_defaults():
    entry = get_dataset("detection", "coco")
    params = entry.parse_params({"proposal_top_k_train": 50})
    assert dataclasses.is_dataclass(params)
    assert params.proposal_top_k_train == 50 and params.ann_file == "annotations/instances_{split}.json"
    tracking = get_dataset("tracking", "got10k").parse_params({"min_size": 3})
    assert tracking.min_size == 3.0 and isinstance(tracking.min_size, float)


def test_unknown_key_names_it_the_closest_and_the_known_keys():
    with pytest.raises(ConfigError, match=r"data.params.ann_fle is not a parameter of the detection data set 'coco'; "
                                          r"did you mean 'ann_file'\? \(known: masks, proposals, .*image_dir, ann_file\)"):
        get_dataset("detection", "coco").parse_params({"ann_fle": "x.json"})
    with pytest.raises(ValueError, match=r"data.params.seeed .*did you mean 'seed'"):
        get_dataset("classification", "shapes").parse_params({"seeed": 1})


def test_wrong_type_names_key_value_and_type():
    with pytest.raises(ConfigError, match=r"data.params.pairs_per_epoch = 'many' has the wrong type: expected int"):
        get_dataset("tracking", "sequences").parse_params({"pairs_per_epoch": "many"})


def test_split_exists_uses_the_data_sets_fixed_splits():
    cfg = load_config("configs/classification/lenet5_mnist.yaml")
    task = task_for(cfg)
    assert task.split_exists("val") and not task.split_exists("dev")


def test_models_declare_their_capabilities():
    assert capabilities("fast_rcnn_resnet18_fpn").needs_proposals
    assert capabilities("mask_rcnn_resnet18_fpn").predicts_masks
    assert not capabilities("faster_rcnn_resnet18_fpn").predicts_masks
    assert capabilities("siamfc_alexnet").tracker_kind == "siamfc"
    assert capabilities("sint").tracker_kind == "sint" and capabilities("sint").embeds_candidate_boxes
    assert capabilities("cdcgan") == Capabilities(generative_kind="gan", conditional=True)
    assert capabilities("dae_conv").denoising
    assert all(capabilities(n).generative_kind in ("autoencoder", "vae", "gan")
               for n in list_models(task="generative"))
    assert all(capabilities(n).tracker_kind for n in list_models(task="tracking"))


@pytest.mark.parametrize("config, cls, metric", [
    ("ae_conv_shapes", AutoencoderTask, "psnr"), ("vae_conv_shapes", VAETask, "nll"),
    ("dcgan_shapes", GANTask, "fid")])
def test_generative_config_picks_the_task_class_of_the_models_kind(config, cls, metric):
    cfg = load_config(f"configs/generative/{config}.yaml")
    task = task_for(cfg)
    assert type(task) is cls and task.cfg is cfg
    assert type(get_task("generative").for_config(cfg)) is cls  # the registered class picks the kind's class
    assert task.primary_metric == metric
    phases = [p.name for p in task.update_phases()]
    assert phases == (["discriminator", "generator"] if cls is GANTask else ["main"])


# ---- one params dataclass per data set -----------------------------------------------------------------------
TASK_BASES = {"detection": DetectionParams, "segmentation": SegmentationParams, "generative": GenerativeParams,
              "tracking": TrackingParams}


@pytest.mark.parametrize("task, dataset, key, owners, known", [
    ("detection", "pennfudan", "year", "'voc'", "masks, proposals, proposal_top_k_train, proposal_top_k_test, "
     "selective_search, proposal_cache_dir, proposal_workers, split_seed, test_size, val_size"),
    ("detection", "pennfudan", "classes", "'voc' or 'yolo'", "masks, proposals, proposal_top_k_train, "
     "proposal_top_k_test, selective_search, proposal_cache_dir, proposal_workers, split_seed, test_size, val_size"),
    ("detection", "coco", "label_dir", "'yolo'", "masks, proposals, proposal_top_k_train, proposal_top_k_test, "
     "selective_search, proposal_cache_dir, proposal_workers, image_dir, ann_file"),
    ("segmentation", "camvid", "image_dir", "'folder'", "classes, base_size"),
    ("segmentation", "voc", "mask_dir", "'folder'", "classes, base_size, year"),
    ("generative", "shapes", "binarize", "'mnist' or 'fashion_mnist'", "train_samples, eval_samples, grayscale, seed"),
    ("generative", "image_folder", "seed", "'shapes'", "train_samples, eval_samples, grayscale"),
    ("tracking", "got10k", "layout", "'sequences'",
     "pairs_per_epoch, max_gap, min_size, max_aspect, min_cover, context"),
])
def test_a_data_set_refuses_another_data_sets_key(task, dataset, key, owners, known):
    with pytest.raises(ConfigError) as err:
        get_dataset(task, dataset).parse_params({"masks": None, key: 1} if task == "detection" else {key: 1})
    assert str(err.value) == (f"data.params.{key} is not a parameter of the {task} data set {dataset!r}; it is a key "
                              f"of {owners} (known: {known})")


def test_a_data_sets_own_key_typo_still_gets_the_closest_name():
    with pytest.raises(ConfigError, match=r"^data.params.test_sise is not a parameter of the detection data set "
                                          r"'pennfudan'; did you mean 'test_size'\? \(known: masks, "):
        get_dataset("detection", "pennfudan").parse_params({"test_sise": 4})


@pytest.mark.parametrize("task", sorted(TASK_BASES))
def test_every_data_set_of_a_task_extends_its_shared_keys(task):
    base = TASK_BASES[task]
    for name in dataset_names(task):
        params = get_dataset(task, name).params
        assert issubclass(params, base), f"{task}/{name}: {params.__name__} does not extend {base.__name__}"
    # the shared keys are exactly those every data set of the task has
    common = set.intersection(*(set(get_dataset(task, n).param_names()) for n in dataset_names(task)))
    assert common == {f.name for f in dataclasses.fields(base)}


@pytest.mark.parametrize("task, name", [(t, n) for t in TASKS for n in dataset_names(t)])
def test_defaults_round_trip(task, name):
    entry = get_dataset(task, name)
    defaults = entry.param_defaults()
    assert list(defaults) == entry.param_names()
    assert entry.parse_params(defaults) == entry.params() == entry.parse_params({})


# What reads a data set's params besides its builder and split check: the task's own data-set code.
def _task_readers():
    from visionzoo.tasks.detection.task import build_detection_dataset
    from visionzoo.tasks.segmentation.task import build_segmentation_dataset

    return {"classification": [get_task("classification").build_dataset],
            "detection": [build_detection_dataset],
            "segmentation": [build_segmentation_dataset],
            "generative": [GenerativeTaskBase.build_dataset],
            "tracking": [TrackingTask.build_dataset, TrackingTask._sequences]}


def _params_reads(func, names: set[str], seen: set) -> set[str]:
    """The attributes `func` reads on its params object (the variables `names`, and those bound to data_params()
    or entry.parse_params()), following the module's functions it hands that object to. Read from the source."""
    func = inspect.unwrap(getattr(func, "__func__", func))
    if (func, frozenset(names)) in seen:
        return set()
    seen.add((func, frozenset(names)))
    tree = ast.parse(textwrap.dedent(inspect.getsource(func)))
    names = set(names)
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign):
            targets = node.targets[0].elts if isinstance(node.targets[0], ast.Tuple) else node.targets
            values = node.value.elts if isinstance(node.value, ast.Tuple) else [node.value]
            for target, value in zip(targets, values):
                if isinstance(value, ast.Call) and isinstance(target, ast.Name):
                    callee = value.func
                    if getattr(callee, "attr", getattr(callee, "id", None)) in ("data_params", "parse_params"):
                        names.add(target.id)
    reads = set()
    module = inspect.getmodule(func)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in names:
            reads.add(node.attr)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            helper = getattr(module, node.func.id, None)
            if not inspect.isfunction(helper):
                continue
            arg_names = list(inspect.signature(helper).parameters)
            passed = {arg_names[i] for i, a in enumerate(node.args)
                      if isinstance(a, ast.Name) and a.id in names and i < len(arg_names)}
            if passed:
                reads |= _params_reads(helper, passed, seen)
    return reads


@pytest.mark.parametrize("task, name", [(t, n) for t in TASKS for n in dataset_names(t)])
def test_a_data_sets_params_are_exactly_what_its_code_reads(task, name):
    entry = get_dataset(task, name)
    seen: set = set()
    reads = _params_reads(entry.builder, {"params"}, seen)
    if entry.has_split is not None:
        reads |= _params_reads(entry.has_split, {"params"}, seen)
    for reader in _task_readers()[task]:
        reads |= _params_reads(reader, set(), seen)
    assert reads == set(entry.param_names()), f"{task}/{name} reads {sorted(reads)}, has {entry.param_names()}"


def test_params_without_a_registered_data_set_are_the_shared_keys():
    """A benchmark's synthetic batches come from configs whose data set the task does not register: the task's
    shared keys type them."""
    cfg = validate({"task": "detection", "model": {"name": "fast_rcnn_resnet18_fpn"},
                    "data": {"dataset": "image_folder", "params": {"proposal_top_k_train": 8}}})
    assert type(detection_data_params(cfg)) is DetectionParams
    assert detection_data_params(cfg).proposal_top_k_train == 8
    images, targets = task_for(cfg).synthetic_batch(1, 64, "cpu", train=True)
    assert targets[0]["proposals"].shape == (8, 4)
    cfg.data.params = {"year": 2007}
    with pytest.raises(ConfigError, match=r"data.params.year is not a detection data parameter \(known: masks, "):
        detection_data_params(cfg)
    cfg.data.dataset, cfg.data.params = "voc", {"year": 2007}
    assert type(detection_data_params(cfg)) is VOCDetectionParams and detection_data_params(cfg).year == 2007


@pytest.mark.parametrize("dataset, params, channels", [
    ("shapes", {}, 3), ("shapes", {"grayscale": True}, 1), ("mnist", {}, 1), ("fashion_mnist", {}, 1),
    ("image_folder", {"grayscale": True}, 1), ("somewhere_else", {"grayscale": True}, 1),
    ("somewhere_else", {}, 3)])
def test_generative_image_channels_come_from_the_typed_params(dataset, params, channels):
    cfg = validate({"task": "generative", "model": {"name": "vae_mlp"},
                    "data": {"dataset": dataset, "params": params}})
    assert image_channels(cfg) == channels


def test_shipped_configs_and_model_cards_fit_their_data_sets_params():
    """Every config in configs/ and the config every shipped model card records still parse: no card records a
    key its data set does not read."""
    from tests.conftest import ROOT

    checked = 0
    for path in sorted((ROOT / "configs").rglob("*.yaml")):
        if not path.name.startswith("_"):
            cfg = load_config(path)
            get_dataset(cfg.task, cfg.data.dataset).parse_params(cfg.data.params)
            checked += 1
    for path in sorted((ROOT / "weights").glob("*.json")):
        cfg = validate(json.loads(path.read_text())["config"], where=str(path))
        get_dataset(cfg.task, cfg.data.dataset).parse_params(cfg.data.params)
        checked += 1
    assert checked > 40

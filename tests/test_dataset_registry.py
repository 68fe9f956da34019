"""The data-set registry (typed data.params, names per task), model capabilities, and the generative task's
three classes chosen by the model's declared kind."""
import dataclasses

import pytest

from visionzoo.config import ConfigError, load_config
from visionzoo.datasets.registry import dataset_names, get_dataset
from visionzoo.registry import Capabilities, capabilities, list_models
from visionzoo.tasks import get_task, task_for
from visionzoo.tasks.generative.autoencoder import AutoencoderTask
from visionzoo.tasks.generative.gan import GANTask
from visionzoo.tasks.generative.vae import VAETask


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
    with pytest.raises(ConfigError, match=r"data.params.ann_fle is not a detection data parameter; "
                                          r"did you mean 'ann_file'\? \(known: image_dir, ann_file,"):
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

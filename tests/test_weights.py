import json
import os
import warnings

import pytest
import torch
import torchvision
from safetensors.torch import save_file

import visionzoo
import visionzoo.weights as vw
from visionzoo.weights import WeightsError, sha256_file


def _hash_named(path_dir, stem, state):
    """Save a state dict as .pth and rename it the torchvision way (<stem>-<sha256 prefix>.pth)."""
    tmp = path_dir / f"{stem}.tmp"
    torch.save(state, tmp)
    final = path_dir / f"{stem}-{sha256_file(tmp)[:8]}.pth"
    tmp.rename(final)
    return final


@pytest.mark.parametrize("name", ["alexnet", "vgg11_bn", "resnet18", "resnet50"])
def test_torchvision_state_dict_loads_strict_with_identical_outputs(tmp_path, name):
    torch.manual_seed(0)
    reference = torchvision.models.get_model(name, weights=None).eval()
    path = _hash_named(tmp_path, name, reference.state_dict())
    ours = visionzoo.create_model(name, weights=str(path)).eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(ours(x), reference(x))


def test_torchvision_tag_finds_official_file_in_torch_home(isolated_caches, monkeypatch):
    torch.manual_seed(0)
    reference = torchvision.models.resnet18(weights=None).eval()
    ckpt_dir = vw.torch_hub_checkpoints_dir()
    ckpt_dir.mkdir(parents=True)
    path = _hash_named(ckpt_dir, "resnet18", reference.state_dict())
    # Point the official record at our locally made file (its name carries its real sha256 prefix).
    real_enum = vw._torchvision_weight_enum

    class Record:
        url = "https://download.pytorch.org/models/" + path.name
        meta = real_enum("resnet18", "resnet18", "IMAGENET1K_V1").meta
        transforms = real_enum("resnet18", "resnet18", "IMAGENET1K_V1").transforms

    monkeypatch.setattr(vw, "_torchvision_weight_enum", lambda *a: Record)
    model = visionzoo.create_model("resnet18", weights="torchvision:IMAGENET1K_V1").eval()
    assert model.pretrained_cfg["source"] == "torchvision"
    assert len(model.pretrained_cfg["class_names"]) == 1000
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), reference(x))


def test_official_file_with_wrong_hash_is_refused(isolated_caches):
    ckpt_dir = vw.torch_hub_checkpoints_dir()
    ckpt_dir.mkdir(parents=True)
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), ckpt_dir / "resnet18-f37072fd.pth")
    with pytest.raises(WeightsError, match="sha256 mismatch"):
        visionzoo.create_model("resnet18", weights="torchvision:IMAGENET1K_V1")


def test_missing_official_file_names_file_places_and_url(isolated_caches):
    with pytest.raises(WeightsError) as err:
        visionzoo.create_model("resnet50", weights="torchvision:IMAGENET1K_V2")
    msg = str(err.value)
    assert "resnet50-11ad3fa6.pth" in msg
    assert str(vw.torch_hub_checkpoints_dir()) in msg
    assert "https://download.pytorch.org/models/resnet50-11ad3fa6.pth" in msg


def test_unknown_torchvision_tag(isolated_caches):
    with pytest.raises(WeightsError, match="valid tags: DEFAULT, IMAGENET1K_V1"):
        visionzoo.create_model("resnet18", weights="torchvision:IMAGENET22K")


def test_missing_tag_lists_every_place_searched(isolated_caches):
    with pytest.raises(WeightsError) as err:
        visionzoo.create_model("resnet18", weights="nosuchtag")
    msg = str(err.value)
    assert "resnet18.nosuchtag.safetensors" in msg
    assert str(vw.REPO_WEIGHTS_DIR) in msg and str(vw.user_cache_dir()) in msg


def test_cache_tag_with_model_card(isolated_caches):
    model = visionzoo.create_model("resnet18", num_classes=3)
    cache = vw.user_cache_dir()
    cache.mkdir(parents=True)
    path = cache / "resnet18.mine.safetensors"
    save_file({k: v.half() for k, v in model.state_dict().items()}, str(path))
    card = {"model": "resnet18", "tag": "mine", "num_classes": 3, "class_names": ["a", "b", "c"],
            "mean": [0.5] * 3, "std": [0.25] * 3, "input_size": [3, 64, 64], "metrics": {"top1": 0.9},
            "sha256": sha256_file(path)}
    path.with_suffix(".json").write_text(json.dumps(card))
    loaded = visionzoo.create_model("resnet18", weights="mine")
    assert loaded.fc.out_features == 3
    assert loaded.pretrained_cfg["class_names"] == ["a", "b", "c"]
    assert loaded.pretrained_cfg["source"] == "cache"
    assert torch.equal(loaded.fc.weight, model.fc.weight.half().float())
    assert "mine" in visionzoo.model_info("resnet18")["weights"]
    # a tampered file no longer matches the sha256 in its card
    with open(path, "r+b") as f:
        f.seek(-4, os.SEEK_END)
        f.write(b"\x00\x01\x02\x03")
    with pytest.raises(WeightsError, match="sha256 mismatch"):
        visionzoo.create_model("resnet18", weights="mine")


def test_other_class_count_replaces_head_and_keeps_the_rest(tmp_path):
    src = visionzoo.create_model("resnet18", num_classes=10)
    path = tmp_path / "r18.safetensors"
    save_file(src.state_dict(), str(path))
    with pytest.warns(UserWarning, match=r"re-initialised the head \(fc.weight, fc.bias\)"):
        model = visionzoo.create_model("resnet18", weights=str(path), num_classes=3)
    assert model.fc.out_features == 3
    assert torch.equal(model.conv1.weight, src.conv1.weight)
    assert torch.equal(model.layer4[1].bn2.running_var, src.layer4[1].bn2.running_var)
    assert model.pretrained_cfg["head_replaced"] is True


def test_other_mismatch_lists_keys_and_shapes(tmp_path):
    state = visionzoo.create_model("resnet18").state_dict()
    state["conv1.weight"] = torch.zeros(64, 3, 3, 3)
    del state["layer1.0.bn1.bias"]
    state["extra.weight"] = torch.zeros(2)
    path = tmp_path / "bad.safetensors"
    save_file(state, str(path))
    with pytest.raises(WeightsError) as err:
        visionzoo.create_model("resnet18", weights=str(path))
    msg = str(err.value)
    assert "shape mismatch: conv1.weight: file (64, 3, 3, 3) vs model (64, 3, 7, 7)" in msg
    assert "missing from the file: layer1.0.bn1.bias" in msg
    assert "unexpected in the file: extra.weight" in msg


class _Payload:
    """Unpickling this object would create a directory: the proof that code ran."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.makedirs, (self.marker,))


def test_malicious_pickle_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"fc.weight": torch.zeros(1), "payload": _Payload(str(marker))}, path)
    with pytest.raises(WeightsError, match="refused to load"):
        visionzoo.create_model("resnet18", weights=str(path))
    assert not marker.exists()


def test_corrupt_safetensors_is_a_clear_error(tmp_path):
    path = tmp_path / "broken.safetensors"
    path.write_bytes(b"not a safetensors file at all")
    with pytest.raises(WeightsError, match="broken.safetensors"):
        visionzoo.create_model("resnet18", weights=str(path))


def test_trainer_checkpoint_is_accepted_as_weights(tmp_path):
    model = visionzoo.create_model("resnet18", num_classes=4)
    torch.save({"format": "visionzoo-checkpoint-v1", "model": model.state_dict(), "ema": {}, "epoch": 1},
               tmp_path / "last.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded = visionzoo.create_model("resnet18", weights=str(tmp_path / "last.pt"))
    assert torch.equal(loaded.fc.bias, model.fc.bias)

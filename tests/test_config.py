import pytest
import yaml

from visionzoo.config import ConfigError, load_config, to_dict, validate

BASE = """
task: classification
model: {name: resnet18}
data: {root: /tmp/x, input_size: 32, batch_size: 8}
optim: {lr: 0.05}
train: {epochs: 2}
"""


@pytest.fixture
def cfg_files(tmp_path):
    (tmp_path / "base.yaml").write_text(BASE)
    (tmp_path / "child.yaml").write_text("_base_: base.yaml\noptim: {name: adamw}\ntrain: {amp: bf16}\n")
    return tmp_path


def test_base_inheritance_and_overrides(cfg_files):
    cfg = load_config(cfg_files / "child.yaml", ["train.epochs=5", "optim.betas=[0.5, 0.9]", "model.weights=null"])
    assert cfg.optim.name == "adamw" and cfg.optim.lr == 0.05  # merged, not replaced
    assert cfg.train.epochs == 5 and cfg.train.amp == "bf16"
    assert cfg.optim.betas == [0.5, 0.9]
    assert cfg.data.input_size == 32 and cfg.data.batch_size == 8
    assert cfg.output.name == "child"
    assert cfg.loss.label_smoothing == 0.0  # task section typed with its defaults


def test_resolved_config_round_trips(cfg_files, tmp_path):
    cfg = load_config(cfg_files / "child.yaml", ["loss.label_smoothing=0.1"])
    saved = tmp_path / "resolved.yaml"
    saved.write_text(yaml.safe_dump(to_dict(cfg)))
    again = load_config(saved)
    assert to_dict(again) == {**to_dict(cfg), "output": {**to_dict(cfg)["output"], "name": cfg.output.name}}


@pytest.mark.parametrize("override,message", [
    ("train.epoch=3", "unknown key 'train.epoch'; did you mean 'train.epochs'?"),
    ("optim.lrr=0.1", "unknown key 'optim.lrr'; did you mean 'optim.lr'?"),
    ("loss.label_smothing=0.1", "unknown key 'loss.label_smothing'; did you mean 'loss.label_smoothing'?"),
    ("data.augment.hflp=0.1", "did you mean 'data.augment.hflip'?"),
])
def test_unknown_key_names_itself_and_closest(cfg_files, override, message):
    with pytest.raises(ConfigError, match=message.replace("?", r"\?").replace(".", r"\.")):
        load_config(cfg_files / "base.yaml", [override])


@pytest.mark.parametrize("override,message", [
    ("train.epochs=two", "'train.epochs' = 'two' has the wrong type: expected int"),
    ("train.amp=fp8", "'train.amp' = 'fp8' has the wrong type: expected 'none' or 'bf16' or 'fp16'"),
    ("data.mean=0.5", "'data.mean' = 0.5 has the wrong type: expected list[float]"),
    ("train.channels_last=1", "'train.channels_last' = 1 has the wrong type: expected bool"),
    ("train.epochs=0", "'train.epochs' = 0 is invalid: expected an integer >= 1"),
    ("train.eval_interval=0", "'train.eval_interval' = 0 is invalid: expected an integer >= 1"),
    ("train.max_steps_per_epoch=0", "'train.max_steps_per_epoch' = 0 is invalid: expected null or an integer >= 1"),
    ("train.layer_stats_interval=-1", "'train.layer_stats_interval' = -1 is invalid: expected an integer >= 0"),
])
def test_wrong_type_names_key_value_and_expected(cfg_files, override, message):
    with pytest.raises(ConfigError) as err:
        load_config(cfg_files / "base.yaml", [override])
    assert message in str(err.value)
    assert "base.yaml" in str(err.value)


def test_int_is_accepted_where_float_expected(cfg_files):
    assert load_config(cfg_files / "base.yaml", ["optim.lr=1"]).optim.lr == 1.0


def test_bad_files_and_overrides(tmp_path, cfg_files):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(tmp_path / "list.yaml")
    (tmp_path / "loop.yaml").write_text("_base_: loop.yaml\n")
    with pytest.raises(ConfigError, match="loops back"):
        load_config(tmp_path / "loop.yaml")
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        load_config(cfg_files / "base.yaml", ["train.epochs"])
    with pytest.raises(ConfigError, match="'task' is required"):
        validate({"model": {"name": "resnet18"}})
    with pytest.raises(ConfigError, match="unknown task 'clasification'; did you mean 'classification'"):
        validate({"task": "clasification", "model": {"name": "resnet18"}})


def test_shipped_configs_validate():
    from tests.conftest import ROOT

    files = sorted((ROOT / "configs").rglob("*.yaml"))
    assert files
    for f in files:
        if not f.name.startswith("_"):
            load_config(f)


def test_a_key_repeated_in_one_mapping_is_an_error(tmp_path):
    path = tmp_path / "dup.yaml"
    path.write_text("task: classification\ndata: {root: a}\nmodel: {name: resnet18}\ndata: {root: b}\n")
    with pytest.raises(ConfigError, match="key 'data' appears twice in one mapping \\(first at line 2\\)"):
        load_config(path)

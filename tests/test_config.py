import pytest

from nncli.config.schema import parse_config
from nncli.config.yamlsource import apply_override, format_path, parse_path, parse_yaml
from nncli.errors import ConfigError

TEXT = """\
data: {dataset: spiral}
model:
  - linear: {units: 16}
  - relu
  - linear: {units: 3}
loss: softmax_cross_entropy
optimizer: {type: adam, lr: 1e-3, weight_decay: 5e-4}
"""


def test_exponent_floats_are_numbers_and_defaults_fill_in():
    config = parse_config(parse_yaml(TEXT, "c.yaml"), default_name="c")
    assert config.optimizer.options["lr"] == pytest.approx(1e-3)
    assert config.regularization.weight_decay == pytest.approx(5e-4)
    assert "weight_decay" not in config.optimizer.options  # adam: L2 goes to the regularizer
    assert (config.name, config.seed, config.dtype) == ("c", 0, "float32")
    assert (config.train.epochs, config.train.batch_size) == (10, 128)
    assert config.schedule.type == "constant"
    with pytest.raises(AttributeError):
        config.seed = 3  # frozen


def test_adamw_keeps_its_decoupled_weight_decay():
    config = parse_config(parse_yaml(TEXT.replace("type: adam,", "type: adamw,"), "c.yaml"))
    assert config.optimizer.options["weight_decay"] == pytest.approx(5e-4)
    assert config.regularization.weight_decay == pytest.approx(5e-4)


def test_overrides_reach_lists_bare_names_and_new_keys():
    source = parse_yaml(TEXT, "c.yaml")
    apply_override(source, "model[0].linear.units=64")
    apply_override(source, "train.epochs=3")
    apply_override(source, "optimizer.lr=0.5")
    apply_override(source, "data.val_size=0.25")
    config = parse_config(source)
    assert config.model[0].options["units"] == 64
    assert config.train.epochs == 3
    assert config.optimizer.options["lr"] == 0.5
    assert config.data.val_size == 0.25
    assert source.location(("train", "epochs")) == "--set"
    assert source.location(("model", 2, "linear", "units")) == "c.yaml:5"


def test_paths_round_trip():
    for text in ("model[0].linear.units", "train.early_stopping.patience", "a[1][2].b"):
        assert format_path(parse_path(text)) == text
    with pytest.raises(ValueError):
        parse_path("model[x]")


def test_to_dict_parses_back_to_the_same_config():
    import yaml

    config = parse_config(parse_yaml(TEXT, "c.yaml"), default_name="c")
    again = parse_config(parse_yaml(yaml.safe_dump(config.to_dict()), "saved.yaml"))
    assert again == config


def test_a_layer_option_error_points_at_its_line():
    source = parse_yaml(TEXT.replace("{units: 16}", "{units: 0}"), "c.yaml")
    config = parse_config(source)
    from nncli.nn.layers import LAYERS

    with pytest.raises(ConfigError) as err, config.located(config.model[0].path):
        LAYERS.create("linear", dict(config.model[0].options))
    assert str(err.value) == "c.yaml:3 model[0].linear.units: expected a positive integer, got 0"


def test_duplicate_keys_recursive_aliases_and_merge_keys():
    with pytest.raises(ConfigError, match="c.yaml:2 .*duplicate key 'seed' \\(the first is on line 1\\)"):
        parse_yaml("seed: 1\nseed: 2\n", "c.yaml")
    with pytest.raises(ConfigError, match="an alias refers to itself"):
        parse_yaml("name: &a [*a]\n", "c.yaml")
    merged = parse_yaml("a: &d {units: 4, init: he}\nb: {<<: *d, units: 8}\n", "c.yaml").data
    assert merged["b"] == {"units": 8, "init": "he"}


def test_values_from_set_are_located_at_set_even_over_file_lines():
    source = parse_yaml(TEXT, "c.yaml")
    apply_override(source, "model=[batchnorm, {linear: {units: 3}}]")
    assert source.location(("model", 0, "batchnorm")) == "--set"
    source = parse_yaml(TEXT, "c.yaml")
    apply_override(source, "model[-1].linear.units=-5")
    assert source.location(("model", 2, "linear", "units")) == "--set"
    assert source.location(("model", 0, "linear", "units")) == "c.yaml:3"

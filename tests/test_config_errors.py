"""A corpus of bad configs: each ends in exit code 2 with one message naming the file, the line
and the YAML path, no traceback, and no run directory."""

from __future__ import annotations

import contextlib
import os
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

BASE = """\
name: bad
seed: 0
data:
  dataset: spiral
  points_per_class: 20
  val_size: 0.2
model:
  - linear: {units: 16}
  - relu
  - linear: {units: 3}
loss: softmax_cross_entropy
optimizer: {type: sgd, lr: 0.1, momentum: 0.9}
schedule: {type: constant}
train: {epochs: 1, batch_size: 16}
"""


def _replace(old: str, new: str) -> str:
    assert old in BASE, old
    return BASE.replace(old, new)


# (id, config text, expected "file:line path" fragment, expected words in the message)
CASES = [
    ("unknown-top-key", BASE + "trian: {epochs: 3}\n", "x.yaml:15 trian:", 'did you mean "train"'),
    ("unknown-layer", _replace("  - relu\n", "  - rleu\n"), "x.yaml:9 model[1]:", 'did you mean "relu"'),
    (
        "negative-units",
        _replace("{units: 16}", "{units: -3}"),
        "x.yaml:8 model[0].linear.units:",
        "expected a positive integer, got -3",
    ),
    (
        "units-as-text",
        _replace("{units: 16}", "{units: many}"),
        "x.yaml:8 model[0].linear.units:",
        "positive integer",
    ),
    (
        "unknown-layer-option",
        _replace("{units: 16}", "{unit: 16}"),
        "x.yaml:8 model[0].linear.unit:",
        'did you mean "units"',
    ),
    (
        "missing-units",
        _replace("  - linear: {units: 16}\n", "  - linear\n"),
        "x.yaml:8 model[0].linear.units:",
        "required",
    ),
    (
        "unknown-optimizer",
        _replace("type: sgd", "type: sgdd"),
        "x.yaml:12 optimizer.type:",
        'did you mean "sgd"',
    ),
    ("negative-lr", _replace("lr: 0.1", "lr: -0.1"), "x.yaml:12 optimizer.lr:", "positive"),
    (
        "momentum-too-big",
        _replace("momentum: 0.9", "momentum: 1.5"),
        "x.yaml:12 optimizer.momentum:",
        "[0, 1)",
    ),
    (
        "unknown-optimizer-option",
        _replace("momentum: 0.9", "momentun: 0.9"),
        "x.yaml:12 optimizer.momentun:",
        'did you mean "momentum"',
    ),
    (
        "unknown-loss",
        _replace("loss: softmax_cross_entropy", "loss: cross_entropy"),
        "x.yaml:11 loss:",
        "unknown loss",
    ),
    (
        "unknown-schedule",
        _replace("type: constant", "type: cosin"),
        "x.yaml:13 schedule.type:",
        'did you mean "cosine"',
    ),
    (
        "unknown-dataset",
        _replace("dataset: spiral", "dataset: spiarl"),
        "x.yaml:4 data.dataset:",
        'did you mean "spiral"',
    ),
    (
        "unknown-dataset-option",
        _replace("points_per_class: 20", "point_per_class: 20"),
        "x.yaml:5 data.point_per_class:",
        'did you mean "points_per_class"',
    ),
    ("bad-val-size", _replace("val_size: 0.2", "val_size: 1.5"), "x.yaml:6 data.val_size:", "fraction"),
    ("zero-epochs", _replace("epochs: 1", "epochs: 0"), "x.yaml:14 train.epochs:", "positive integer"),
    (
        "bad-batch-size",
        _replace("batch_size: 16", "batch_size: 2.5"),
        "x.yaml:14 train.batch_size:",
        "positive integer",
    ),
    (
        "unknown-train-key",
        _replace("epochs: 1", "epoch: 1"),
        "x.yaml:14 train.epoch:",
        'did you mean "epochs"',
    ),
    ("wrong-output-width", _replace("{units: 3}", "{units: 5}"), "x.yaml:10 model[2]", "3 classes"),
    (
        "model-not-a-list",
        _replace("model:\n  - linear: {units: 16}\n  - relu\n  - linear: {units: 3}\n", "model: linear\n"),
        "x.yaml:7 model:",
        "list of layers",
    ),
    ("dtype", BASE + "dtype: float16\n", "x.yaml:15 dtype:", "float32"),
    (
        "bad-dropout-p",
        _replace("  - relu\n", "  - dropout: {p: 1.2}\n"),
        "x.yaml:9 model[1].dropout.p:",
        "[0, 1)",
    ),
    ("seed-negative", _replace("seed: 0", "seed: -1"), "x.yaml:2 seed:", "non-negative integer"),
    (
        "monitor-without-val",
        _replace("  val_size: 0.2\n", "").replace(
            "{epochs: 1, batch_size: 16}", "{epochs: 1, batch_size: 16, monitor: val_acc}"
        ),
        "x.yaml:13 train.monitor:",
        "val_size",
    ),
    (
        "missing-model",
        _replace("model:\n  - linear: {units: 16}\n  - relu\n  - linear: {units: 3}\n", ""),
        "x.yaml:1",
        "missing required key 'model'",
    ),
    ("not-yaml", "name: [unclosed\nseed: 0\n", "x.yaml:", "not valid YAML"),
    (
        "class-weights-length",
        _replace("loss: softmax_cross_entropy", "loss: {type: softmax_cross_entropy, class_weights: [1, 2]}"),
        "x.yaml:11 loss.class_weights:",
        "expected 3 weights",
    ),
    (
        "accuracy-of-a-regression-loss",
        _replace("loss: softmax_cross_entropy", "loss: mse").replace(
            "{epochs: 1, batch_size: 16}", "{epochs: 1, batch_size: 16, monitor: val_acc}"
        ),
        "x.yaml:14 train.monitor:",
        "cannot monitor 'val_acc'",
    ),
    (
        "plateau-on-an-unknown-metric",
        _replace("{type: constant}", "{type: plateau, monitor: val_f1}"),
        "x.yaml:13 schedule.monitor:",
        "cannot monitor 'val_f1'",
    ),
    (
        "mode-without-monitor",
        _replace("{epochs: 1, batch_size: 16}", "{epochs: 1, batch_size: 16, mode: max}"),
        "x.yaml:14 train.mode:",
        "mode needs a monitor",
    ),
    (
        "binary-loss-on-three-classes",
        _replace("loss: softmax_cross_entropy", "loss: binary_cross_entropy"),
        "x.yaml:11 loss:",
        "needs two classes",
    ),
    (
        "linear-on-images",
        _replace("dataset: spiral\n  points_per_class: 20", "dataset: mnist_small")
        .replace("  - relu\n", "  - relu\n")
        .replace("  val_size: 0.2\n", "  val_size: 100\n"),
        "x.yaml:7 model[0].linear:",
        "flatten",
    ),
]


@pytest.mark.parametrize(("text", "where", "words"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_config_is_one_clear_error(workdir, text, where, words, nncli):
    (workdir / "x.yaml").write_text(text)
    result = nncli("train", "x.yaml", "--quiet")
    message = result.output.strip()
    assert result.exit_code == 2, message
    assert "Traceback" not in message
    assert len(message.splitlines()) == 1, message
    assert where in message, message
    assert words in message, message
    assert not (workdir / "runs").exists()


def test_the_corpus_is_large_and_distinct():
    assert len(CASES) >= 20
    assert len({c[1] for c in CASES}) == len(CASES)


def test_bad_override_is_a_config_error(workdir, nncli):
    (workdir / "x.yaml").write_text(BASE)
    result = nncli("train", "x.yaml", "--set", "model[0].linear.units=-3")
    assert result.exit_code == 2
    assert "--set model[0].linear.units: expected a positive integer, got -3" in result.output
    result = nncli("train", "x.yaml", "--set", "model[7].linear.units=3")
    assert result.exit_code == 2 and "does not exist" in result.output
    result = nncli("train", "x.yaml", "--set", "novalue")
    assert result.exit_code == 2 and "KEY=VALUE" in result.output
    assert not (workdir / "runs").exists()


def test_missing_config_file(workdir, nncli):
    result = nncli("train", "nope.yaml")
    assert result.exit_code == 2
    assert "nope.yaml does not exist" in result.output


def test_corpus_text_is_valid_yaml_apart_from_the_yaml_case():
    import yaml

    for name, text, *_ in CASES:
        if name != "not-yaml":
            yaml.safe_load(textwrap.dedent(text))


# Keras' (and PyTorch's) names are not accepted, but the error names nncli's:
# (id, old text of BASE, new text, "file:line path", words)
OTHER_LIBRARIES = [
    ("categorical_crossentropy", "loss: softmax_cross_entropy", "loss: categorical_crossentropy",
     "x.yaml:11 loss:", 'unknown loss "categorical_crossentropy" (nncli calls it "softmax_cross_entropy")'),
    ("sparse_categorical_crossentropy", "loss: softmax_cross_entropy",
     "loss: sparse_categorical_crossentropy", "x.yaml:11 loss:",
     '(nncli calls it "softmax_cross_entropy")'),
    ("binary_crossentropy", "loss: softmax_cross_entropy", "loss: binary_crossentropy",
     "x.yaml:11 loss:", '(nncli calls it "binary_cross_entropy")'),
    ("mean_squared_error", "loss: softmax_cross_entropy", "loss: mean_squared_error",
     "x.yaml:11 loss:", '(nncli calls it "mse")'),
    ("dense", "  - linear: {units: 16}\n", "  - dense: {units: 16}\n", "x.yaml:8 model[0]:",
     'unknown layer "dense" (nncli calls it "linear")'),
    ("Dense", "  - linear: {units: 16}\n", "  - Dense: {units: 16}\n", "x.yaml:8 model[0]:",
     '(nncli calls it "linear")'),
    ("Conv2D", "  - relu\n", "  - Conv2D: {filters: 8}\n", "x.yaml:9 model[1]:", '(did you mean "conv2d"?)'),
    ("MaxPooling2D", "  - relu\n", "  - MaxPooling2D\n", "x.yaml:9 model[1]:",
     '(nncli calls it "maxpool2d")'),
    ("AveragePooling2D", "  - relu\n", "  - AveragePooling2D\n", "x.yaml:9 model[1]:",
     '(nncli calls it "avgpool2d")'),
    ("GlobalAveragePooling2D", "  - relu\n", "  - GlobalAveragePooling2D\n", "x.yaml:9 model[1]:",
     '(nncli calls it "global_avgpool")'),
    ("Flatten", "  - relu\n", "  - Flatten\n", "x.yaml:9 model[1]:", '(did you mean "flatten"?)'),
    ("Dropout", "  - relu\n", "  - Dropout\n", "x.yaml:9 model[1]:", '(did you mean "dropout"?)'),
    ("BatchNormalization", "  - relu\n", "  - BatchNormalization\n", "x.yaml:9 model[1]:",
     '(nncli calls it "batchnorm")'),
    ("ReLU", "  - relu\n", "  - ReLU\n", "x.yaml:9 model[1]:", '(did you mean "relu"?)'),
    ("Activation", "  - relu\n", "  - Activation\n", "x.yaml:9 model[1]:",
     'an activation is a layer of its own: write its name, as "- relu"'),
    ("dropout-rate", "  - relu\n", "  - dropout: {rate: 0.2}\n", "x.yaml:9 model[1].dropout.rate:",
     'unknown option (nncli calls it "p"); valid options: p'),
    ("learning_rate", "lr: 0.1", "learning_rate: 0.1", "x.yaml:12 optimizer.learning_rate:",
     '(nncli calls it "lr")'),
    ("betas", "type: sgd, lr: 0.1, momentum: 0.9", "type: adam, lr: 0.1, betas: [0.9, 0.99]",
     "x.yaml:12 optimizer.betas:", '(nncli calls them "beta1" and "beta2")'),
]


@pytest.mark.parametrize(("old", "new", "where", "words"), [c[1:] for c in OTHER_LIBRARIES],
                         ids=[c[0] for c in OTHER_LIBRARIES])
def test_other_libraries_names_are_refused_with_nncli_name(workdir, old, new, where, words, nncli):
    (workdir / "x.yaml").write_text(_replace(old, new))
    result = nncli("check", "x.yaml")
    message = result.output.strip()
    assert result.exit_code == 2, message
    assert len(message.splitlines()) == 1, message
    assert where in message and words in message, message


def test_an_option_hint_names_only_an_option_the_class_takes(workdir, nncli):
    # beta_1 is Adam's beta1, but SGD has no beta1: the closest valid option, or nothing
    (workdir / "x.yaml").write_text(_replace("momentum: 0.9", "beta_1: 0.9"))
    result = nncli("check", "x.yaml")
    assert result.exit_code == 2 and "x.yaml:12 optimizer.beta_1: unknown option" in result.output
    assert "beta1" not in result.output.replace("beta_1", "")


TAKES = "data takes dataset, val_size, preprocess, augment, layout, and the"


@pytest.mark.parametrize(("data", "valid"), [
    ({"dataset": "npz", "path": "d.npz", "loss_task": "regression"}, f"{TAKES} npz dataset path, task"),
    ({"dataset": "mnist", "progress": False}, f"{TAKES} mnist dataset no option of its own"),
    ({"dataset": "arrays", "arrays": 7}, f"{TAKES} arrays dataset task"),
])
def test_what_the_run_gives_a_loader_is_no_yaml_option(workdir, spiral, nncli, data, valid):
    # loss_task, progress and arrays are the loader's arguments, passed by the run: never options
    key = [k for k in data if k in ("loss_task", "progress", "arrays")][0]
    text = spiral({"data": data})
    (workdir / "x.yaml").write_text(text)
    line = next(i for i, row in enumerate(text.splitlines(), 1) if row.strip().startswith(f"{key}:"))
    result = nncli("check", "x.yaml")
    assert result.exit_code == 2, result.output
    assert f"x.yaml:{line} data.{key}: unknown option" in result.output, result.output
    assert valid in result.output, result.output


@pytest.mark.parametrize("setting",
                         ["optimizer.lr=0.01", "loss.label_smoothing=0.1", "schedule.warmup_epochs=1"])
def test_an_override_of_a_section_given_as_a_bare_name(workdir, spiral, nncli, setting):
    # `optimizer: adam` stands for {type: adam}: its options can be set like any mapping's
    text = spiral().replace("optimizer: {type: sgd, lr: 0.1, momentum: 0.9, weight_decay: 1.0e-4}",
                            "optimizer: adam").replace("schedule: {type: constant}", "schedule: constant")
    assert "optimizer: adam" in text and "schedule: constant" in text
    (workdir / "bare.yaml").write_text(text)
    result = nncli("check", "bare.yaml", "--set", setting)
    assert result.exit_code == 0, result.output


def test_keras_activation_given_its_argument_is_told_the_nncli_layer(workdir, spiral, nncli):
    text = spiral().replace("  - relu\n", "  - {Activation: relu}\n")
    assert "{Activation: relu}" in text
    (workdir / "act.yaml").write_text(text)
    result = nncli("check", "act.yaml")
    assert result.exit_code == 2 and 'unknown layer "Activation" (an activation is a layer' in result.stderr


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no fifos here")
def test_a_config_read_from_a_stream_is_read_no_further_than_a_config_may_be(tmp_path):
    """A pipe (`nncli train <(...)`) has no size to check before reading, and /dev/zero no end:
    past MAX_BYTES the read stops with one sentence. A config of its size or less still reads."""
    import threading

    from nncli.config.yamlsource import MAX_BYTES, load_yaml
    from nncli.errors import ConfigError

    def streamed(text: bytes):
        fifo = tmp_path / f"stream{len(text)}.yaml"
        os.mkfifo(fifo)

        def write():
            with contextlib.suppress(BrokenPipeError), open(fifo, "wb") as f:
                f.write(text)

        writer = threading.Thread(target=write, daemon=True)
        writer.start()
        try:
            return load_yaml(fifo)
        finally:
            writer.join(timeout=10)

    with pytest.raises(ConfigError, match=f"holds more than {MAX_BYTES:,} bytes"):
        streamed(b"name: big\n#" + b"x" * MAX_BYTES + b"\n")
    assert streamed(b"name: small\nseed: 3\n").data["seed"] == 3


@pytest.mark.parametrize(("key", "said"), [
    ("val_sizee", 'data.val_sizee: unknown option (did you mean "val_size"?); data takes'),
    ("subset", "data.subset: unknown option; data takes"),
])
def test_an_unknown_data_key_names_the_sections_keys_and_the_datasets(workdir, nncli, key, said):
    result = nncli("check", str(ROOT / "configs" / "quickstart.yaml"), "--set", f"data.{key}=1")
    assert result.exit_code == 2, result.output
    assert result.output.strip() == (f"error: --set {said} dataset, val_size, preprocess, augment, layout,"
                                     " and the mnist_small dataset no option of its own")


def test_the_weight_decay_keys_are_valid_optimizer_options_and_typos_of_them_are_suggested(workdir, nncli):
    (workdir / "x.yaml").write_text(_replace("momentum: 0.9", "momentum: 0.9, weight_decy: 0.001"))
    result = nncli("check", "x.yaml")
    assert result.exit_code == 2, result.output
    assert result.output.strip().endswith(
        'optimizer.weight_decy: unknown option (did you mean "weight_decay"?); valid options: lr, momentum,'
        " nesterov, clip_norm, weight_decay, l1, decay_applies_to"), result.output

"""Image augmentation: each augmentation against a per-sample loop, its config errors through
the CLI, and the trainer applying it to training batches only."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from nncli.data.augment import AUGMENTATIONS, Augmenter, HFlip, RandomCrop, RandomShift
from nncli.errors import ConfigError

# ---------------------------------------------------------------- the per-sample references
# They draw what the module documents, in the same order, then loop over the samples.


def crop_loop(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    offsets = rng.integers(0, 2 * k + 1, size=(len(x), 2))
    out = np.empty_like(x)
    _, _, h, w = x.shape
    for i, (top, left) in enumerate(offsets):
        padded = np.pad(x[i], ((0, 0), (k, k), (k, k)))
        out[i] = padded[:, top:top + h, left:left + w]
    return out


def shift_loop(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Written as a shift: sample i moves down by k - top and right by k - left."""
    offsets = rng.integers(0, 2 * k + 1, size=(len(x), 2))
    out = np.zeros_like(x)
    _, _, h, w = x.shape
    for i, (top, left) in enumerate(offsets):
        dy, dx = k - top, k - left
        for r in range(h):
            for c in range(w):
                if 0 <= r - dy < h and 0 <= c - dx < w:
                    out[i, :, r, c] = x[i, :, r - dy, c - dx]
    return out


def hflip_loop(x: np.ndarray, p: float, rng: np.random.Generator) -> np.ndarray:
    draws = rng.random(len(x))
    out = np.empty_like(x)
    for i in range(len(x)):
        out[i] = x[i, :, :, ::-1] if draws[i] < p else x[i]
    return out


def batch(shape=(9, 3, 5, 7), dtype=np.float32, seed=1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


CASES = [
    (RandomCrop(padding=1), lambda x, rng: crop_loop(x, 1, rng)),
    (RandomCrop(padding=3), lambda x, rng: crop_loop(x, 3, rng)),
    (RandomShift(pixels=2), lambda x, rng: shift_loop(x, 2, rng)),
    (RandomShift(pixels=4), lambda x, rng: crop_loop(x, 4, rng)),  # the same operation
    (HFlip(), lambda x, rng: hflip_loop(x, 0.5, rng)),
    (HFlip(p=0.2), lambda x, rng: hflip_loop(x, 0.2, rng)),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(9, 3, 5, 7), (16, 1, 28, 28), (1, 2, 6, 6)])
@pytest.mark.parametrize("augmentation, reference", CASES, ids=[repr(a.get_config()) for a, _ in CASES])
def test_each_augmentation_is_its_per_sample_loop(augmentation, reference, shape, dtype):
    x = batch(shape, dtype)
    before = x.copy()
    ours, theirs = np.random.default_rng(7), np.random.default_rng(7)
    out = augmentation(x, ours)
    assert out.shape == x.shape and out.dtype == x.dtype and out.flags.c_contiguous
    np.testing.assert_array_equal(out, reference(x, theirs))
    # the same draws: the generators stand at the same place afterwards
    assert ours.bit_generator.state == theirs.bit_generator.state
    # a new array; the caller's batch is left alone
    assert not np.shares_memory(out, x)
    np.testing.assert_array_equal(x, before)


def test_random_crop_and_random_shift_are_one_operation():
    x = batch((32, 3, 8, 8))
    a = RandomCrop(padding=3)(x, np.random.default_rng(5))
    b = RandomShift(pixels=3)(x, np.random.default_rng(5))
    np.testing.assert_array_equal(a, b)


def test_random_crop_keeps_each_image_as_a_window_of_the_zero_padded_image():
    k, x = 2, batch((200, 2, 6, 5)) + 10  # no zeros inside the images: a window is unambiguous
    out = RandomCrop(padding=k)(x, np.random.default_rng(0))
    seen = set()
    for image, original in zip(out, x, strict=True):
        padded = np.pad(original, ((0, 0), (k, k), (k, k)))
        offsets = [(i, j) for i in range(2 * k + 1) for j in range(2 * k + 1)
                   if np.array_equal(image, padded[:, i:i + 6, j:j + 5])]
        assert len(offsets) == 1
        seen.add(offsets[0])
    assert seen == {(i, j) for i in range(2 * k + 1) for j in range(2 * k + 1)}  # every offset drawn


def test_hflip_with_probability_zero_and_one():
    x = batch()
    rng = np.random.default_rng(0)
    np.testing.assert_array_equal(HFlip(p=0.0)(x, rng), x)
    np.testing.assert_array_equal(HFlip(p=1.0)(x, rng), x[..., ::-1])
    flipped = HFlip()(x, np.random.default_rng(3))
    which = [np.array_equal(a, b[..., ::-1]) for a, b in zip(flipped, x, strict=True)]
    assert 0 < sum(which) < len(x)  # some flipped, some not: per image, not per batch


def test_the_augmenter_applies_the_list_in_order_from_one_generator():
    x = batch((12, 3, 6, 6))
    augmenter = Augmenter([RandomCrop(padding=2), HFlip()])
    out = augmenter(x, np.random.default_rng(4))
    rng = np.random.default_rng(4)
    np.testing.assert_array_equal(out, hflip_loop(crop_loop(x, 2, rng), 0.5, rng))
    assert augmenter.get_config() == [{"random_crop": {"padding": 2}}, {"hflip": {"p": 0.5}}]


OPTIONS = {"random_crop": {"padding": 4}, "random_shift": {"pixels": 2}, "hflip": {"p": 0.3}}


@pytest.mark.parametrize("name", AUGMENTATIONS.names())
def test_config_round_trip(name):
    assert name in OPTIONS, f"give the augmentation {name} a case in OPTIONS"
    made = AUGMENTATIONS.create(name, OPTIONS[name])
    assert made.get_config() == OPTIONS[name]
    assert type(made)(**made.get_config()).get_config() == made.get_config()


@pytest.mark.parametrize(
    "name, options, key",
    [
        ("random_crop", {"padding": 0}, "padding"),
        ("random_crop", {"padding": 1.5}, "padding"),
        ("random_crop", {"padding": True}, "padding"),
        ("random_shift", {"pixels": -2}, "pixels"),
        ("hflip", {"p": 1.5}, "p"),
        ("hflip", {"p": -0.1}, "p"),
        ("hflip", {"p": "half"}, "p"),
    ],
)
def test_bad_options_name_their_key(name, options, key):
    with pytest.raises(ConfigError) as err:
        AUGMENTATIONS.create(name, options)
    assert err.value.key == key


# ---------------------------------------------------------------- through the config and CLI

CONFIG = """\
name: aug
data:
  dataset: mnist_small
  val_size: 500
  preprocess: [scale]
  augment:
    - random_crop: {padding: 2}
    - hflip
model: [flatten, {linear: {units: 16}}, relu, {linear: {units: 10}}]
loss: softmax_cross_entropy
optimizer: {type: sgd, lr: 0.1}
train: {epochs: 1}
"""


@pytest.fixture
def aug_yaml(workdir):
    (workdir / "aug.yaml").write_text(CONFIG)
    return "aug.yaml"


def test_the_resolved_config_shows_the_augmentation_and_parses_back(workdir, aug_yaml, nncli):
    from nncli.config.schema import load_config, parse_config
    from nncli.config.yamlsource import parse_yaml

    config = load_config(aug_yaml)
    assert [(c.type, dict(c.options)) for c in config.data.augment] == [
        ("random_crop", {"padding": 2}), ("hflip", {})
    ]
    assert parse_config(parse_yaml(yaml.safe_dump(config.to_dict()), "again.yaml")) == config
    result = nncli("train", aug_yaml, "--run-dir", "r", "--quiet")
    assert result.exit_code == 0, result.output
    saved = yaml.safe_load((workdir / "r" / "config.yaml").read_text())
    assert saved["data"]["augment"] == [{"random_crop": {"padding": 2}}, {"hflip": {"p": 0.5}}]


@pytest.mark.parametrize(
    "old, new, expected",
    [
        (
            "    - hflip\n",
            "    - hfilp\n",
            'error: aug.yaml:8 data.augment[1]: unknown augmentation "hfilp" (did you mean "hflip"?);'
            " valid names: hflip, random_crop, random_shift",
        ),
        (
            "{padding: 2}",
            "{padding: 0}",
            "error: aug.yaml:7 data.augment[0].random_crop.padding: expected a positive integer, got 0",
        ),
        (
            "{padding: 2}",
            "{pading: 2}",
            'error: aug.yaml:7 data.augment[0].random_crop.pading: unknown option (did you mean'
            ' "padding"?); valid options: padding',
        ),
        (
            "{padding: 2}",
            "{padding: 28}",
            "error: aug.yaml:7 data.augment[0].random_crop.padding: expected at most 27 for 28x28"
            " images, got 28 (a shift that large can move an image entirely out of view)",
        ),
        (
            "    - hflip\n",
            "    - hflip: {p: 2}\n",
            "error: aug.yaml:8 data.augment[1].hflip.p: expected a number in [0, 1], got 2",
        ),
        (
            "preprocess: [scale]",
            "preprocess: [scale, flatten]",
            "error: aug.yaml:7 data.augment[0].random_crop: needs images (N, C, H, W); the inputs are"
            " flat vectors of 784 values (leave flatten out of data.preprocess and put a flatten"
            " layer in the model)",
        ),
        (
            "  augment:\n    - random_crop: {padding: 2}\n    - hflip\n",
            "  augment: hflip\n",
            "error: aug.yaml:6 data.augment: expected a list of augmentations like [hflip], got 'hflip'",
        ),
    ],
)
def test_config_errors_name_their_line_and_create_nothing(workdir, nncli, old, new, expected):
    assert old in CONFIG
    (workdir / "bad.yaml").write_text(CONFIG.replace(old, new))
    result = nncli("check", "bad.yaml")
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [expected.replace("aug.yaml", "bad.yaml")]
    result = nncli("train", "bad.yaml")
    assert result.exit_code == 2 and not (workdir / "runs").exists()


def test_hflip_on_flat_vectors_of_a_synthetic_set(workdir, nncli, spiral):
    (workdir / "s.yaml").write_text(spiral({"data.augment": ["hflip"]}))
    result = nncli("check", "s.yaml")
    assert result.exit_code == 2
    assert "data.augment[0].hflip: needs images (N, C, H, W); the inputs are flat vectors of 2 values" in (
        result.output
    )


# ---------------------------------------------------------------- the trainer


def test_the_trainer_augments_training_batches_only(workdir, aug_yaml):
    from nncli.builder import build_experiment, steps_per_epoch
    from nncli.config.schema import load_config
    from nncli.nn.metrics import loss_and_accuracy
    from nncli.training.trainer import Trainer

    exp = build_experiment(load_config(aug_yaml), workdir, progress=False)
    assert exp.augment.get_config() == [{"random_crop": {"padding": 2}}, {"hflip": {"p": 0.5}}]
    x_train, x_val = np.array(exp.splits.x_train), np.array(exp.splits.x_val)
    seen = []

    def blank(xb, rng):  # training on blank images cannot give validation's figures by chance
        assert rng is exp.rng
        seen.append(xb.copy())
        return np.zeros_like(xb)

    exp.augment = blank
    state = Trainer(exp).fit()
    assert len(seen) == steps_per_epoch(exp.config, exp.splits)
    # every training row once, as it is in the training set

    def sorted_rows(images):
        flat = images.reshape(len(images), -1)
        return flat[np.lexsort(flat.T)]

    np.testing.assert_array_equal(sorted_rows(np.concatenate(seen)), sorted_rows(x_train))
    # validation saw the data as it is, and the training set is unchanged
    val_loss, val_acc = loss_and_accuracy(exp.model, exp.loss, x_val, exp.splits.y_val,
                                          exp.config.train.eval_batch_size)
    assert state.history[0]["val_loss"] == val_loss and state.history[0]["val_acc"] == val_acc
    np.testing.assert_array_equal(exp.splits.x_train, x_train)
    np.testing.assert_array_equal(exp.splits.x_val, x_val)

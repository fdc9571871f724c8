"""Multiply-accumulates per sample (nncli.nn.cost): in `nncli check`'s table and in
`nncli.Model.summary()`, against counts made by hand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_check import layer_rows  # the table's rows, read as test_check reads them

from nncli.nn.cost import MACS, NO_MACS, macs
from nncli.nn.layers import LAYERS

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_mnist_cnn_macs_match_a_hand_count(workdir, nncli):
    # the shipped MNIST subset has MNIST's shape (1, 28, 28) and 10 classes: no download
    result = nncli("check", CONFIGS / "mnist_cnn.yaml", "--set", "data.dataset=mnist_small",
                   "--set", "data.val_size=1000")
    assert result.exit_code == 0, result.output
    conv1 = 28 * 28 * 16 * (3 * 3 * 1)  # padding 1 keeps 28x28; 16 filters over 3x3x1 windows
    conv2 = 14 * 14 * 32 * (3 * 3 * 16)  # after a 2x2 pool: 14x14, 32 filters over 3x3x16
    fc1 = (32 * 7 * 7) * 128  # after the second pool: 32x7x7 flattened
    fc2 = 128 * 10
    assert (conv1, conv2, fc1, fc2) == (112_896, 903_168, 200_704, 1_280)
    assert [(row[1].split("(")[0], row[4]) for row in layer_rows(result.stdout)] == [
        ("conv2d", f"{conv1:,}"), ("relu", "0"), ("maxpool2d", "0"),
        ("conv2d", f"{conv2:,}"), ("relu", "0"), ("maxpool2d", "0"), ("flatten", "0"),
        ("linear", f"{fc1:,}"), ("relu", "0"), ("linear", f"{fc2:,}"),
    ]
    total = conv1 + conv2 + fc1 + fc2
    assert total == 1_218_048
    assert "multiply-accumulates per sample: 1,218,048 (forward" in result.stdout
    assert "total parameters: 206,922" in result.stdout  # 160 + 4,640 + 200,832 + 1,290


def test_a_strided_padded_rectangular_convolution(rng):
    conv = LAYERS.create("conv2d", {"filters": 4, "kernel": [3, 5], "stride": 2, "padding": [1, 2]})
    conv.build((3, 11, 13), rng, np.float64)
    # OH = (11 + 2 - 3) // 2 + 1 = 6, OW = (13 + 4 - 5) // 2 + 1 = 7
    assert conv.output_shape == (4, 6, 7)
    assert macs(conv) == 6 * 7 * 4 * (3 * 5 * 3)
    # each output value is one dot product of a window with a kernel: the products done by
    # im2col's matrix product, (OH*OW, kh*kw*C) @ (kh*kw*C, F), counted from its shapes
    assert macs(conv) == (6 * 7) * (3 * 5 * 3) * 4


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.mark.parametrize("name", LAYERS.names())
def test_every_layer_has_a_mac_rule(name):
    """A newly registered layer fails here until nncli.nn.cost counts it."""
    assert (name in MACS) != (name in NO_MACS), f"{name}: say in nncli.nn.cost what it costs"


def test_model_summary_is_the_check_layer_rows(workdir, spiral, nncli):
    import nncli as api

    (workdir / "s.yaml").write_text(spiral({"train.epochs": 1}))
    assert nncli("train", "s.yaml", "--run-dir", "r", "--quiet").exit_code == 0
    checked = nncli("check", "s.yaml")
    summary = api.load(workdir / "r").summary()
    assert layer_rows(summary) == layer_rows(checked.stdout) == [
        ["0", "linear(units=32, init=he)", "(32,)", "96", "64"],  # 2 inputs x 32 units
        ["1", "relu", "(32,)", "0", "0"],
        ["2", "dropout(p=0.1)", "(32,)", "0", "0"],
        ["3", "linear(units=3)", "(3,)", "99", "96"],
    ]
    assert summary.splitlines()[-2:] == [
        "total parameters: 195 (780 B)",
        "multiply-accumulates per sample: 160 (forward; FLOPs are about twice that)",
    ]

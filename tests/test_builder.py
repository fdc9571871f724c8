from pathlib import Path

import numpy as np

from nncli.builder import build_experiment
from nncli.config.schema import parse_config
from nncli.config.yamlsource import parse_yaml

TEXT = """\
seed: 5
data: {dataset: spiral, points_per_class: 30, val_size: 10}
model: [{linear: {units: 8}}, batchnorm, relu, {linear: {units: 3}}]
loss: softmax_cross_entropy
optimizer: {type: adamw, lr: 1e-3, weight_decay: 0.1, l1: 0.01}
"""


def test_weight_decay_reaches_weights_only():
    exp = build_experiment(parse_config(parse_yaml(TEXT, "c.yaml")), Path("."), progress=False)
    assert exp.optimizer.decayed == {"layers.0.W", "layers.3.W"}
    assert exp.regularizer.l2 == 0.0 and exp.regularizer.l1 == 0.01  # AdamW decays by itself
    sgd = build_experiment(parse_config(parse_yaml(TEXT.replace("adamw", "sgd"), "c.yaml")), Path("."))
    assert sgd.regularizer.l2 == 0.1 and sgd.regularizer.names(sgd.model) == ["layers.0.W", "layers.3.W"]


def test_the_same_seed_builds_the_same_experiment():
    a, b = (
        build_experiment(parse_config(parse_yaml(TEXT, "c.yaml")), Path("."), progress=False) for _ in "ab"
    )
    np.testing.assert_array_equal(a.splits.x_val, b.splits.x_val)
    for name in a.model.params:
        np.testing.assert_array_equal(a.model.params[name], b.model.params[name])
    assert a.rng.bit_generator.state == b.rng.bit_generator.state
    assert len(a.splits.x_val) == 10

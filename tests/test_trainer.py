"""nncli/training/trainer.py and the non-finite report (training/diagnostics.py): every batch
goes through the one training step (nncli.nn.step), and a loss that stops being finite stops the
run with a report that names the first layer whose output went bad."""

from __future__ import annotations

import numpy as np
import pytest

from nncli.builder import build_experiment, steps_per_epoch
from nncli.config.schema import load_config
from nncli.training import trainer as trainer_module
from nncli.training.callbacks.base import Callback
from nncli.training.trainer import NonFiniteLoss, Trainer


class Catch(Callback):
    def __init__(self):
        self.report = None

    def on_nonfinite(self, trainer, report):
        self.report = report


def experiment(tmp_path, spiral, changes=None):
    path = tmp_path / "spiral.yaml"
    path.write_text(spiral(changes))
    return build_experiment(load_config(path), tmp_path)


def test_every_batch_is_one_step_of_nncli_nn_step(tmp_path, spiral, monkeypatch):
    calls = []
    real = trainer_module.step

    def spy(model, loss, optimizer, x, y, **options):
        calls.append((len(x), options.get("hook"), options.get("finite_only", True)))
        return real(model, loss, optimizer, x, y, **options)

    monkeypatch.setattr(trainer_module, "step", spy)
    exp = experiment(tmp_path, spiral, {"train.epochs": 2})
    Trainer(exp).fit()
    assert len(calls) == 2 * steps_per_epoch(exp.config, exp.splits)
    assert all(hook is None and finite for _, hook, finite in calls)  # unwatched, and stops on NaN
    assert exp.optimizer.steps == len(calls)


MODEL = [
    {"linear": {"units": 16}},
    "relu",
    {"linear": {"units": 16}},
    "tanh",
    {"linear": {"units": 3}},
]


@pytest.mark.parametrize("poisoned", [0, 2, 4])
def test_the_report_names_the_first_layer_that_went_bad(tmp_path, spiral, poisoned):
    exp = experiment(tmp_path, spiral, {"model": MODEL})
    exp.model.params[f"layers.{poisoned}.W"][0, 0] = np.nan
    catch = Catch()
    with pytest.raises(NonFiniteLoss, match="epoch 1, batch 1 "):
        Trainer(exp, [catch]).fit()
    layers = catch.report["layers"]
    assert [layer["index"] for layer in layers] == list(range(len(MODEL)))
    bad = [layer["index"] for layer in layers if layer["activations"]["nonfinite"]]
    assert bad[0] == poisoned
    assert layers[poisoned]["layer"].startswith("linear(units=")
    # the step was not applied: the parameters are still the ones that gave the bad loss
    assert np.isnan(exp.model.params[f"layers.{poisoned}.W"][0, 0])
    assert exp.optimizer.steps == 0

"""A final sigmoid or softmax before its own loss, written the Keras way: trained on the logits
through the fused loss, predicting probabilities. Other final activations that do not suit the
loss are trained as written, with a warning."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from nncli.builder import build_experiment
from nncli.config.schema import load_config

REPO = Path(__file__).resolve().parents[1]

def moons(make_config, folder, last=("sigmoid", 1), loss="binary_cross_entropy") -> Path:
    """Two moons (600 points) through a 16-unit tanh MLP whose output layer has `last[1]` units
    followed by the activation `last[0]` (None: none), trained 20 epochs: moons.yaml in `folder`."""
    activation, units = last
    model = [{"linear": {"units": 16}}, "tanh", {"linear": {"units": units}}]
    return make_config(folder / "moons.yaml", "sine", name="moons", seed=0,
                       data={"dataset": "moons", "samples": 600, "noise": 0.2, "val_size": 0.2},
                       model=model + ([activation] if activation else []), loss=loss,
                       train={"epochs": 20, "batch_size": 32})


def accuracy_of(run: Path) -> float:
    return json.loads((run / "summary.json").read_text())["test"]["accuracy"]


def trained(nncli, config: Path, run: str, *sets: str) -> Path:
    args = [a for s in sets for a in ("--set", s)]
    result = nncli("train", config, "--run-dir", run, "--quiet", *args)
    assert result.exit_code == 0, result.output
    return Path(run)


def test_a_final_sigmoid_trains_as_well_as_logits(workdir, nncli, make_config):
    moons(make_config, workdir)
    with_sigmoid = accuracy_of(trained(nncli, workdir / "moons.yaml", "sigmoid"))
    plain = accuracy_of(trained(nncli, workdir / "moons.yaml", "identity", "model[3]=identity"))
    assert plain > 0.8  # the moons are learnable: the comparison means something
    # the same logits, the same loss, the same draws: the same run (it used to reach 50%)
    assert with_sigmoid == plain
    # eval counts accuracy on the logits' side of 0, as training does
    report = json.loads(nncli("eval", "sigmoid", "--json").stdout)
    assert report["accuracy"] == with_sigmoid


def test_a_final_softmax_in_quickstart_trains_as_without(workdir, nncli):
    config = yaml.safe_load((REPO / "configs" / "quickstart.yaml").read_text())
    config["train"]["epochs"] = 4
    (workdir / "plain.yaml").write_text(yaml.safe_dump(config))
    config["model"].append("softmax")
    (workdir / "softmax.yaml").write_text(yaml.safe_dump(config))
    plain = accuracy_of(trained(nncli, workdir / "plain.yaml", "plain"))
    with_softmax = accuracy_of(trained(nncli, workdir / "softmax.yaml", "softmax"))
    assert plain > 0.9
    assert abs(with_softmax - plain) <= 0.01


def test_check_says_what_it_did_and_predictions_are_probabilities(workdir, nncli, make_config):
    moons(make_config, workdir, ("softmax", 2), "softmax_cross_entropy")
    out = nncli("check", "moons.yaml")
    assert out.exit_code == 0, out.output
    [note] = [line for line in out.stdout.splitlines() if line.startswith("note:")]
    assert "moons.yaml:14 model[3].softmax: applied to predictions only" in note
    assert "softmax_cross_entropy on the logits" in note

    exp = build_experiment(load_config("moons.yaml"), workdir)
    x = exp.splits.x_test[:50]
    logits = exp.model.forward(x, training=False)
    probs = exp.model.predict(x)
    assert logits.shape == probs.shape == (50, 2)
    np.testing.assert_allclose(probs.sum(axis=1), 1, rtol=1e-6)
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    np.testing.assert_allclose(probs, e / e.sum(axis=1, keepdims=True), rtol=1e-5)
    # the resolved config keeps the layer as written
    assert exp.resolved_config()["model"][-1] == {"softmax": {}}


@pytest.mark.parametrize(
    ("last", "loss", "words"),
    [
        ("relu", "binary_cross_entropy", "a final relu limits them to [0, inf): remove it"),
        ("tanh", "binary_cross_entropy", "applies its own sigmoid, but a final tanh"),
        ("sigmoid", "multiclass_hinge", "multiclass_hinge expects unbounded scores"),
    ],
)
def test_an_activation_that_does_not_suit_the_loss_is_a_warning(workdir, nncli, make_config, last, loss,
                                                               words):
    moons(make_config, workdir, (last, 2 if loss == "multiclass_hinge" else 1), loss)
    check = nncli("check", "moons.yaml")
    assert check.exit_code == 0, check.output
    [warning] = [line for line in check.stdout.splitlines() if line.startswith("warning:")]
    assert f"moons.yaml:14 model[3].{last}:" in warning and words in warning
    train = nncli("train", "moons.yaml", "--quiet", "--set", "train.epochs=1")
    assert train.exit_code == 0
    assert warning in train.stderr  # said even with --quiet


def test_softmax_before_mse_on_one_hot_targets_is_a_warning(workdir, nncli, make_config):
    moons(make_config, workdir, ("softmax", 2), "mse")
    check = nncli("check", "moons.yaml")
    assert check.exit_code == 0, check.output
    expected = "warning: moons.yaml:14 model[3].softmax: softmax before mse on one-hot class targets"
    assert expected in check.stdout


def test_a_plain_model_gets_no_note(workdir, nncli, make_config):
    moons(make_config, workdir, (None, 1))
    check = nncli("check", "moons.yaml")
    assert check.exit_code == 0
    assert not [line for line in check.stdout.splitlines() if line.startswith(("note", "warning"))]


def test_a_single_sigmoid_output_predicts_both_classes(workdir, nncli, make_config):
    """Two classes under binary_cross_entropy have one output: predict reads the checkpoint
    (it was refused for recording two classes) and gives [1 - p, p]."""
    moons(make_config, workdir)
    run = trained(nncli, workdir / "moons.yaml", "run", "train.epochs=2")
    x = np.array([[0.0, 0.5], [1.0, -0.3], [2.0, 0.4]], dtype=np.float32)
    np.savez(workdir / "x.npz", x=x)
    out = nncli("predict", run, "x.npz", "--top-k", "2", "--json")
    assert out.exit_code == 0, out.output
    rows = json.loads(out.stdout)["predictions"]
    assert [sorted(t["class"] for t in row["top"]) for row in rows] == [["0", "1"]] * 3
    for row in rows:
        assert abs(sum(t["probability"] for t in row["top"]) - 1) < 1e-6

"""`nncli time`: the per-layer table of a training step, its JSON, its options and its errors.

Timings are never asserted beyond being finite and non-negative: how fast a step runs is the
benchmarks' business, not the tests'."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

from nncli.commands import time as timing

QUICKSTART = Path(__file__).resolve().parents[1] / "configs" / "quickstart.yaml"
QUICKSTART_ROWS = [
    "linear(units=256, init=he)",
    "relu",
    "linear(units=128, init=he)",
    "relu",
    "linear(units=10)",
    "loss softmax_cross_entropy",
    "regularizer(weight_decay=0.0001)",  # optimizer.weight_decay: 1.0e-4
    "optimizer sgd",
]


def table_rows(stdout: str) -> list[list[str]]:
    """[index, name, forward, backward, total, share, bar...] per row of the printed table, up to
    and including its total row (columns are separated by at least two spaces; the rows after
    the layers have no index)."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split()[:2] == ["#", "layer"])
    rows = []
    for line in lines[start + 1 :]:
        cells = re.split(r"\s{2,}", line.strip())
        if not cells[0].isdigit():
            cells = ["", *cells]
        rows.append(cells)
        if cells[1] == "total":
            return rows
    raise AssertionError(f"no total row in\n{stdout}")


def share(cell: str) -> float:
    assert cell.endswith("%"), cell
    return float(cell[:-1])


def test_the_table_lists_every_layer_in_order_then_loss_regularizer_and_optimizer(workdir, nncli):
    result = nncli("time", QUICKSTART, "--iters", 3, "--warmup", 1)
    assert result.exit_code == 0, result.output
    rows = table_rows(result.stdout)
    assert [r[1] for r in rows] == [*QUICKSTART_ROWS, "total"]
    assert [r[0] for r in rows[:5]] == ["0", "1", "2", "3", "4"]
    assert all(r[0] == "" for r in rows[5:])
    for row in rows[:-1]:
        for cell in row[2:5]:
            if cell != "-":  # the regularizer and the optimizer have no forward and backward
                assert math.isfinite(float(cell)) and float(cell) >= 0, row
        assert 0 <= share(row[5]) <= 100
    assert [r[2] for r in rows[6:8]] == ["-", "-"]
    assert sum(share(r[5]) for r in rows[:-1]) == pytest.approx(100, abs=0.05 * len(rows))
    assert rows[-1][5] == "100.0%"
    # the slowest layer is marked, once, on a layer row
    marked = [r for r in rows if "<- slowest layer" in r[-1]]
    assert len(marked) == 1 and marked[0][0].isdigit()
    assert result.stdout.splitlines()[0] == (
        f"{QUICKSTART}: quickstart, a batch of 64 mnist_small training samples, float32"
    )
    assert "median milliseconds over 3 timed steps after 1 untimed, in training mode" in result.stdout
    assert result.stderr == ""
    assert list(workdir.iterdir()) == []  # no run directory, nothing written


def test_json_is_one_object_with_the_same_rows(workdir, nncli):
    result = nncli("time", QUICKSTART, "--json", "--iters", 2, "--warmup", 0)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert [row["name"] for row in report["rows"]] == QUICKSTART_ROWS
    assert [row["index"] for row in report["rows"]] == [0, 1, 2, 3, 4, None, None, None]
    assert [row["kind"] for row in report["rows"]] == ["layer"] * 5 + ["loss", "regularizer", "optimizer"]
    for row in report["rows"]:
        for key in ("forward_ms", "backward_ms"):
            if row["kind"] in ("layer", "loss"):
                assert math.isfinite(row[key]) and row[key] >= 0
            else:
                assert row[key] is None
        assert math.isfinite(row["total_ms"]) and row["total_ms"] >= 0
        if row["kind"] in ("layer", "loss"):
            assert row["total_ms"] == pytest.approx(row["forward_ms"] + row["backward_ms"])
    assert sum(row["share"] for row in report["rows"]) == pytest.approx(1.0)
    totals = report["totals"]
    assert totals["total_ms"] == pytest.approx(sum(row["total_ms"] for row in report["rows"]))
    assert math.isfinite(totals["step_ms"]) and totals["step_ms"] >= 0
    assert report["slowest_layer"] in range(5)
    assert (report["batch"], report["iters"], report["warmup"]) == (64, 2, 0)  # train.batch_size
    assert report["config"] == str(QUICKSTART)
    assert (report["name"], report["dataset"]) == ("quickstart", "mnist_small")
    assert report["output_layer"] is None
    assert list(workdir.iterdir()) == []


def test_batch_iters_and_warmup_are_honoured_and_reported(workdir, nncli):
    result = nncli("time", QUICKSTART, "--batch", 7, "--iters", 2, "--warmup", 0)
    assert result.exit_code == 0, result.output
    assert "a batch of 7 mnist_small training samples" in result.stdout
    assert "median milliseconds over 2 timed steps after 0 untimed" in result.stdout
    report = json.loads(nncli("time", QUICKSTART, "--batch", 7, "--iters", 2, "--warmup", 0, "--json").stdout)
    assert (report["batch"], report["iters"], report["warmup"]) == (7, 2, 0)


def test_the_steps_are_the_trainers(workdir, monkeypatch):
    """warmup + iters optimizer steps on the batch asked for, in training mode, with the first
    layer's input gradient skipped as training skips it."""
    built, batches, gradients = [], [], []
    build = timing.build_experiment

    def spy(config, data_dir, progress=True):
        exp = build(config, data_dir, progress)
        first = exp.model.layers[0]
        forward = first.forward

        def recording(x, training):
            batches.append((x.shape, training))
            return forward(x, training)

        first.forward = recording
        backward = first.backward

        def answered(grad):
            gives = backward(grad)
            gradients.append(gives is None)  # None: no input gradient was computed
            return gives

        first.backward = answered
        built.append(exp)
        return exp

    monkeypatch.setattr(timing, "build_experiment", spy)
    result = timing.time_layers(str(QUICKSTART), data_dir=workdir, batch=5, iters=3, warmup=2)
    (exp,) = built
    assert exp.optimizer.steps == 5
    assert batches == [((5, 784), True)] * 5
    assert exp.model.layers[0].needs_input_grad is False
    # timed as it runs in training: every backward of the first layer skips the input gradient,
    # and its time is measured (a layer whose backward went untimed would read 0 or None)
    assert gradients == [True] * 5
    assert isinstance(result.rows[0].backward_ms, float) and result.rows[0].backward_ms > 0


def test_a_predict_only_output_layer_is_not_timed_and_says_so(workdir, nncli):
    last = "  - linear: {units: 10}\n"
    config = QUICKSTART.read_text().replace(last, last + "  - softmax\n")
    (workdir / "softmax.yaml").write_text(config)
    result = nncli("time", "softmax.yaml", "--iters", 1, "--warmup", 0)
    assert result.exit_code == 0, result.output
    assert [r[1] for r in table_rows(result.stdout)] == [*QUICKSTART_ROWS, "total"]  # no softmax row
    assert "not timed: model[5] softmax, applied to predictions only" in result.stdout
    report = json.loads(nncli("time", "softmax.yaml", "--iters", 1, "--warmup", 0, "--json").stdout)
    assert report["output_layer"] == {"index": 5, "name": "softmax"}
    assert len(report["rows"]) == len(QUICKSTART_ROWS)


def test_batchnorm_dropout_and_a_batch_larger_than_the_training_set(workdir, nncli, spiral):
    config = spiral({"model": [{"linear": {"units": 8}}, "batchnorm", "relu", {"dropout": {"p": 0.25}},
                               {"linear": {"units": 3}}]})
    (workdir / "spiral.yaml").write_text(config)
    result = nncli("time", "spiral.yaml", "--batch", 200, "--iters", 2, "--warmup", 1, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert [row["name"] for row in report["rows"]][:5] == [
        "linear(units=8)", "batchnorm", "relu", "dropout(p=0.25)", "linear(units=3)"
    ]
    assert report["batch"] == 200
    assert report["notes"] == ["the training set has 144 samples: the batch of 200 repeats them"]
    table = nncli("time", "spiral.yaml", "--iters", 1, "--warmup", 0).stdout
    assert "a batch of 16 spiral training samples" in table  # train.batch_size
    assert list(workdir.iterdir()) == [workdir / "spiral.yaml"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--iters", "0"], "Invalid value for '--iters': 0 is not in the range x>=1"),
        (["--batch", "0"], "Invalid value for '--batch': 0 is not in the range x>=1"),
        (["--warmup", "-1"], "Invalid value for '--warmup': -1 is not in the range x>=0"),
        (["--set", "optimizer.lrr=1"], 'error: --set optimizer.lrr: unknown option (did you mean "lr"?)'),
        (["--set", "model[0].linear.units=-3"], "model[0].linear.units: expected a positive integer"),
    ],
)
def test_bad_options_are_one_line_errors(workdir, nncli, args, message):
    result = nncli("time", QUICKSTART, *args)
    assert result.exit_code == 2
    assert message in result.stderr
    assert result.stdout == ""
    if args[0] != "--set":  # click's usage errors print the usage line and a hint first
        assert result.stderr.strip().splitlines()[-1].startswith("Error: ")
    else:
        assert len(result.stderr.strip().splitlines()) == 1
    assert list(workdir.iterdir()) == []


def test_a_missing_config_is_one_line(workdir, nncli):
    result = nncli("time", "missing.yaml")
    assert result.exit_code == 2
    assert result.stderr == "error: config file missing.yaml does not exist\n"


def test_images_time_their_augmentation_and_their_way_into_the_layers(workdir, nncli):
    """An image batch is augmented and turned channels-last (model.inside) before the first
    layer, as the trainer does it: two rows before the layers', with forward times only."""
    (workdir / "images.yaml").write_text(
        "data: {dataset: mnist_small, val_size: 0, preprocess: [scale], augment: [hflip]}\n"
        "model: [flatten, {linear: {units: 10}}]\n"
        "loss: softmax_cross_entropy\n"
        "optimizer: {type: sgd, lr: 0.1}\n"
        "train: {batch_size: 32}\n"
    )
    result = nncli("time", "images.yaml", "--iters", 2, "--warmup", 0, "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)["rows"]
    assert [(row["kind"], row["name"], row["index"]) for row in rows] == [
        ("augment", "augment(hflip)", None),
        ("input", "input (32, 1, 28, 28) -> (32, 28, 28, 1)", None),
        ("layer", "flatten", 0),
        ("layer", "linear(units=10)", 1),
        ("loss", "loss softmax_cross_entropy", None),
        ("optimizer", "optimizer sgd", None),
    ]
    for row in rows[:2]:
        assert row["backward_ms"] is None and row["total_ms"] == row["forward_ms"] >= 0
    table = nncli("time", "images.yaml", "--iters", 1, "--warmup", 0).stdout
    assert [r[1] for r in table_rows(table)][:3] == [row["name"] for row in rows[:3]]


def test_the_timed_steps_are_the_trainers_own_and_watching_them_changes_nothing(workdir, monkeypatch):
    """`nncli time` runs nncli.nn.step, as the trainer does, with a clock in its hook: its
    weights after warmup + iters steps are those of as many plain steps on the same batch."""
    built, calls = [], []
    build, real_step = timing.build_experiment, timing.step

    def spy_build(config, data_dir, progress=True):
        built.append(build(config, data_dir, progress))
        return built[-1]

    def spy_step(*args, **options):
        calls.append(options.get("hook") is not None)
        return real_step(*args, **options)

    monkeypatch.setattr(timing, "build_experiment", spy_build)
    monkeypatch.setattr(timing, "step", spy_step)
    timing.time_layers(str(QUICKSTART), data_dir=workdir, batch=6, iters=3, warmup=1)
    assert calls == [True] * 4
    timed = built[0]
    fresh = build(timed.config, workdir)
    x, y = fresh.splits.x_train[:6], fresh.splits.y_train[:6]
    for _ in range(4):
        real_step(fresh.model, fresh.loss, fresh.optimizer, x, y, regularizer=fresh.regularizer)
    for name, value in fresh.model.params.items():
        np.testing.assert_array_equal(timed.model.params[name], value, err_msg=name)

"""`nncli lr-find`: the range test's curve and stop rule, the suggestions read from it (against
log10 of the learning rate, unfooled by early spikes and a final NaN), a problem whose good
range is known from theory, and the command's files and errors."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
from test_pictures import drawn  # noqa: F401  (the fixture: every figure saved, read as a person would)

import nncli
from nncli.training.lrfind import BETA, RangeTest, longest_valley, rates, smooth, suggest


def curve_test(lrs, smoothed, stop="diverged", planned=None) -> RangeTest:
    lrs, smoothed = np.asarray(lrs, float), np.asarray(smoothed, float)
    return RangeTest(lrs, smoothed.copy(), smoothed, planned or len(lrs), stop, lrs[0], lrs[-1])


def read(test: RangeTest):
    """The suggestions read from the test's curve itself (no smoothing of its own)."""
    return suggest(test, test.smoothed)


def descent(lrs, middle=1e-2, depth=1.0, width=0.4):
    """A loss falling by `depth` around `middle` (steepest there, per decade), then rising."""
    t = np.log10(lrs) - math.log10(middle)
    return 2.0 - depth * (1 + np.tanh(t / width)) / 2 + np.where(t > 1, (t - 1) ** 2, 0.0)


def test_the_rates_rise_exponentially_from_start_to_end():
    lr = rates(1e-7, 10.0, 100)
    assert len(lr) == 100
    assert lr[0] == pytest.approx(1e-7) and lr[-1] == pytest.approx(10.0)
    ratios = lr[1:] / lr[:-1]
    assert np.allclose(ratios, ratios[0], rtol=1e-9)  # evenly spaced on a log axis
    with pytest.raises(ValueError):
        rates(1.0, 0.1, 100)


def test_steepest_valley_and_minimum_on_a_known_curve():
    lrs = rates(1e-6, 10.0, 120)
    found = read(curve_test(lrs, descent(lrs, middle=1e-2)))
    # the loss falls fastest per decade at 1e-2, the middle of its descent
    assert abs(math.log10(found.steepest) - (-2)) < 0.25
    # the valley lies within the descent, below the minimum
    assert 1e-4 < found.valley < found.minimum
    assert found.valley_span[0] < found.valley < found.valley_span[1]
    assert found.minimum == pytest.approx(lrs[np.argmin(descent(lrs))], rel=1e-9)


def test_slopes_are_taken_per_decade_not_per_unit_of_learning_rate():
    # linear in log10(lr): falling 0.4 per decade from 1e-4 to 1e-2, then 1.0 per decade to 1
    lrs = rates(1e-5, 10.0, 121)
    t = np.log10(lrs)
    loss = np.where(t < -4, 3.0, np.where(t < -2, 3.0 - 0.4 * (t + 4), 2.2 - (t + 2)))
    loss = np.where(t > 0, 0.2 + 3 * t, loss)
    found = read(curve_test(lrs, loss))
    assert 1e-2 <= found.steepest <= 1.0
    # per unit of learning rate the earlier, gentler stretch would look far steeper (a slope
    # per unit is the slope per decade over lr ln 10: the smallest rates win)
    per_unit = np.diff(loss) / np.diff(lrs)
    assert lrs[np.argmin(per_unit[: np.argmin(loss)])] < 1e-3


def batch_test(lrs, losses, stop="diverged") -> RangeTest:
    """A test of these batch losses, smoothed as `range_test` smooths them."""
    losses = np.asarray(losses, float)
    return RangeTest(lrs, losses, smooth(losses), len(lrs), stop, lrs[0], lrs[-1])


@pytest.mark.parametrize("seed", range(4))
def test_an_early_spike_does_not_move_the_suggestions(seed):
    lrs = rates(1e-6, 10.0, 100)
    noisy = descent(lrs, middle=1e-2) + np.random.default_rng(seed).normal(0, 0.05, len(lrs))
    spiked = noisy.copy()
    spiked[3] += 10.0  # one bad batch while the average has seen three
    a, b = suggest(batch_test(lrs, noisy)), suggest(batch_test(lrs, spiked))
    for name in ("valley", "steepest", "minimum"):
        assert abs(math.log10(getattr(a, name)) - math.log10(getattr(b, name))) < 0.25, name
    # the average of the batch losses as they came would have read the fall from the spike
    # as the steepest descent, near the start of the window
    unread = read(curve_test(lrs, smooth(spiked)))
    assert unread.steepest < 1e-4 < b.steepest


def test_a_final_nan_is_never_read():
    lrs = rates(1e-6, 10.0, 100)
    loss = descent(lrs)
    n = 90
    test = RangeTest(lrs[:n], np.r_[loss[: n - 1], np.nan], np.r_[loss[: n - 1], np.nan], 100, "nonfinite",
                     1e-6, 10.0)
    found = suggest(test)
    assert found.window[1] <= n - 1
    assert all(math.isfinite(v) for v in (found.valley, found.steepest, found.minimum, found.minimum_loss))


def test_a_test_that_diverged_at_once_suggests_nothing_and_says_why():
    lrs = rates(1e-6, 10.0, 100)[:12]
    found = read(curve_test(lrs, np.linspace(2, 9, 12), planned=100))
    assert found.valley is None and found.steepest is None and found.minimum is None
    assert "too soon to suggest a rate" in found.notes[0]


def test_the_longest_valley_is_fastais_stretch_ending_where_the_descent_ends():
    values = np.array([5, 4.9, 5.1, 4.8, 4.85, 4.7, 3.0, 2.0, 1.0, 0.5, 2.0, 3.0])
    first, last = longest_valley(values)
    assert last == 9  # 5, 4.9, 4.8, 4.7, 3, 2, 1, 0.5: eight points, ending at 0.5
    assert first == last - 7


LINEAR = {
    "name": "linreg",
    "seed": 0,
    "data": {"dataset": "arrays"},
    "model": [{"linear": {"units": 1}}],
    "loss": "mse",
    "optimizer": {"type": "sgd", "lr": 0.1},
    "train": {"epochs": 1, "batch_size": 32},
}


def linear_data(n=2000, d=8, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    y = x @ rng.normal(size=d).astype(np.float32) + 0.1 * rng.normal(size=n).astype(np.float32)
    return {"x_train": x, "y_train": y[:, None].astype(np.float32)}


def test_linear_regression_gets_rates_in_its_known_range(workdir):
    # mean squared error on unit-variance inputs: the Hessian is about 2 I, so SGD diverges
    # above lr = 2 / 2 = 1 and takes its largest safe steps near 0.5
    found = nncli.lr_find(LINEAR, data=linear_data(), write=False)
    test, s = found.test, found.suggestions
    assert test.stop == "diverged" and test.steps < 100
    assert test.lrs[-1] > 1.0  # it stopped past the bound, not before
    assert 0.05 <= s.steepest <= 1.0  # the known decade
    assert 0.005 <= s.valley <= 1.0
    assert s.minimum < 2.0
    assert list(workdir.iterdir()) == []  # write=False: nothing written


def test_the_curve_is_the_bias_corrected_average_and_stops_past_four_times_its_best(workdir):
    test = nncli.lr_find(LINEAR, data=linear_data(), write=False).test
    average, expected = 0.0, []
    for i, value in enumerate(test.losses):
        average = BETA * average + (1 - BETA) * value
        expected.append(average / (1 - BETA ** (i + 1)))
    assert np.allclose(test.smoothed, expected, rtol=1e-9)
    best = np.minimum.accumulate(test.smoothed)
    assert (test.smoothed[:-1] <= 4 * best[:-1]).all()
    assert test.smoothed[-1] > 4 * best[-1]


def test_a_loss_that_is_not_finite_at_the_first_step_is_one_sentence(workdir):
    data = linear_data()
    data["x_train"] = np.full_like(data["x_train"], 3e37)
    with pytest.raises(nncli.NncliError, match="at the first step, at a learning rate of 1e-07"):
        nncli.lr_find(LINEAR, data=data, write=False)


def test_the_command_writes_its_folder_and_leaves_runs_alone(workdir, nncli, spiral):
    (workdir / "spiral.yaml").write_text(spiral())
    result = nncli("lr-find", "spiral.yaml", "--steps", "60", "--set", "name=probe")
    assert result.exit_code == 0, result.output
    assert "valley" in result.stdout and "steepest" in result.stdout and "minimum" in result.stdout
    [folder] = (workdir / "runs" / "probe").iterdir()
    assert folder.name.startswith("lr-find-")
    assert sorted(p.name for p in folder.iterdir()) == ["config.yaml", "lr_find.csv", "lr_find.json",
                                                        "lr_find.png"]
    rows = list(csv.DictReader((folder / "lr_find.csv").open()))
    summary = json.loads((folder / "lr_find.json").read_text())
    assert len(rows) == summary["steps_taken"] and summary["steps"] == 60
    assert float(rows[0]["lr"]) == pytest.approx(1e-7)
    assert 10_000 < (folder / "lr_find.png").stat().st_size < 500_000
    assert f"wrote runs/probe/{folder.name}/" in result.stdout
    # not a run: `nncli runs` does not list it
    listed = nncli("runs", "--json")
    assert listed.exit_code == 0 and json.loads(listed.stdout) == []


def test_out_must_be_new_empty_or_an_earlier_lr_find(workdir, nncli, spiral):
    (workdir / "spiral.yaml").write_text(spiral())
    (workdir / "busy").mkdir()
    (workdir / "busy" / "metrics.csv").write_text("epoch\n")
    refused = nncli("lr-find", "spiral.yaml", "--steps", "20", "--out", "busy")
    assert refused.exit_code == 1
    assert refused.stderr.strip() == (
        "error: --out busy holds other files (metrics.csv); lr-find writes to a new or empty folder,"
        " or over an earlier lr-find's"
    )
    for _ in range(2):  # the second time over the first one's files
        again = nncli("lr-find", "spiral.yaml", "--steps", "20", "--out", "probe")
        assert again.exit_code == 0, again.output
    assert not (workdir / "runs").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--start", "1", "--end", "0.1"], "error: --start (1) must be below --end (0.1): the rate rises"),
        (["--steps", "3"], "error: --steps must be from 10 to 100,000, got 3"),
        (["--end", "inf"], "error: --start and --end must be positive learning rates, got 1e-07 and inf"),
    ],
)
def test_a_range_that_cannot_be_tested_is_one_sentence(workdir, nncli, spiral, args, message):
    (workdir / "spiral.yaml").write_text(spiral())
    result = nncli("lr-find", "spiral.yaml", *args)
    assert result.exit_code == 1
    assert result.stderr.strip() == message
    assert not (workdir / "runs").exists()


def test_a_folder_that_cannot_be_written_whole_is_not_left_behind(workdir, nncli, spiral, monkeypatch):
    from nncli.commands import lr_find
    from nncli.errors import WriteError

    def full_disk(*args, **kwargs):
        raise WriteError("cannot write lr_find.png: No space left on device")

    monkeypatch.setattr(lr_find, "plot_lr_find", full_disk)
    (workdir / "spiral.yaml").write_text(spiral())
    result = nncli("lr-find", "spiral.yaml", "--steps", "20")
    assert result.exit_code == 1
    assert result.stderr.strip() == "error: cannot write lr_find.png: No space left on device"
    assert list((workdir / "runs" / "spiral").iterdir()) == []  # the files and their folder are gone


def test_the_plot_reads_at_a_glance(workdir, nncli, spiral, drawn):  # noqa: F811
    (workdir / "spiral.yaml").write_text(spiral())
    assert nncli("lr-find", "spiral.yaml", "--out", "probe").exit_code == 0
    assert drawn["lr_find.png"] == []  # no tick labels overlap, no legend entry repeats
    [ax] = drawn.figures["lr_find.png"].axes
    assert ax.get_xscale() == "log"
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels[:2] == ["batch loss", "smoothed loss"]
    assert [label.split()[0] for label in labels[2:5]] == ["valley", "steepest", "minimum"]

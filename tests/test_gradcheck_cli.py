"""`nncli gradcheck` end to end: a correct model passes, a gradient made wrong on purpose fails
and is named, checkpoints and options behave."""

from __future__ import annotations

import re

import pytest
from conftest import config_text

from nncli.nn.layers.normalization import BatchNorm

# the spiral config with batch norm, dropout, label smoothing and both penalties: every kind of
# tensor gradcheck checks
CONFIG = {
    "name": "spiral_bn",
    "seed": 2,
    "data": {"dataset": "spiral", "classes": 3, "points_per_class": 40, "val_size": 0.1},
    "model": [{"linear": {"units": 16, "init": "he"}}, "batchnorm", "tanh", {"dropout": {"p": 0.3}},
              {"linear": {"units": 3}}],
    "loss": {"type": "softmax_cross_entropy", "label_smoothing": 0.1},
    "optimizer": {"type": "sgd", "lr": 0.1, "weight_decay": 1.0e-3, "l1": 1.0e-4},
    "train": {"epochs": 2, "batch_size": 16},
}

TENSORS = [
    "layers.0.W",
    "layers.0.b",
    "layers.1.gamma",
    "layers.1.beta",
    "layers.4.W",
    "layers.4.b",
    "regularization[layers.0.W]",
    "regularization[layers.4.W]",
    "input",
]


@pytest.fixture
def config(workdir, make_config):
    return make_config(workdir / "spiral_bn.yaml", **CONFIG)


@pytest.fixture
def gradcheck(nncli):
    return lambda *args: nncli("gradcheck", *args)


HEADER = ["tensor", "shape", "sampled", "compared", "at kinks", "max rel error", "noise floor"]
# the columns of a row from `table`
SHAPE, SAMPLED, COMPARED, KINKS, ERROR, FLOOR, VERDICT = range(7)


def table(stdout: str) -> dict[str, list[str]]:
    """tensor -> [shape, sampled, compared, at kinks, max rel error, noise floor, verdict] from
    the printed table."""
    lines = stdout.splitlines()
    assert re.split(r"\s{2,}", lines[0].strip()) == HEADER
    rows = {}
    for line in lines[1:]:
        match = re.match(
            r"^(\S+)\s+(\(.*?\))\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)\s+(ok|FAIL|UNCHECKED)$", line
        )
        if match:
            rows[match[1]] = list(match.groups()[1:])
    return rows


def passes(row: list[str], tol: float = 1e-6) -> bool:
    """The rule a row's verdict follows: its error is below tol, or within its noise floor."""
    error, floor = float(row[ERROR]), float(row[FLOOR])
    return error < tol or error <= floor


def totals(stdout: str) -> tuple[int, int]:
    """The entries compared and excused at kinks, as the verdict line counts them."""
    match = re.search(r"; ([\d,]+) entr(?:y|ies) compared, ([\d,]+) excused at kinks \(", stdout)
    assert match, stdout
    return int(match[1].replace(",", "")), int(match[2].replace(",", ""))


def test_a_correct_model_passes(config, gradcheck):
    result = gradcheck(config)
    assert result.exit_code == 0, result.output
    rows = table(result.stdout)
    assert list(rows) == TENSORS
    assert rows["layers.0.W"][:2] == ["(2, 16)", "20"]
    assert rows["layers.4.b"][:2] == ["(3,)", "3"]  # fewer entries than asked: all of them
    assert rows["input"][:2] == ["(8, 2)", "16"]  # --batch 8 by default
    assert all(r[VERDICT] == "ok" and passes(r) for r in rows.values())
    # a smooth network (tanh): every entry sampled is compared
    assert all(r[COMPARED] == r[SAMPLED] and r[KINKS] == "0" for r in rows.values())
    assert totals(result.stdout) == (sum(int(r[COMPARED]) for r in rows.values()), 0)
    # every gradient but the bias feeding batch norm (zero up to rounding) is well resolved
    assert all(float(r[ERROR]) < 1e-6 for name, r in rows.items() if name != "layers.0.b")
    assert float(rows["layers.0.b"][FLOOR]) > 1  # its noise floor: nothing to resolve
    # it passes by that floor, and the verdict says so, where its error reaches the tolerance
    floored = float(rows["layers.0.b"][ERROR]) >= 1e-6
    floor = " or, 1 of them (layers.0.b), within its noise floor" if floored else ""
    verdict = f"all 9 tensors below tolerance 1e-06{floor}; 147 entries compared, 0 excused at kinks ("
    assert verdict in result.stdout


def test_samples_all_and_batch(config, gradcheck):
    result = gradcheck(config, "--samples", "all", "--batch", "5", "--seed", "3")
    assert result.exit_code == 0, result.output
    rows = table(result.stdout)
    assert rows["layers.0.W"][:2] == ["(2, 16)", "32"]
    assert rows["input"][:2] == ["(5, 2)", "10"]
    assert table(gradcheck(config, "--samples", "0", "--batch", "5", "--seed", "3").stdout) == rows


def test_a_wrong_gradient_exits_1_and_names_the_tensor(config, monkeypatch, gradcheck):
    original = BatchNorm.backward

    def broken(self, dout):
        dx = original(self, dout)
        self.grads["gamma"] *= 1.01  # the input gradient stays right: only gamma is wrong
        return dx

    monkeypatch.setattr(BatchNorm, "backward", broken)
    result = gradcheck(config)
    assert result.exit_code == 1, result.output
    rows = table(result.stdout)
    assert rows["layers.1.gamma"][VERDICT] == "FAIL" and float(rows["layers.1.gamma"][ERROR]) > 1e-3
    assert float(rows["layers.1.gamma"][FLOOR]) < 1e-6
    assert [name for name, row in rows.items() if row[VERDICT] == "FAIL"] == ["layers.1.gamma"]
    assert all(passes(row) == (row[VERDICT] == "ok") for row in rows.values())
    assert "1 of 9 tensors at or above tolerance 1e-06" in result.stdout
    assert result.stderr.startswith("error: gradient check failed for layers.1.gamma (relative error")
    assert "Traceback" not in result.output


def test_a_looser_tolerance_lets_it_pass(config, monkeypatch, gradcheck):
    original = BatchNorm.backward

    def slightly_off(self, dout):
        dx = original(self, dout)
        self.grads["gamma"] *= 1 + 1e-4
        return dx

    monkeypatch.setattr(BatchNorm, "backward", slightly_off)
    assert gradcheck(config).exit_code == 1
    assert gradcheck(config, "--tol", "1e-3").exit_code == 0


def test_the_reported_error_does_not_depend_on_the_tolerance(config, monkeypatch, gradcheck):
    # with a floor of noise / tol under the relative error, this 1% error in gamma printed
    # 4.98e-03 at --tol 1e-6 and 2.25e-05 at 1e-12
    original = BatchNorm.backward

    def broken(self, dout):
        dx = original(self, dout)
        self.grads["gamma"] *= 1.01
        return dx

    monkeypatch.setattr(BatchNorm, "backward", broken)
    tables = {}
    for tol in ("1e-6", "1e-9", "1e-12"):
        result = gradcheck(config, "--tol", tol)
        assert result.exit_code == 1, result.output
        tables[tol] = {name: row[:VERDICT] for name, row in table(result.stdout).items()}
    assert tables["1e-6"] == tables["1e-9"] == tables["1e-12"]
    assert float(tables["1e-6"]["layers.1.gamma"][ERROR]) == pytest.approx(0.01 / 2.01, rel=1e-3)


@pytest.mark.parametrize("within", [False, True], ids=["between-tensors", "within-a-tensor"])
def test_ctrl_c_prints_the_tensors_finished_so_far(config, monkeypatch, gradcheck, within):
    from nncli.nn import gradcheck as engine

    original, calls = engine.check_array, []

    def interrupted_in_the_second_tensor(*args, **kwargs):
        calls.append(args[3])
        if len(calls) == 2:
            if not within:
                raise KeyboardInterrupt

            def ctrl_c_after_five_entries(name, done, total):
                if done == 5:
                    raise KeyboardInterrupt

            kwargs["progress"] = ctrl_c_after_five_entries
        return original(*args, **kwargs)

    monkeypatch.setattr(engine, "check_array", interrupted_in_the_second_tensor)
    result = gradcheck(config)
    assert result.exit_code == 130, result.output
    rows = table(result.stdout)
    last = result.stdout.strip().splitlines()[-1]
    if within:
        assert list(rows) == ["layers.0.W", "layers.0.b"]
        assert rows["layers.0.b"][SAMPLED] == "5/16" and passes(rows["layers.0.b"])
        expected = "interrupted after 1 of 9 tensors and 5 of the 16 entries of layers.0.b: all below"
        compared = 25
    else:
        assert list(rows) == ["layers.0.W"]
        expected = "interrupted after 1 of 9 tensors: all below"
        compared = 20
    assert rows["layers.0.W"][SAMPLED] == "20" and rows["layers.0.W"][VERDICT] == "ok"
    # the bias feeding batch norm may pass by its noise floor (its gradient is zero up to rounding)
    floored = within and float(rows["layers.0.b"][ERROR]) >= 1e-6
    floor = " or, 1 of them (layers.0.b), within its noise floor" if floored else ""
    assert last.startswith(f"{expected} tolerance 1e-06{floor}; {compared} entries compared, 0 excused at")
    assert result.stderr.strip() == "interrupted"
    assert "Traceback" not in result.output


def test_a_progress_bar_on_a_terminal(config, monkeypatch, gradcheck):
    from nncli.cli import base
    from nncli.commands import gradcheck as command

    monkeypatch.setattr(base, "stderr_is_terminal", lambda: True)
    monkeypatch.setattr(command._ProgressBar, "DELAY", 0)  # show it at once, however fast
    result = gradcheck(config, "--samples", "all")
    assert result.exit_code == 0, result.output
    assert "layers.0.W (1/9)" in result.stderr and "input (9/9)" in result.stderr
    assert "/32 [" in result.stderr  # layers.0.W: every entry
    assert list(table(result.stdout)) == TENSORS  # the table is untouched
    monkeypatch.setattr(base, "stderr_is_terminal", lambda: False)
    quiet = gradcheck(config, "--samples", "all")  # not a terminal: no bar
    assert quiet.stderr == "" and quiet.stdout == result.stdout


def test_weights_of_a_checkpoint(config, tmp_path, gradcheck, nncli):
    trained = nncli("train", config, "--run-dir", "run", "--quiet")
    assert trained.exit_code == 0, trained.output
    with_config = gradcheck(config, "--checkpoint", "run")
    assert with_config.exit_code == 0, with_config.output
    assert "with the weights of run/checkpoints/best.pkl" in with_config.stdout
    alone = gradcheck("--checkpoint", "run/checkpoints/last.pkl")
    assert alone.exit_code == 0, alone.output
    assert list(table(alone.stdout)) == TENSORS

    other = tmp_path / "wider.yaml"
    other.write_text(config_text(**{**CONFIG, "model": [{"linear": {"units": 24}}, *CONFIG["model"][1:]]}))
    mismatch = gradcheck(other, "--checkpoint", "run")
    assert mismatch.exit_code == 1
    assert "does not fit" in mismatch.stderr and "the model expects (2, 24)" in mismatch.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "give a CONFIG to check, or --checkpoint CKPT"),
        (("spiral_bn.yaml", "--samples", "many"), "--samples expects a number of entries or 'all'"),
        (("missing.yaml",), "config file missing.yaml does not exist"),
        (("--checkpoint", "nowhere.pkl"), "checkpoint nowhere.pkl does not exist"),
    ],
)
def test_usage_mistakes_are_one_line(config, args, message, gradcheck):
    result = gradcheck(*args)
    assert result.exit_code != 0
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: ") and message in line
    assert "Traceback" not in result.output


@pytest.mark.parametrize("name", ["mnist_mlp", "mnist_mlp_bn_dropout", "mnist_cnn"])
def test_the_mnist_configs_pass_with_entries_of_every_tensor_compared(real_data_dir, name, gradcheck):
    from pathlib import Path

    config = Path(__file__).resolve().parents[1] / "configs" / f"{name}.yaml"
    result = gradcheck(config, "--data-dir", real_data_dir)
    assert result.exit_code == 0, result.output
    rows = table(result.stdout)
    # mnist_cnn's conv biases used to have every entry excused at kinks (zero biases over blank
    # pixels), and the input 18 of its 20
    assert all(int(row[COMPARED]) > 0 and row[VERDICT] == "ok" for row in rows.values()), result.stdout
    assert int(rows["input"][COMPARED]) >= 15


# 16x16 one-channel images blank but for a 4x4 square of noise in the middle, as MNIST's digits
# are framed by blank pixels; a small CNN over them
BLANK_BORDERS = """\
name: blank_borders
seed: 1
data: {dataset: npz, path: blank_borders.npz, val_size: 8}
model:
  - conv2d: {filters: 3, kernel: 3, padding: 1}
  - relu
  - maxpool2d: {size: 2}
  - conv2d: {filters: 4, kernel: 3, padding: 1}
  - relu
  - maxpool2d: {size: 2}
  - flatten
  - linear: {units: 3}
loss: softmax_cross_entropy
optimizer: {type: sgd, lr: 0.1}
train: {epochs: 1, batch_size: 8}
"""


@pytest.fixture
def blank_borders(workdir):
    import numpy as np

    rng = np.random.default_rng(0)
    x = np.zeros((40, 1, 16, 16), dtype=np.float32)
    x[:, :, 6:10, 6:10] = rng.random((40, 1, 4, 4))
    np.savez(workdir / "blank_borders.npz", x_train=x, y_train=np.arange(40) % 3)
    path = workdir / "blank_borders.yaml"
    path.write_text(BLANK_BORDERS)
    return path


def test_conv_biases_and_inputs_over_blank_pixels_are_compared(blank_borders, gradcheck):
    # with its zero biases, every entry of both conv biases sat at a kink and was excused, and
    # the table said "ok"; so did 18 of the input's 20, blank pixels under the pools' ties
    result = gradcheck(blank_borders)
    assert result.exit_code == 0, result.output
    rows = table(result.stdout)
    for name, entries in [("layers.0.b", 3), ("layers.3.b", 4)]:
        assert rows[name][SAMPLED] == rows[name][COMPARED] == str(entries), result.stdout
        assert rows[name][KINKS] == "0" and rows[name][VERDICT] == "ok" and passes(rows[name])
    assert rows["input"][SAMPLED] == "20" and int(rows["input"][COMPARED]) >= 18
    assert all(row[VERDICT] == "ok" for row in rows.values())
    compared = sum(int(r[COMPARED]) for r in rows.values())
    assert totals(result.stdout) == (compared, sum(int(r[KINKS]) for r in rows.values()))
    assert "yaml at initialization, 3 zero tensors made small and random: 8 training" in result.stdout
    assert result.stderr == ""


def _zero_biases_stay(monkeypatch):
    """Check at the biases as initialized, zeros, as gradcheck used to."""
    from nncli.commands import gradcheck as command

    monkeypatch.setattr(command, "randomize_zero_params", lambda model, rng: [])


def test_a_tensor_with_no_entry_compared_exits_4_and_is_named(blank_borders, monkeypatch, gradcheck):
    _zero_biases_stay(monkeypatch)
    result = gradcheck(blank_borders)
    assert result.exit_code == 4, result.output
    rows = table(result.stdout)
    unchecked = [name for name, row in rows.items() if row[VERDICT] == "UNCHECKED"]
    assert "layers.0.b" in unchecked and "ok" not in [rows[name][VERDICT] for name in unchecked]
    for name in unchecked:
        assert rows[name][COMPARED] == "0" and rows[name][KINKS] == rows[name][SAMPLED]
        assert rows[name][ERROR] == rows[name][FLOOR] == "-"
    last = result.stdout.strip().splitlines()[-1]
    assert last.startswith(f"{len(rows) - len(unchecked)} of {len(rows)} tensors below tolerance 1e-06, ")
    assert f", {len(unchecked)} with no entry compared; " in last
    [line] = result.stderr.strip().splitlines()
    named = ", ".join(f"{name} ({rows[name][KINKS]} of {rows[name][SAMPLED]} at kinks)" for name in unchecked)
    assert line.startswith(f"error: no entry of {named} could be compared: ")
    assert line.endswith("(try --samples all or another --seed, or pass --allow-unchecked)")

    allowed = gradcheck(blank_borders, "--allow-unchecked")
    assert allowed.exit_code == 0, allowed.output
    assert allowed.stdout == result.stdout
    [line] = allowed.stderr.strip().splitlines()
    assert line.startswith(f"warning: no entry of {named} could be compared: ")
    assert "--allow-unchecked" not in line


def test_a_wrong_gradient_exits_1_even_with_a_tensor_unchecked(blank_borders, monkeypatch, gradcheck):
    from nncli.nn.layers.core import Linear

    _zero_biases_stay(monkeypatch)
    original = Linear.backward

    def broken(self, dout):
        dx = original(self, dout)
        self.grads["W"] *= 1.01
        return dx

    monkeypatch.setattr(Linear, "backward", broken)
    result = gradcheck(blank_borders)
    assert result.exit_code == 1, result.output
    assert table(result.stdout)["layers.7.W"][VERDICT] == "FAIL"
    warning, error = result.stderr.strip().splitlines()
    assert warning.startswith("warning: no entry of layers.0.b (")
    assert error.startswith("error: gradient check failed for layers.7.W (relative error")


def test_the_weights_of_a_checkpoint_are_checked_as_they_are(blank_borders, gradcheck, nncli):
    import numpy as np

    from nncli.training import checkpoint

    assert nncli("train", blank_borders, "--run-dir", "run", "--quiet").exit_code == 0
    result = gradcheck(blank_borders, "--checkpoint", "run")
    assert "at initialization" not in result.stdout and "made small and random" not in result.stdout
    assert "with the weights of run/checkpoints/best.pkl" in result.stdout
    # not randomized: the trained biases are what was checked
    saved = checkpoint.load("run/checkpoints/best.pkl")["model"]["params"]["layers.0.b"]
    assert np.all(saved != 0)


def test_a_tensor_whose_every_entry_sits_at_a_kink_shows_no_error_and_is_not_ok():
    # ReLU inputs exactly at 0 everywhere: each entry is excused, and the row says so with
    # dashes rather than an error of 0 under an infinite noise floor
    import numpy as np

    from nncli.commands.gradcheck import GradcheckResult, format_gradcheck
    from nncli.nn.gradcheck import check_model
    from nncli.nn.layers import LAYERS
    from nncli.nn.losses import LOSSES
    from nncli.nn.model import Sequential

    model = Sequential([LAYERS.create("relu")])
    model.build((3,), np.random.default_rng(0), np.float64)
    checks = check_model(model, LOSSES.create("mse"), np.zeros((2, 3)), np.ones((2, 3)))
    result = GradcheckResult(checks, 1e-6, 2, "zeros", planned=1)
    assert result.unchecked == checks and result.failed == []
    lines = format_gradcheck(result).splitlines()
    [row] = [line for line in lines if line.startswith("input")]
    assert row.split() == ["input", "(2,", "3)", "6", "0", "6", "-", "-", "UNCHECKED"]
    assert lines[-1] == (
        "0 of 1 tensors below tolerance 1e-06, 1 with no entry compared;"
        " 0 entries compared, 6 excused at kinks (zeros, float64)"
    )




def test_a_tensor_that_passes_by_its_noise_floor_is_not_said_to_be_below_the_tolerance():
    from nncli.commands.gradcheck import GradcheckResult, format_gradcheck
    from nncli.nn.gradcheck import TensorCheck

    checks = [TensorCheck("layers.0.W", (784, 256), 20, 2.19e-6, 7.74e-5, 0),
              TensorCheck("layers.0.b", (256,), 20, 6.17e-10, 1.28e-8, 0)]
    lines = format_gradcheck(GradcheckResult(checks, 1e-6, 8, "x")).splitlines()
    assert lines[1].split()[-1] == "ok" and lines[2].split()[-1] == "ok"
    assert lines[-1] == ("all 2 tensors below tolerance 1e-06 or, 1 of them (layers.0.W), within its noise"
                         " floor; 40 entries compared, 0 excused at kinks (x, float64)")
    # every one below the tolerance: said so alone
    lines = format_gradcheck(GradcheckResult(checks[1:], 1e-6, 8, "x")).splitlines()
    assert lines[-1].startswith("all 1 tensors below tolerance 1e-06; ")

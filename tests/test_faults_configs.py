"""Hostile and huge configs and sweep files: each is one config error with its file and line,
found before anything large is made (issue 19: alias bombs, deep nesting, a million-unit layer,
seeds and bounds past 64 bits, sweeps whose trials would share a run, trial counts past the
limit)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import nncli.config.sweep as sweep_module
from nncli.errors import ConfigError
from nncli.nn.layers import LAYERS
from nncli.nn.model import MAX_PARAMS, Sequential

MIB = 1 << 20
# Children run with their address space held to this, so that the code these tests guard
# against fails fast (a MemoryError) instead of taking the machine's memory.
ADDRESS_LIMIT = 4 << 30


def run_limited(workdir: Path, *args: str) -> tuple[int, str, int]:
    """`python -m nncli ARGS` in a child of a fresh interpreter: its exit code, its stderr and
    its peak resident memory in bytes (RUSAGE_CHILDREN of that interpreter sees it alone)."""
    probe = textwrap.dedent(f"""
        import resource, subprocess, sys
        def limit():
            resource.setrlimit(resource.RLIMIT_AS, ({ADDRESS_LIMIT}, {ADDRESS_LIMIT}))
        done = subprocess.run([sys.executable, "-m", "nncli", *sys.argv[1:]], preexec_fn=limit,
                              capture_output=True, text=True, timeout=300)
        sys.stderr.write(done.stderr)
        print(done.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    """)
    done = subprocess.run([sys.executable, "-c", probe, *args], cwd=workdir, capture_output=True,
                          text=True, timeout=400)
    code, maxrss = done.stdout.split()
    return int(code), done.stderr, int(maxrss) * (1 if sys.platform == "darwin" else 1024)


def one_error_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert "Traceback" not in stderr, stderr[-2000:]
    assert len(lines) == 1, stderr[-2000:]
    assert lines[0].startswith("error: ")
    return lines[0]


def billion_laughs(levels: int = 9) -> str:
    text = 'l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]\n'
    for i in range(1, levels + 1):
        text += f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]\n"
    return text


# --- the YAML reader -------------------------------------------------------------------------


def test_an_alias_bomb_is_refused_cheaply_naming_the_file_and_line(workdir, spiral):
    (workdir / "bomb.yaml").write_text(spiral().replace("name: spiral\n", billion_laughs()))
    code, stderr, maxrss = run_limited(workdir, "check", "bomb.yaml")
    assert code == 2
    line = one_error_line(stderr)
    assert line.startswith("error: bomb.yaml:")
    assert "aliases expand this file past" in line
    assert maxrss < 600 * MIB


def test_an_alias_bomb_in_a_sweep_file_and_in_set(workdir, nncli, spiral):
    (workdir / "base.yaml").write_text(spiral())
    text = "base: base.yaml\ngrid:\n  optimizer.lr: [0.1]\n" + billion_laughs(5)
    (workdir / "s.yaml").write_text(text)
    result = nncli("sweep", "s.yaml", "--dry-run")
    assert result.exit_code == 2
    assert one_error_line(result.stderr).startswith("error: s.yaml:")
    assert "aliases expand this file past" in result.stderr
    lists = (f"&a{i} [{', '.join([f'*a{i - 1}'] * 9) if i else '1, 1'}]" for i in range(7))
    bomb = f"[{', '.join(lists)}]"
    result = nncli("check", "base.yaml", "--set", f"data.extra={bomb}")
    assert result.exit_code == 2
    assert "--set data.extra:" in one_error_line(result.stderr)
    assert "aliases expand" in result.stderr


def test_merge_keys_that_merge_each_other_twice_do_not_double_at_each_level(workdir, nncli, spiral):
    chain = "l0: &l0 {a: 1}\n" + "".join(f"l{i}: &l{i} {{<<: [*l{i - 1}, *l{i - 1}], k{i}: 1}}\n"
                                         for i in range(1, 40))
    (workdir / "base.yaml").write_text(spiral())
    text = "base: base.yaml\ngrid:\n  optimizer.lr: [0.1]\nx:\n" + textwrap.indent(chain, "  ")
    (workdir / "s.yaml").write_text(text)
    result = nncli("sweep", "s.yaml", "--dry-run")  # read in full, then refused for its key x
    assert result.exit_code == 2
    assert one_error_line(result.stderr).startswith("error: s.yaml:5 x: unknown key")


@pytest.mark.parametrize("where", ["file", "set"])
def test_nesting_past_the_limit_is_one_error_with_its_line(workdir, nncli, spiral, where):
    deep = "[" * 600 + "]" * 600
    if where == "file":
        (workdir / "deep.yaml").write_text(spiral() + f"extra: {deep}\n")
        result = nncli("check", "deep.yaml")
        expected = "error: deep.yaml:13 nested more than 64 levels deep"
    else:
        (workdir / "deep.yaml").write_text(spiral())
        result = nncli("check", "deep.yaml", "--set", f"data.extra={deep}")
        expected = "error: --set data.extra: nested more than 64 levels deep"
    assert result.exit_code == 2
    assert one_error_line(result.stderr) == expected


def test_nesting_built_from_aliases_is_bounded_too(workdir, nncli, spiral):
    chain = "a0: &a0 [[[[[[[[[[1]]]]]]]]]]\n" + "".join(
        f"a{i}: &a{i} [[[[[[[[[[*a{i - 1}]]]]]]]]]]\n" for i in range(1, 10))
    (workdir / "deep.yaml").write_text(spiral() + "extra:\n" + textwrap.indent(chain, "  "))
    result = nncli("check", "deep.yaml")
    assert result.exit_code == 2
    line = one_error_line(result.stderr)
    assert line.startswith("error: deep.yaml:") and "nested more than 64 levels deep" in line


def test_a_5000_digit_seed_is_one_error_with_its_line(workdir, nncli, spiral):
    (workdir / "s.yaml").write_text(spiral().replace("seed: 3", "seed: " + "7" * 5000))
    result = nncli("check", "s.yaml")
    assert result.exit_code == 2
    assert one_error_line(result.stderr) == (
        "error: s.yaml:2 seed: cannot read 777777777777...: a number of 5,000 digits is too long to be one")


def test_a_seed_past_64_bits_is_refused(workdir, nncli, spiral):
    (workdir / "s.yaml").write_text(spiral().replace("seed: 3", "seed: " + "7" * 1000))
    result = nncli("check", "s.yaml")
    assert result.exit_code == 2
    assert one_error_line(result.stderr) == (
        "error: s.yaml:2 seed: expected a non-negative integer up to 2^63 - 1, got a number of 1,000"
        " digits")
    (workdir / "s.yaml").write_text(spiral().replace("seed: 3", f"seed: {2**63 - 1}"))
    assert nncli("check", "s.yaml").exit_code == 0


# --- the model's size --------------------------------------------------------------------------


def test_a_million_unit_layer_is_refused_before_anything_is_allocated(workdir):
    (workdir / "big.yaml").write_text(textwrap.dedent("""\
        name: big
        data: {dataset: mnist_small, val_size: 500, preprocess: [scale, flatten]}
        model:
          - linear: {units: 1000000}
          - relu
          - linear: {units: 10}
        loss: softmax_cross_entropy
        optimizer: {type: sgd, lr: 0.1}
        """))
    code, stderr, maxrss = run_limited(workdir, "check", "big.yaml")
    assert code == 2
    assert one_error_line(stderr) == (
        "error: big.yaml:4 model[0].linear: this layer would hold 785,000,000 parameters: more than a"
        " model may have, 268,435,456 (2^28)")
    assert maxrss < 600 * MIB


def test_layers_past_the_limit_together_name_the_layer_that_crosses_it(workdir, nncli, spiral):
    last = "  - linear: {units: 3}\n"
    (workdir / "big.yaml").write_text(spiral().replace(last, "  - linear: {units: 20000}\n" * 2 + last))
    result = nncli("check", "big.yaml")
    assert result.exit_code == 2
    assert one_error_line(result.stderr) == (
        "error: big.yaml:9 model[4].linear: this layer would hold 400,020,000 parameters, 400,680,096 with"
        " the layers before it: more than a model may have, 268,435,456 (2^28)")


@pytest.mark.parametrize("layers, shape", [
    ([("linear", {"units": 7}), ("relu", {}), ("linear", {"units": 3, "bias": False})], (5,)),
    ([("conv2d", {"filters": 4, "kernel": 3}), ("batchnorm", {}), ("maxpool2d", {"size": 2}),
      ("conv2d", {"filters": 2, "kernel": [1, 2], "bias": False}), ("flatten", {}), ("batchnorm", {}),
      ("linear", {"units": 2})], (3, 8, 8)),
])
def test_the_size_found_from_shapes_is_the_size_built(layers, shape):
    import numpy as np

    model = Sequential([LAYERS.create(name, options) for name, options in layers])
    first, counted = shape, []
    for layer in model.layers:
        layer.input_shape = shape
        counted.append(layer.param_count(shape))
        shape = layer.infer_output_shape(shape)
    model.build(first, np.random.default_rng(0))
    assert counted == [sum(v.size for v in layer.params.values()) for layer in model.layers]
    assert sum(counted) == model.num_params() < MAX_PARAMS


# --- sweep files ---------------------------------------------------------------------------------


@pytest.fixture
def base(workdir, spiral) -> Path:
    path = workdir / "base.yaml"
    path.write_text(spiral({"train.epochs": 10}))
    return path


def sweep_file(workdir: Path, text: str) -> str:
    (workdir / "s.yaml").write_text("base: base.yaml\n" + textwrap.dedent(text))
    return "s.yaml"


def test_random_int_bounds_past_int64_are_one_error(workdir, nncli, base):
    sweep_file(workdir, """\
        random:
          trials: 3
          space:
            train.epochs: {int: [1, 100000000000000000000]}
        """)
    result = nncli("sweep", "s.yaml", "--dry-run")
    assert result.exit_code == 2
    assert one_error_line(result.stderr) == (
        "error: s.yaml:5 random.space.train.epochs.int: expected integer bounds from -2^63 to 2^63 - 2,"
        " got [1, 100000000000000000000]")


def test_uniform_bounds_past_a_float_are_one_error(workdir, nncli, base):
    sweep_file(workdir, f"""\
        random:
          trials: 3
          space:
            optimizer.lr: {{uniform: [0, {10**400}]}}
        """)
    result = nncli("sweep", "s.yaml", "--dry-run")
    assert result.exit_code == 2
    line = one_error_line(result.stderr)
    assert "s.yaml:5 random.space.optimizer.lr.uniform: expected finite bounds" in line


def test_a_grid_over_seed_is_refused_pointing_to_seeds(workdir, nncli, base):
    sweep_file(workdir, """\
        grid:
          optimizer.lr: [0.1]
          seed: [1, 2, 3]
        """)
    result = nncli("sweep", "s.yaml", "--dry-run")
    assert result.exit_code == 2
    line = one_error_line(result.stderr)
    assert line.startswith("error: s.yaml:4 grid.seed: the seed is not a key to sweep")
    assert "seeds: [0, 1, 2]" in line


@pytest.mark.parametrize("values", ["[0.01, 0.010]", "[0.1, 1.0e-1]", "[1, 1.0]"])
def test_values_equal_as_numbers_are_refused(workdir, nncli, base, values):
    sweep_file(workdir, f"""\
        grid:
          optimizer.lr: {values}
        """)
    result = nncli("sweep", "s.yaml", "--dry-run")
    assert result.exit_code == 2
    line = one_error_line(result.stderr)
    assert line.startswith("error: s.yaml:3 grid.optimizer.lr[1]: item 1 (")
    assert "is the same value as item 0" in line


def test_true_and_1_are_not_one_value(workdir, base):
    sweep_file(workdir, """\
        grid:
          optimizer.nesterov: [true, 1]
        """)
    with pytest.raises(ConfigError) as err:
        sweep_module.load_sweep(workdir / "s.yaml")
    assert "same value" not in str(err.value)  # refused by sgd for the 1, not as a repeat


def test_trials_whose_configs_resolve_the_same_are_refused_naming_the_keys(workdir, nncli, base):
    sweep_file(workdir, """\
        grid:
          optimizer.lr: [0.1, 0.2]
          train.epochs: [10, null]
        """)
    result = nncli("sweep", "s.yaml", "--dry-run")
    assert result.exit_code == 2
    assert one_error_line(result.stderr) == (
        "error: s.yaml:4 grid.train.epochs: trials 0 and 1 would be one run: their configs resolve the"
        " same (train.epochs: 10 and null)")


def test_random_draws_that_repeat_are_refused(workdir, nncli, base):
    sweep_file(workdir, """\
        random:
          trials: 5
          space:
            train.epochs: {choice: [1, 2]}
        """)
    result = nncli("sweep", "s.yaml", "--dry-run")
    assert result.exit_code == 2
    line = one_error_line(result.stderr)
    assert line.startswith("error: s.yaml:5 random.space.train.epochs: trials ")
    assert "draws train.epochs=" in line and "fewer trials, or a grid" in line


def test_a_billion_random_trials_are_refused_before_any_is_drawn(workdir, base):
    sweep_file(workdir, """\
        random:
          trials: 1000000000
          space:
            optimizer.lr: {loguniform: [1.0e-3, 1.0e-1]}
        """)
    code, stderr, maxrss = run_limited(workdir, "sweep", "s.yaml", "--dry-run")
    assert code == 2
    assert one_error_line(stderr) == (
        "error: s.yaml:3 random.trials: 1,000,000,000 trials: more than a sweep may have, 1,000,000")
    assert maxrss < 600 * MIB


@pytest.fixture
def no_trial_checked(monkeypatch):
    """Checking a trial's config fails the test: a refusal must come before any is checked."""
    def refuse(*args):
        raise AssertionError("a trial's config was checked")

    monkeypatch.setattr(sweep_module, "_check_trial", refuse)


def grid_of(n: int) -> str:
    return f"""\
        grid:
          optimizer.lr: [{', '.join(f'{0.001 * (i + 1):.3f}' for i in range(n))}]
          optimizer.momentum: [{', '.join(f'{0.001 * i:.3f}' for i in range(100))}]
        """


def test_a_10000_point_grid_is_refused_before_any_trial_naming_max_trials(
        workdir, nncli, base, no_trial_checked):
    sweep_file(workdir, grid_of(100))
    for args in ([], ["--dry-run"]):
        result = nncli("sweep", "s.yaml", *args)
        assert result.exit_code == 2
        assert one_error_line(result.stderr) == (
            "error: s.yaml:3 grid: 10,000 trials: more than 1,000 need --max-trials (--max-trials 10000"
            " to run them all)")
    result = nncli("sweep", "s.yaml", "--max-trials", "5000")
    assert result.exit_code == 2
    assert one_error_line(result.stderr) == (
        "error: s.yaml:3 grid: 10,000 trials: more than --max-trials 5,000")
    assert not (workdir / "runs").exists()


def test_max_trials_lets_a_larger_sweep_through_and_its_count_comes_first(workdir, nncli, base, monkeypatch):
    checked = []

    def check(source, base, trial, seed):
        checked.append(trial.index)
        if len(checked) == 3:
            raise ConfigError("stopped by the test")
        return str(trial.index)

    monkeypatch.setattr(sweep_module, "_check_trial", check)
    sweep_file(workdir, grid_of(11))
    result = nncli("sweep", "s.yaml", "--max-trials", "1100")
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        "s.yaml: 1,100 trials x 1 seed = 1,100 runs; checking each trial's config",
        "error: stopped by the test",
    ]
    monkeypatch.setattr(sweep_module, "_check_trial", lambda source, base, trial, seed: str(trial.index))
    result = nncli("sweep", "s.yaml", "--dry-run", "--max-trials", "1100")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("s.yaml: 1,100 trials x 1 seed =")
    assert nncli("sweep", "s.yaml", "--dry-run", "--max-trials", "2000000").exit_code == 2


@pytest.mark.parametrize(("setting", "words"), [
    ("data.classes=100000000", "100,000,000 classes, more than the 1,000"),
    ("data.points_per_class=1000000000", "3,000,000,000 samples, more than the 10,000,000"),
    ("data.test_size=100000000", "100,000,000 samples, more than the 10,000,000"),
])
def test_a_generated_dataset_too_large_is_refused_before_it_is_drawn(workdir, spiral, nncli, setting, words):
    (workdir / "spiral.yaml").write_text(spiral())
    result = nncli("check", "spiral.yaml", "--set", setting)
    assert result.exit_code == 2 and words in result.stderr and "Traceback" not in result.output

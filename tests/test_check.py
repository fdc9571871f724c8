"""`nncli check`: the layer table of a known config, and configs that do not fit."""

from __future__ import annotations

import re

import pytest

# mnist_small (shipped in the package): images of shape (1, 28, 28), 10 classes
IMAGES = """\
name: small
data:
  dataset: mnist_small
  val_size: 1000
  preprocess: [scale]
model:
  - flatten
  - linear: {units: 32, init: he}
  - batchnorm
  - relu
  - dropout: {p: 0.25}
  - linear: {units: 10}
loss: softmax_cross_entropy
optimizer: {type: sgd, lr: 0.1}
train: {batch_size: 50}
"""


@pytest.fixture(autouse=True)
def small_yaml(workdir):
    (workdir / "small.yaml").write_text(IMAGES)


@pytest.fixture
def check(nncli):
    return lambda *args: nncli("check", *args)


def layer_rows(stdout: str) -> list[list[str]]:
    """[index, layer, output shape, parameters, MACs] per row of the printed table (columns are
    separated by at least two spaces)."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split()[:2] == ["#", "layer"])
    rows = []
    for line in lines[start + 1 :]:
        cells = re.split(r"\s{2,}", line.strip())
        if not cells[0].isdigit():
            break
        rows.append(cells)
    return rows


def test_shapes_and_parameters_of_a_known_config(workdir, check):
    result = check("small.yaml")
    assert result.exit_code == 0, result.output
    assert layer_rows(result.stdout) == [
        ["0", "flatten", "(784,)", "0", "0"],
        ["1", "linear(units=32, init=he)", "(32,)", "25,120", "25,088"],  # 784 * 32 + 32; 784 * 32
        ["2", "batchnorm", "(32,)", "64", "0"],  # gamma and beta
        ["3", "relu", "(32,)", "0", "0"],
        ["4", "dropout(p=0.25)", "(32,)", "0", "0"],
        ["5", "linear(units=10)", "(10,)", "330", "320"],  # 32 * 10 + 10; 32 * 10
    ]
    assert "data: mnist_small, 5,000 training, 1,000 validation, 1,000 test samples" in result.stdout
    assert "input (1, 28, 28), 10 classes" in result.stdout
    assert "total parameters: 25,514 (99.7 KiB)" in result.stdout  # 4 bytes each
    # one batch of 50 float32 samples through outputs of 784 + 4 * 32 + 10 numbers
    assert 50 * (784 + 4 * 32 + 10) * 4 == 184_400
    assert "activations of one batch: 180.1 KiB (batch_size 50, float32)" in result.stdout
    assert result.stdout.rstrip().endswith("config OK")
    assert list(workdir.iterdir()) == [workdir / "small.yaml"]  # nothing written, nothing trained


def test_overrides_apply(workdir, check):
    result = check("small.yaml", "--set", "model[1].linear.units=8", "--set", "dtype=float64")
    assert result.exit_code == 0, result.output
    rows = layer_rows(result.stdout)
    assert rows[1] == ["1", "linear(units=8, init=he)", "(8,)", "6,280", "6,272"]
    assert "total parameters: 6,386 (49.9 KiB)" in result.stdout  # 8 bytes each


def test_a_missing_flatten_names_the_layer_and_line(workdir, check):
    (workdir / "bad.yaml").write_text(IMAGES.replace("  - flatten\n", ""))
    result = check("bad.yaml")
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        "error: bad.yaml:7 model[0].linear: linear expects flat input of shape (features,),"
        " got (1, 28, 28): put a flatten layer before it"
    )
    assert result.stdout == ""


def test_a_last_layer_of_the_wrong_width_names_the_layer_and_line(workdir, check):
    (workdir / "bad.yaml").write_text(IMAGES.replace("units: 10", "units: 12"))
    result = check("bad.yaml")
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        "error: bad.yaml:12 model[5]: the last layer gives 12 outputs but mnist_small has 10 classes"
        " (expected 10)"
    )


def test_config_mistakes_are_reported_as_by_train(workdir, check):
    (workdir / "typo.yaml").write_text(IMAGES.replace("batchnorm", "batchnrm"))
    result = check("typo.yaml")
    assert result.exit_code == 2
    assert result.stderr.startswith("error: typo.yaml:9 model[2]: unknown layer")
    assert 'did you mean "batchnorm"' in result.stderr
    assert check("missing.yaml").stderr.strip() == "error: config file missing.yaml does not exist"


def test_a_convolution_that_cannot_take_its_input_names_the_layer_line_and_shapes(workdir, check):
    cnn = IMAGES.replace("  - flatten\n  - linear: {units: 32, init: he}\n",
                         "  - conv2d: {filters: 8, kernel: 31, padding: 1}\n  - flatten\n")
    assert cnn != IMAGES
    (workdir / "cnn.yaml").write_text(cnn)
    result = check("cnn.yaml")
    assert result.exit_code == 2
    assert result.output.strip() == (
        "error: cnn.yaml:7 model[0].conv2d: the 31-pixel kernel is larger than the input's height"
        " (28 padded to 30): conv2d cannot take (1, 28, 28)"
    )
    fits = check("cnn.yaml", "--set", "model[0].conv2d.kernel=3")
    assert fits.exit_code == 0, fits.output
    assert "conv2d(filters=8, padding=[1, 1])  (8, 28, 28)" in fits.output


def test_augmentation_is_listed(workdir, check):
    (workdir / "aug.yaml").write_text(IMAGES.replace("  preprocess: [scale]\n",
                                                     "  preprocess: [scale]\n  augment: [hflip]\n"))
    result = check("aug.yaml")
    assert result.exit_code == 0, result.output
    assert "augment: hflip(p=0.5) (training batches only)" in result.output.splitlines()
    assert "augment:" not in check("small.yaml").output


@pytest.mark.parametrize(("first", "line"), [
    ("", "csv: no header, the first line is data"),  # iris.data: class names on every line
    ("sepal,petal,species\n", "csv header: sepal, petal, species"),
])
def test_check_says_how_a_csv_first_line_was_read(workdir, check, first, line):
    rows = "".join(f"{i % 5}.1,{i % 3}.5,{('setosa', 'virginica')[i % 2]}\n" for i in range(10))
    (workdir / "iris.csv").write_text(first + rows)
    (workdir / "iris.yaml").write_text(
        "data: {dataset: csv, path: iris.csv, target: -1, val_size: 0}\n"
        "model: [{linear: {units: 2}}]\nloss: softmax_cross_entropy\noptimizer: {type: sgd, lr: 0.1}\n"
    )
    result = check("iris.yaml")
    assert result.exit_code == 0, result.output
    assert "data: csv, 10 training samples" in result.stdout
    assert line in result.stdout.splitlines()


def test_a_repeated_preprocessing_step_is_a_warning(workdir, check):
    (workdir / "twice.yaml").write_text(IMAGES.replace("preprocess: [scale]", "preprocess: [scale, scale]"))
    result = check("twice.yaml")
    assert result.exit_code == 0, result.output
    assert ("warning: twice.yaml:5 data.preprocess[1]: scale is already preprocess[0], so it runs twice,"
            " the second time on the first one's output; remove one") in result.output
    assert "already preprocess" not in check("small.yaml").output

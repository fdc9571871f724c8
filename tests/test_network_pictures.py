"""`nncli plot RUN --filters` and `--activations`: the first layer's weights and one input's
feature maps, drawn (Agg) from small models trained here, for grey MNIST-shaped and RGB
CIFAR-shaped inputs; the grids' counts; feature maps that are the layers' outputs as
configured; and the models and arguments that cannot be drawn, in one sentence each.
(tests/test_pictures.py reads the other pictures; its `drawn` fixture reads these too.)"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from test_pictures import drawn  # noqa: F401  (the fixture: every figure saved, read as a person would)

import nncli
from nncli.commands import pictures
from nncli.commands.predict import load_model
from nncli.nn.features import feature_map_layers, layer_outputs
from nncli.output.pictures import MAP_COLUMNS, grid_shape, mosaic

CNN = """\
name: tiny_cnn
seed: 0
data: {dataset: mnist_small, val_size: 500, preprocess: [scale]}
model:
  - conv2d: {filters: 6, kernel: 3, padding: 1}
  - relu
  - maxpool2d: {size: 2}
  - conv2d: {filters: 4, kernel: 3}
  - relu
  - flatten
  - linear: {units: 10}
loss: softmax_cross_entropy
optimizer: {type: sgd, lr: 0.05, momentum: 0.9}
train: {epochs: 1, batch_size: 64}
"""

MLP = """\
name: tiny_mlp
seed: 0
data: {dataset: mnist_small, val_size: 500, preprocess: [scale, flatten]}
model:
  - linear: {units: 12}
  - relu
  - linear: {units: 10}
loss: softmax_cross_entropy
optimizer: {type: sgd, lr: 0.05}
train: {epochs: 1, batch_size: 128}
"""


@pytest.fixture(scope="module")
def trained(tmp_path_factory, nncli) -> Path:
    """tiny_cnn/ and tiny_mlp/, each trained one epoch on the shipped MNIST subset."""
    root = tmp_path_factory.mktemp("pictures")
    for name, text in (("tiny_cnn", CNN), ("tiny_mlp", MLP)):
        (root / f"{name}.yaml").write_text(text)
        result = nncli("train", root / f"{name}.yaml", "--run-dir", root / name, "--quiet")
        assert result.exit_code == 0, result.output
    return root


def arrays_run(folder: Path, model: list, shape=(3, 8, 8), n=64) -> Path:
    """A model of `model` trained one epoch on random uint8 images of `shape` (two classes)."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(n, *shape), dtype=np.uint8)
    y = rng.integers(0, 2, size=n)
    config = {"name": folder.name, "seed": 0, "data": {"dataset": "arrays", "preprocess": ["scale"]},
              "model": model, "loss": "softmax_cross_entropy", "optimizer": {"type": "sgd", "lr": 0.01},
              "train": {"epochs": 1, "batch_size": 16}}
    return nncli.train(config, data={"x_train": x, "y_train": y}, run_dir=folder).dir


def sane_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert 5_000 < len(data) < 2_000_000


def test_the_filters_of_a_conv_net_are_a_grid_of_its_filters(trained, tmp_path, nncli):
    out = tmp_path / "filters.png"
    result = nncli("plot", trained / "tiny_cnn", "--filters", "-o", out)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"wrote {out}"
    sane_png(out)
    made = pictures.filters(trained / "tiny_cnn", tmp_path / "again.png")
    assert made.layers == [0] and made.tiles == [6] and made.grids == [(2, 3)]


def test_the_pictures_read_at_a_glance(trained, tmp_path, drawn):  # noqa: F811
    pictures.filters(trained / "tiny_mlp", tmp_path / "units.png")
    pictures.activations(trained / "tiny_cnn", tmp_path / "maps.png", index=0)
    assert drawn["units.png"] == [] and drawn["maps.png"] == []
    titles = [ax.get_title() for ax in drawn.figures["maps.png"].axes]
    assert titles[0] == "input" and titles[2] == "model[2] maxpool2d: 6 maps of 14x14"


def test_the_filters_svg_is_titled_with_the_run_and_the_layer(trained, tmp_path, nncli):
    out = tmp_path / "filters.svg"
    assert nncli("plot", trained / "tiny_cnn", "--filters", "-o", out).exit_code == 0
    root = ET.parse(out).getroot()
    text = " ".join("".join(n.itertext()) for n in root.iter("{http://www.w3.org/2000/svg}text"))
    assert "tiny_cnn" in text and "model[0] conv2d(filters=6, padding=[1, 1])" in text
    assert "6 filters" in text


def test_a_linear_first_layer_on_images_draws_each_unit_as_the_image(trained, tmp_path):
    tiles, index, what = pictures.first_layer_tiles(load_model(trained / "tiny_mlp"))
    assert tiles.shape == (12, 28, 28) and index == 0 and what == "unit"
    weights = load_model(trained / "tiny_mlp").model.layers[0].params["W"]
    assert np.array_equal(tiles[5].ravel(), weights[:, 5])  # unit 5's weights, pixel by pixel
    made = pictures.filters(trained / "tiny_mlp", tmp_path / "units.pdf")
    assert made.tiles == [12] and made.grids == [(3, 4)]
    assert (tmp_path / "units.pdf").read_bytes()[:5] == b"%PDF-"


def test_rgb_inputs_give_rgb_filters_and_rgb_units(tmp_path):
    conv = arrays_run(tmp_path / "rgb_cnn", [{"conv2d": {"filters": 5, "kernel": 3}}, "relu", "flatten",
                                              {"linear": {"units": 2}}])
    tiles, _, _ = pictures.first_layer_tiles(load_model(conv))
    weights = load_model(conv).model.layers[0].params["W"]  # (filters, channels, kh, kw)
    assert tiles.shape == (5, 3, 3, 3)
    assert np.array_equal(tiles[2][..., 1], weights[2, 1])  # filter 2's green channel
    sane_png(pictures.filters(conv, tmp_path / "rgb.png").path)
    from PIL import Image

    photo = np.random.default_rng(1).integers(0, 256, size=(16, 16, 3), dtype=np.uint8)
    Image.fromarray(photo).save(tmp_path / "photo.png")  # an RGB picture, twice the model's size
    made = pictures.activations(conv, tmp_path / "maps.png", image=tmp_path / "photo.png")
    assert made.layers == [0] and made.tiles == [5]
    sane_png(made.path)

    mlp = arrays_run(tmp_path / "rgb_mlp", ["flatten", {"linear": {"units": 7}}, {"linear": {"units": 2}}])
    tiles, index, _ = pictures.first_layer_tiles(load_model(mlp))
    assert tiles.shape == (7, 8, 8, 3) and index == 1
    weights = load_model(mlp).model.layers[1].params["W"]
    # the input is flattened in (channel, row, column) order: red rows first
    assert np.array_equal(tiles[3][..., 0].ravel(), weights[:64, 3])
    made = pictures.filters(mlp, tmp_path / "rgb_units.png")
    assert made.tiles == [7] and made.grids == [(3, 3)]


def test_a_first_layer_that_is_not_conv_or_linear_on_images_is_one_sentence(tmp_path, nncli, spiral):
    norm = arrays_run(tmp_path / "norm", [{"batchnorm": {}}, "flatten", {"linear": {"units": 2}}])
    result = nncli("plot", norm, "--filters")
    assert result.exit_code == 1
    [line] = result.stderr.splitlines()
    assert line.startswith("error: ") and line.endswith(
        "--filters draws a first layer of weights that is a conv2d or a linear layer on images;"
        " model[0] is batchnorm"
    )
    (tmp_path / "spiral.yaml").write_text(spiral())
    assert nncli("train", tmp_path / "spiral.yaml", "--run-dir", tmp_path / "spiral", "-q").exit_code == 0
    result = nncli("plot", tmp_path / "spiral", "--filters")
    assert result.exit_code == 1
    [line] = result.stderr.splitlines()
    assert line.endswith("model[0] is linear(units=32, init=he), on inputs of shape (2,)")
    assert not (Path.cwd() / "filters.png").exists()


def test_the_activations_of_a_test_sample_are_each_conv_and_pool_layer(trained, tmp_path, nncli):
    out = tmp_path / "maps.png"
    result = nncli("plot", trained / "tiny_cnn", "--activations", "--index", "3", "-o", out)
    assert result.exit_code == 0, result.output
    sane_png(out)
    made = pictures.activations(trained / "tiny_cnn", tmp_path / "maps.svg", index=3)
    assert made.layers == [0, 2, 3]  # conv, pool, conv: not the ReLUs, flatten or linear
    assert made.tiles == [6, 6, 4]
    assert made.grids == [grid_shape(6, MAP_COLUMNS), grid_shape(6, MAP_COLUMNS), grid_shape(4, MAP_COLUMNS)]
    text = " ".join("".join(n.itertext()) for n in ET.parse(tmp_path / "maps.svg").getroot().iter(
        "{http://www.w3.org/2000/svg}text"))
    assert "feature maps of test sample 3" in text and "model[2] maxpool2d: 6 maps of 14x14" in text


def test_the_activations_of_an_image_file_read_as_predict_reads_it(trained, tmp_path, nncli):
    from PIL import Image, ImageDraw

    picture = Image.new("L", (60, 60), 235)  # dark ink on light paper, as a photo would be
    ImageDraw.Draw(picture).line([(30, 8), (30, 52)], fill=20, width=7)
    picture.save(tmp_path / "one.png")
    out = tmp_path / "a.png"
    result = nncli("plot", trained / "tiny_cnn", "--activations", tmp_path / "one.png", "-o", out)
    assert result.exit_code == 0, result.output
    sane_png(tmp_path / "a.png")


def test_feature_maps_are_the_layers_outputs_as_configured(trained):
    # the model runs the ReLU after the pool, and the convolution hands the pool its output
    # blocked by window corner: the maps must be what conv -> relu -> pool gives
    model = load_model(trained / "tiny_cnn").model
    x = np.random.default_rng(1).normal(size=(2, 1, 28, 28)).astype(np.float32)
    wanted = feature_map_layers(model)
    maps = layer_outputs(model, x, wanted)
    W, b = model.layers[0].params["W"], model.layers[0].params["b"]
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    conv = np.zeros((2, 6, 28, 28))
    for i in range(3):
        for j in range(3):
            conv += np.einsum("nchw,fc->nfhw", padded[:, :, i : i + 28, j : j + 28], W[:, :, i, j])
    conv += b[None, :, None, None]
    assert np.allclose(maps[0], conv, atol=1e-4)
    pooled = np.maximum(conv, 0).reshape(2, 6, 14, 2, 14, 2).max(axis=(3, 5))
    assert np.allclose(maps[2], pooled, atol=1e-4)
    assert maps[3].shape == (2, 4, 12, 12)


def test_feature_maps_of_a_convolution_run_in_chunks_are_in_pixel_order(monkeypatch):
    # a convolution of several channels computes its batch in chunks (nncli.nn.layers.conv),
    # blocked as (chunks, 2, 2, N/chunks, ...): one sample a chunk gives the maps of one chunk
    from nncli.nn import LAYERS, Sequential
    from nncli.nn.layers import conv

    model = Sequential([LAYERS.create("conv2d", {"filters": 3, "kernel": 3, "padding": 1}),
                        LAYERS.create("relu"), LAYERS.create("maxpool2d")])
    model.build((2, 6, 6), np.random.default_rng(0), np.float64)
    x = np.random.default_rng(1).normal(size=(4, 2, 6, 6))
    whole = layer_outputs(model, x, [0, 2])
    monkeypatch.setattr(conv, "CHUNK_BYTES", 1)
    parts = layer_outputs(model, x, [0, 2])
    assert model.layers[0].chunks == 4
    for i in (0, 2):
        np.testing.assert_allclose(parts[i], whole[i], rtol=1e-12, atol=1e-12)


def test_mosaic_puts_every_tile_in_its_cell():
    tiles = np.stack([np.full((2, 3), k / 10) for k in range(7)])
    image = mosaic(tiles)
    rows, cols = grid_shape(7)
    assert (rows, cols) == (3, 3)
    assert image.shape == (rows * 3 - 1, cols * 4 - 1)
    assert image[3, 4] == pytest.approx(0.4)  # tile 4: row 1, column 1
    assert np.isnan(image[2]).all() and np.isnan(image[:, 3]).all()  # the gaps
    assert np.isnan(image[6:, 4:]).all()  # no tiles 7 and 8


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--activations"],
         "error: --activations takes an IMAGE file, or --index N of the test set: one of them"),
        (["--index", "2"],
         "error: --index N goes with --activations: nncli plot RUN --activations --index N"),
        (["--filters", "--activations", "x.png"],
         "error: give --filters or --activations, not both: each draws one picture"),
        (["--filters", "-o", "f.jpg"],
         "error: f.jpg: cannot tell the image format from '.jpg'; use .png, .svg or .pdf"),
        (["--activations", "--index", "5000"],
         "error: --index 5000 is out of range: the test set has 1,000 samples (0 to 999)"),
    ],
)
def test_wrong_picture_arguments_are_one_sentence(trained, nncli, args, message, workdir):
    result = nncli("plot", trained / "tiny_cnn", *args)
    assert result.exit_code == 1
    assert result.stderr.strip() == message
    assert list(workdir.iterdir()) == []


def test_a_run_taken_by_activations_for_its_image_is_one_sentence_naming_the_order(trained, nncli, workdir):
    run = trained / "tiny_cnn"
    result = nncli("plot", "--activations", run, "--index", "3")
    assert result.exit_code == 1
    said = result.stderr.strip()
    assert said == (f"error: --activations took {run} for its IMAGE, and no run is left: give the run"
                    f" first, nncli plot {run} --activations [IMAGE | --index N]")
    result = nncli("plot")
    assert result.exit_code == 1
    assert result.stderr.strip() == ("error: give the run to plot: nncli plot RUN [RUN...] (a run directory"
                                     " or its metrics.csv)")
    assert list(workdir.iterdir()) == []


def test_activations_of_a_model_without_feature_maps_is_one_sentence(trained, nncli):
    result = nncli("plot", trained / "tiny_mlp", "--activations", "--index", "0")
    assert result.exit_code == 1
    assert result.stderr.strip().endswith(
        "the model has no convolution or pooling layer, whose feature maps --activations draws"
        " (try --filters)"
    )


def test_an_image_that_cannot_be_read_is_one_sentence(trained, tmp_path, nncli):
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    out = tmp_path / "a.png"
    result = nncli("plot", trained / "tiny_cnn", "--activations", tmp_path / "broken.png", "-o", out)
    assert result.exit_code == 1
    [line] = result.stderr.splitlines()
    assert line.startswith(f"error: cannot read {tmp_path / 'broken.png'}")
    assert not (tmp_path / "a.png").exists()

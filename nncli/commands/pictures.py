"""`nncli plot RUN --filters` and `nncli plot RUN --activations IMAGE`: what a trained network
learned, drawn.

--filters      the weights of the model's first layer with weights, one small image each: a
               convolution's filters (grey for one input channel, RGB for three), or a linear
               layer's units, each unit's weights over the input reshaped to the input image
               (a model on flattened images). Each is scaled to its own range.
--activations  one input's feature maps after each convolution and pooling layer, in
               evaluation mode, all maps of a layer on one scale. The input is an image file,
               read as `nncli predict` reads it (made to look like the training images), or
               sample `index` of the run's test set (this needs the run's data).

The model comes from the run's checkpoint (its best; a checkpoint file or an `nncli export`
file also do), never from training.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nncli.builder.checkpoints import rebuild
from nncli.builder.trained import TrainedModel
from nncli.commands.check import describe_layer
from nncli.commands.predict import gather, load_model
from nncli.data import resolve_data_dir
from nncli.data.images import image_shape
from nncli.errors import DataError, NncliError
from nncli.messages import count
from nncli.nn.features import feature_map_layers, layer_outputs
from nncli.output.pictures import MAP_COLUMNS, grid_shape, plot_activations, plot_filters
from nncli.output.plotting import check_format

MAX_TILES = 256  # filters drawn at most: a linear layer of 4,096 units shows its first 256


@dataclass
class Picture:
    """What was drawn: the file, the layer(s) (model indices) and the tiles of each grid."""

    path: Path
    layers: list[int]
    tiles: list[int]  # per grid: how many small images it holds
    grids: list[tuple[int, int]]  # per grid: (rows, columns)
    notes: list[str] = field(default_factory=list)


def _title(model: TrainedModel) -> str:
    return f"{model.config.name} ({model.source})"


def _load(run: str | Path, notes: list[str]) -> TrainedModel:
    if not Path(run).exists():
        raise NncliError(f"{run} does not exist")
    return load_model(run, warn=notes.append)


def filters(run: str | Path, output: str | Path) -> Picture:
    """Draw the first layer's filters of the model in `run` into `output`."""
    check_format(output)
    notes: list[str] = []
    trained = _load(run, notes)
    tiles, index, what = first_layer_tiles(trained)
    layer = trained.model.layers[index]
    shown = tiles[:MAX_TILES]
    scale = "RGB, each on its own range" if tiles.ndim == 4 else "red > 0 > blue, each on its own scale"
    drawn = f"the first {len(shown)} of {len(tiles):,} {what}s" if len(tiles) > MAX_TILES else \
        count(len(tiles), what)
    subtitle = f"{drawn}; {scale}"
    path = plot_filters(shown, Path(output), f"{_title(trained)}\nmodel[{index}] {describe_layer(layer)}",
                        subtitle)
    return Picture(path, [index], [len(shown)], [grid_shape(len(shown))], notes)


def first_layer_tiles(trained: TrainedModel) -> tuple[np.ndarray, int, str]:
    """(tiles (K, H, W) or (K, H, W, 3), the layer's index, what a tile is) for the first layer
    with weights; one sentence where that layer cannot be drawn as pictures."""
    model = trained.model
    weighted = [i for i, layer in enumerate(model.layers) if layer.params]
    if not weighted:
        raise NncliError(f"{trained.source}: the model has no layer with weights to draw")
    index = weighted[0]
    layer = model.layers[index]
    where = f"{trained.source}: --filters draws a first layer of weights that is a conv2d or a linear layer" \
            f" on images; model[{index}] is {describe_layer(layer)}"
    weights = layer.params.get("W")
    if weights is None:
        raise NncliError(where)
    if weights.ndim == 4:  # a convolution: (filters, channels, kh, kw)
        channels = weights.shape[1]
        if channels not in (1, 3):
            raise NncliError(f"{where}, over {channels} input channels: only 1 (grey) or 3 (RGB) are drawn")
        tiles = weights[:, 0] if channels == 1 else weights.transpose(0, 2, 3, 1)
        return tiles, index, "filter"
    image = image_shape(trained.spec.model_shape)
    if weights.ndim != 2 or image is None or math.prod(image) != weights.shape[0]:
        taken = f"inputs of shape {trained.spec.shape}" if image is None else \
            f"{weights.shape[0]:,} inputs, not a {'x'.join(map(str, image))} image"
        raise NncliError(f"{where}, on {taken}")
    channels, height, width = image
    if channels not in (1, 3):
        raise NncliError(f"{where}, on images of {channels} channels: only 1 (grey) or 3 (RGB) are drawn")
    # W is (inputs, units); the inputs are the image flattened in (channel, row, column) order
    units = weights.T.reshape(-1, channels, height, width)
    tiles = units[:, 0] if channels == 1 else units.transpose(0, 2, 3, 1)
    return tiles, index, "unit"


def activations(
    run: str | Path,
    output: str | Path,
    *,
    image: str | Path | None = None,
    index: int | None = None,
    data_dir: Path | None = None,
    invert: bool | None = None,
) -> Picture:
    """Draw the feature maps of one input (the file `image`, or test sample `index`) after each
    convolution and pooling layer of the model in `run`."""
    check_format(output)
    if (image is None) == (index is None):
        raise NncliError("--activations takes an IMAGE file, or --index N of the test set: one of them")
    notes: list[str] = []
    trained = _load(run, notes)
    model = trained.model
    wanted = feature_map_layers(model)
    if not wanted:
        raise NncliError(
            f"{trained.source}: the model has no convolution or pooling layer, whose feature maps"
            " --activations draws (try --filters)"
        )
    if image is not None:
        gathered = gather(trained, [image], invert=invert)
        if gathered.skipped:  # predict goes on without it; here there is nothing else to draw
            raise DataError(gathered.skipped[0])
        raw = gathered.x
        if len(raw) != 1:
            raise NncliError(f"--activations draws one input; {image} holds {count(len(raw), 'sample')}")
        x = trained.preprocessor.apply(trained.check_inputs(raw, str(image)))
        what = Path(image).name
    else:
        x, what = _test_sample(trained, index, data_dir)
    maps = layer_outputs(model, x, wanted)
    probabilities = trained.loss.link(model.forward(x, training=False))[0]
    if trained.task == "classification" and probabilities.size > 1:
        best = int(np.argmax(probabilities))
        what += f", predicted {trained.classes[best]} ({probabilities[best] * 100:.0f}%)"
    layers = []
    for i in wanted:
        out = maps[i][0]
        layers.append((f"model[{i}] {describe_layer(model.layers[i])}: {count(out.shape[0], 'map')}"
                       f" of {out.shape[1]}x{out.shape[2]}", out))
    path = plot_activations(_picture(x[0]), layers, Path(output),
                            f"{_title(trained)}\nfeature maps of {what}")
    counts = [m.shape[0] for _, m in layers]
    return Picture(path, wanted, counts, [grid_shape(c, MAP_COLUMNS) for c in counts], notes)


def _test_sample(trained: TrainedModel, index: int, data_dir: Path | None) -> tuple[np.ndarray, str]:
    """Test sample `index` as the model takes it (preprocessed), and how to name it."""
    built = rebuild(trained.saved, resolve_data_dir(data_dir))
    x_test, y_test = built.splits.x_test, built.splits.y_test
    if x_test is None or len(x_test) == 0:
        raise NncliError(f"{trained.source}: its data has no test set; give an IMAGE file instead")
    if not 0 <= index < len(x_test):
        raise NncliError(f"--index {index} is out of range: the test set has {count(len(x_test), 'sample')}"
                         f" (0 to {len(x_test) - 1:,})")
    label = y_test[index]
    name = f"test sample {index:,}"
    if trained.task == "classification" and np.ndim(label) == 0:
        name += f" (label {trained.classes[int(label)]})"
    return x_test[index : index + 1], name


def _picture(sample: np.ndarray) -> np.ndarray:
    """A preprocessed image (C, H, W) as a picture in [0, 1]: grey (H, W), or RGB (H, W, 3)."""
    sample = np.asarray(sample, dtype=np.float64)
    if sample.ndim != 3 or sample.shape[0] not in (1, 3):
        raise NncliError(f"the model's input, of shape {sample.shape}, is not an image to draw")
    low, span = sample.min(), np.ptp(sample)
    picture = (sample - low) / span if span > 0 else np.full_like(sample, 0.5)
    return picture[0] if picture.shape[0] == 1 else picture.transpose(1, 2, 0)

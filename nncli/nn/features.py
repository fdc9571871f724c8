"""What a model's layers give for an input, layer by layer, as the config orders them.

`layer_outputs` runs one evaluation-mode forward pass with the model's per-layer hook
(`nncli.nn.model.Hook`) and keeps the outputs asked for, laid out as the model's users see
them: images channels first, (N, C, H, W). Two things the model does for speed are undone here
so that a layer's output is what the config describes:

- a ReLU just before a max pool runs after it (`nncli.nn.model._execution_order`): the pool's
  output as configured is then the ReLU's, which comes right after it;
- a convolution feeding a 2x2 pool hands its output over blocked by window corner,
  (chunks, 2, 2, N/chunks, OH/2, OW/2, F) (`nncli.nn.model.block_for_pooling`): it is put back
  in pixel order.

`feature_map_layers` names the layers whose outputs are feature maps: convolutions and pools.
"""

from __future__ import annotations

import numpy as np

from nncli.nn.layers.conv import Conv2D
from nncli.nn.layers.pooling import AvgPool2D, MaxPool2D
from nncli.nn.model import Sequential

FEATURE_MAP_LAYERS = (Conv2D, MaxPool2D, AvgPool2D)


def feature_map_layers(model: Sequential) -> list[int]:
    """The indices of the convolution and pooling layers, in the config's order."""
    return [i for i, layer in enumerate(model.layers) if isinstance(layer, FEATURE_MAP_LAYERS)]


def layer_outputs(model: Sequential, x: np.ndarray, wanted: list[int]) -> dict[int, np.ndarray]:
    """Layer i's output for the batch `x` (as the model takes it) for each i in `wanted`, in
    evaluation mode, as the config's order of layers gives it (see the module's docstring). A
    layer whose output as configured never exists as one array (a ReLU the model moved after
    its pool) is left out."""
    wanted_set = set(wanted)
    ran: set[int] = set()
    found: dict[int, np.ndarray] = {}

    def keep(event: str, index, value) -> None:
        if event != "forward":
            return
        ran.add(index)
        # the layers run so far are exactly 0..k: this is layer k's output as configured
        k = len(ran) - 1
        if max(ran) == k and k in wanted_set:
            found[k] = _pixel_order(model.layers[k], np.array(value, copy=True))

    model.forward(x, training=False, hook=keep)
    return {i: model.outside(found[i]) for i in wanted if i in found}


def _pixel_order(layer, value: np.ndarray) -> np.ndarray:
    """A layer's output (N, H, W, C), put back from the blocked layout where it is in it."""
    if value.ndim == 7:  # (chunks, 2, 2, N/chunks, OH/2, OW/2, F): pixel (2 ph + dy, 2 pw + dx)
        k, _, _, m, ph, pw, f = value.shape
        return value.transpose(0, 3, 4, 1, 5, 2, 6).reshape(k * m, 2 * ph, 2 * pw, f)
    return value

"""Layers, each registered in `LAYERS` under its YAML name."""

from nncli.nn.layers import activations, conv, core, normalization, pooling  # noqa: F401  (registration)
from nncli.nn.layers.base import LAYERS, Layer

__all__ = ["LAYERS", "Layer"]

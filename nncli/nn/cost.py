"""What a layer costs: multiply-accumulates (MACs) for one sample in a forward pass, as
`nncli check` and `Model.summary()` report them.

A MAC is one product added to a sum, the unit of a matrix product (FLOPs, counting the multiply
and the add apart, are about twice the MACs). Per layer, for one sample:

    linear     in_features * units                  (adding the bias is not counted)
    conv2d     OH * OW * filters * kh * kw * C      (each output value is a window's dot product;
                                                    padding's zeros are counted, as they are computed)
    0 MACs     maxpool2d, avgpool2d, global_avgpool (comparisons and sums), batchnorm (a scale
               and shift per value, foldable into the layer before it), the activations (relu,
               leaky_relu, sigmoid, tanh, softmax, identity), dropout (nothing at inference), flatten

Only products are counted: the elementwise work of the 0-MAC layers is small beside them and
is bound by memory, not arithmetic (see `nncli time` for where a step's time goes). A training
step costs about three times the forward MACs: the forward products and, in backward, one for
the input's gradient and one for the weights'.
"""

from __future__ import annotations

import math

from nncli.nn.layers import Layer

MACS = {
    "linear": lambda layer: layer.input_shape[0] * layer.units,
    "conv2d": lambda layer: math.prod(layer.output_shape) * math.prod(layer.kernel) * layer.input_shape[0],
}
NO_MACS = ("maxpool2d", "avgpool2d", "global_avgpool", "batchnorm", "flatten", "dropout", "identity",
           "relu", "leaky_relu", "sigmoid", "tanh", "softmax")


def macs(layer: Layer) -> int:
    """Multiply-accumulates of a built `layer` for one sample (see the module's docstring)."""
    if layer.name in MACS:
        return int(MACS[layer.name](layer))
    if layer.name in NO_MACS:
        return 0
    raise ValueError(f"no MAC count is defined for the layer {layer.name}: add it to nncli.nn.cost")

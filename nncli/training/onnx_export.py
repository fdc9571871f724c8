"""A trained model as an ONNX graph that takes raw samples and returns what `nncli predict` does.

The graph, float32 throughout, opset 17 and IR version 8 (read by onnxruntime 1.13 and later):

    x         raw samples (N, *shape) as float32: what `nncli predict` reads from an .npz's x,
              laid out as the training data was (images channels first, or channels last with
              `data.layout: channels_last`), pixels in their own range (0 to 255 for MNIST)
    layout    a Transpose to channels first, for channels-last images
    preprocess   the fitted steps as arithmetic nodes with their statistics as constants: scale
              (Mul, after a Sub of the minimum for tables), standardize (Sub, Div), flatten
    layers    linear: Gemm; conv2d: Conv (pads [top, left, bottom, right]); maxpool2d: MaxPool;
              avgpool2d: AveragePool with count_include_pad=1 (nncli counts padding as zeros);
              global_avgpool: GlobalAveragePool and Flatten; batchnorm: BatchNormalization in
              inference form (running statistics), of flat features or image channels; flatten:
              Flatten, in (channel, row, column) order as nncli's; dropout and identity: nothing;
              relu, leaky_relu (alpha given), sigmoid, tanh, softmax: the ONNX operator
    link      the loss's output link, as `predict` applies it: Softmax (softmax_cross_entropy),
              Sigmoid (binary_cross_entropy), nothing (mse, multiclass_hinge)

The output is named after what it holds (`probabilities`, `scores` or `values`), one row per
sample. The model's metadata (metadata_props) holds the class names (JSON), the task, the
output's kind, the input's shape and layout, the regression targets' names and the epoch.

Inside nncli, images travel channels-last (nncli.nn.layers.conv); that is invisible at the
model's boundary, where they are channels first as here, and `flatten` orders features as
PyTorch does, so the graph is written channels first with no transposes between layers.

The onnx package is an optional extra (`pip install 'nncli[onnx]'`), imported on first use.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import numpy as np

from nncli import __version__
from nncli.builder.trained import TrainedModel
from nncli.data import preprocess
from nncli.errors import NncliError
from nncli.fileio import atomic_write_bytes
from nncli.nn.layers import activations, conv, core, normalization, pooling
from nncli.nn.layers.base import Layer
from nncli.nn.losses import Loss

OPSET = 17
IR_VERSION = 8  # onnx stamps its newest IR version otherwise, which older onnxruntimes refuse
INPUT = "x"
MISSING = "ONNX export needs the onnx package: pip install 'nncli[onnx]' (or pip install onnx)"


def load_onnx():
    """The onnx module, or an `NncliError` saying what to install."""
    try:
        import onnx
    except ImportError:
        raise NncliError(MISSING) from None
    return onnx


class Graph:
    """Nodes and constants of a graph being written, each output named after its layer;
    `inputs` are the graph's input names, which nothing else may take."""

    def __init__(self, onnx, inputs: tuple[str, ...] = ()):
        self.onnx = onnx
        self.nodes: list = []
        self.constants: list = []
        self._used: set[str] = set(inputs)

    def _fresh(self, name: str) -> str:
        base, n = name, 1
        while name in self._used:
            n += 1
            name = f"{base}_{n}"
        self._used.add(name)
        return name

    def const(self, name: str, value) -> str:
        """A float32 constant (an initializer) named `name`; returns its name."""
        name = self._fresh(name)
        array = np.ascontiguousarray(np.asarray(value, dtype=np.float32))
        self.constants.append(self.onnx.numpy_helper.from_array(array, name))
        return name

    def ints(self, name: str, values) -> str:
        """An int64 constant (shapes, axes)."""
        name = self._fresh(name)
        array = np.asarray(values, dtype=np.int64)
        self.constants.append(self.onnx.numpy_helper.from_array(array, name))
        return name

    def node(self, op: str, inputs: list[str], name: str, output: str | None = None, **attrs) -> str:
        """Append an `op` node named `name`; returns its output's name (`output`, else `name`)."""
        out = self._fresh(output or name)
        self.nodes.append(self.onnx.helper.make_node(op, inputs, [out], name=self._fresh(f"{name}:{op}"),
                                                     **attrs))
        return out


# ---- layers: each converter writes one layer's nodes after `x` and returns the output's name

def _linear(g: Graph, layer: core.Linear, x: str, at: str) -> str:
    inputs = [x, g.const(f"{at}.W", layer.params["W"])]  # (in, out): x @ W, no transpose
    if layer.bias:
        inputs.append(g.const(f"{at}.b", layer.params["b"]))
    return g.node("Gemm", inputs, at)


def _pads(layer) -> dict:
    """ONNX's pads, [top, left, bottom, right], from nncli's ((top, bottom), (left, right))."""
    (top, bottom), (left, right) = layer.pads
    return {"pads": [top, left, bottom, right]}


def _conv(g: Graph, layer: conv.Conv2D, x: str, at: str) -> str:
    inputs = [x, g.const(f"{at}.W", layer.params["W"])]  # (F, C, kh, kw), as ONNX's
    if layer.bias:
        inputs.append(g.const(f"{at}.b", layer.params["b"]))
    return g.node("Conv", inputs, at, kernel_shape=list(layer.kernel), strides=list(layer.stride),
                  dilations=[1, 1], group=1, **_pads(layer))


def _maxpool(g: Graph, layer: pooling.MaxPool2D, x: str, at: str) -> str:
    # padding is -inf in both; windows that run past the input are dropped (ceil_mode 0)
    return g.node("MaxPool", [x], at, kernel_shape=list(layer.kernel), strides=list(layer.stride),
                  ceil_mode=0, **_pads(layer))


def _avgpool(g: Graph, layer: pooling.AvgPool2D, x: str, at: str) -> str:
    return g.node("AveragePool", [x], at, kernel_shape=list(layer.kernel), strides=list(layer.stride),
                  ceil_mode=0, count_include_pad=1, **_pads(layer))


def _global_avgpool(g: Graph, layer: pooling.GlobalAvgPool, x: str, at: str) -> str:
    pooled = g.node("GlobalAveragePool", [x], f"{at}.pooled")  # (N, C, 1, 1)
    return g.node("Flatten", [pooled], at, axis=1)


def _batchnorm(g: Graph, layer: normalization.BatchNorm, x: str, at: str) -> str:
    inputs = [x, g.const(f"{at}.gamma", layer.params["gamma"]), g.const(f"{at}.beta", layer.params["beta"]),
              g.const(f"{at}.running_mean", layer.buffers["running_mean"]),
              g.const(f"{at}.running_var", layer.buffers["running_var"])]
    # (N, D) features or (N, C, H, W) channels: ONNX's axis 1 either way
    return g.node("BatchNormalization", inputs, at, epsilon=float(layer.eps), training_mode=0)


def _flatten(g: Graph, layer: core.Flatten, x: str, at: str) -> str:
    return g.node("Flatten", [x], at, axis=1)  # channels first: nncli's (channel, row, column) order


def _nothing(g: Graph, layer: Layer, x: str, at: str) -> str:
    return x  # dropout in inference, identity


def _leaky_relu(g: Graph, layer: activations.LeakyReLU, x: str, at: str) -> str:
    return g.node("LeakyRelu", [x], at, alpha=float(layer.alpha))


def _softmax(g: Graph, layer: activations.Softmax, x: str, at: str) -> str:
    # nncli's last axis is the channels of images (channels-last inside): axis 1 here
    return g.node("Softmax", [x], at, axis=1 if len(layer.input_shape) == 3 else -1)


def _unary(op: str) -> Callable[[Graph, Layer, str, str], str]:
    def convert(g: Graph, layer: Layer, x: str, at: str) -> str:
        return g.node(op, [x], at)

    return convert


#: every layer class nncli registers, and how it is written (tests/test_onnx.py checks the
#: registry against it: a new layer needs its entry here, or exporting it says it has none)
CONVERTERS: dict[type[Layer], Callable[[Graph, Layer, str, str], str]] = {
    core.Linear: _linear,
    core.Flatten: _flatten,
    core.Identity: _nothing,
    core.Dropout: _nothing,
    activations.ReLU: _unary("Relu"),
    activations.LeakyReLU: _leaky_relu,
    activations.Sigmoid: _unary("Sigmoid"),
    activations.Tanh: _unary("Tanh"),
    activations.Softmax: _softmax,
    conv.Conv2D: _conv,
    pooling.MaxPool2D: _maxpool,
    pooling.AvgPool2D: _avgpool,
    pooling.GlobalAvgPool: _global_avgpool,
    normalization.BatchNorm: _batchnorm,
}

#: the output link of each loss whose `link` is not the identity
LINKS = {"softmax_cross_entropy": "Softmax", "binary_cross_entropy": "Sigmoid"}


# ---- preprocessing: each fitted step as nodes

def _preprocess(g: Graph, steps: list, x: str) -> str:
    for i, step in enumerate(steps):
        at = f"preprocess.{i}"
        name = type(step).registered_name
        if isinstance(step, preprocess.Scale):
            if step.low is not None:
                x = g.node("Sub", [x, g.const(f"{at}.low", step.low)], f"{at}.shifted")
            x = g.node("Mul", [x, g.const(f"{at}.factor", step.factor)], f"{at}.{name}")
        elif isinstance(step, preprocess.Standardize):
            x = g.node("Sub", [x, g.const(f"{at}.mean", step.mean)], f"{at}.centred")
            x = g.node("Div", [x, g.const(f"{at}.std", step.std)], f"{at}.{name}")
        elif isinstance(step, preprocess.Flatten):
            x = g.node("Flatten", [x], f"{at}.{name}", axis=1)
        elif isinstance(step, preprocess.OneHot):
            continue  # labels only
        else:
            raise NncliError(f"preprocess[{i}] {name}: this preprocessing step has no ONNX form,"
                             " so the model cannot be exported to ONNX")
    return x


def build(trained: TrainedModel):
    """The ONNX ModelProto of `trained`, checked with onnx's full checker."""
    onnx = load_onnx()
    helper, TensorProto = onnx.helper, onnx.TensorProto
    g = Graph(onnx, inputs=(INPUT,))
    spec = trained.spec
    x = INPUT
    if spec.layout == "channels_last":
        x = g.node("Transpose", [x], "channels_first", perm=[0, 3, 1, 2])
    x = _preprocess(g, trained.preprocessor.steps, x)
    for i, layer in enumerate(trained.model.layers):
        convert = CONVERTERS.get(type(layer))
        if convert is None:
            raise NncliError(f"model[{i}] {layer.name}: this layer has no ONNX form, so the model"
                             " cannot be exported to ONNX (export it as .npz instead)")
        x = convert(g, layer, x, f"layers.{i}")
    loss = trained.loss
    kind = loss.outputs
    link = LINKS.get(loss.name)
    if link is None and type(loss).link is not Loss.link:
        raise NncliError(f"the loss {loss.name} has an output link with no ONNX form,"
                         " so the model cannot be exported to ONNX")
    if link == "Softmax":
        x = g.node(link, [x], kind, axis=-1)
    elif link == "Sigmoid":
        x = g.node(link, [x], kind)
    else:
        x = g.node("Identity", [x], kind)  # the output has its own name, whatever came last
    graph = helper.make_graph(
        g.nodes, f"nncli {trained.config.name}",
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, ["N", *spec.shape])],
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, ["N", *trained.model.output_shape])],
        initializer=g.constants,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="nncli", producer_version=__version__,
                              doc_string=_doc(trained, kind))
    model.ir_version = IR_VERSION
    helper.set_model_props(model, metadata(trained, kind))
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as err:  # a bug here
        raise RuntimeError(f"the ONNX graph written for {trained.source} is not valid: {err}") from err
    return model


def metadata(trained: TrainedModel, kind: str) -> dict[str, str]:
    """metadata_props: strings, JSON where a value is a list."""
    spec = trained.spec
    props = {
        "task": trained.task,
        "outputs": kind,
        "input": INPUT,
        "input_shape": json.dumps(["N", *spec.shape]),
        "input_layout": spec.layout or "channels_first",
        "epoch": str(int(trained.saved.get("epoch", 0))),
        "config_name": trained.config.name,
    }
    if trained.task == "classification":
        props["class_names"] = json.dumps(trained.classes)
    columns = spec.columns
    if trained.task == "regression" and columns is not None and columns.target_names:
        props["target_names"] = json.dumps(list(columns.target_names))
    if columns is not None and spec.feature_names:
        props["feature_names"] = json.dumps(list(spec.feature_names))
    if spec.pixel_max is not None:
        props["pixel_max"] = repr(float(spec.pixel_max))
    return props


def _doc(trained: TrainedModel, kind: str) -> str:
    shape = ", ".join(map(str, trained.spec.shape))
    return (f"nncli {__version__}: {trained.config.name}. Input {INPUT}: raw float32 samples (N, {shape}) as"
            f" `nncli predict` reads an .npz's x (the preprocessing is in the graph). Output {kind}:"
            f" (N, {trained.model.output_shape[0]}), as `nncli predict` gives them.")


def export_onnx(trained: TrainedModel, path) -> dict:
    """Write `trained` to `path` as ONNX (atomically); returns what was written."""
    model = build(trained)
    atomic_write_bytes(path, model.SerializeToString())
    return {"nodes": len(model.graph.node), "constants": len(model.graph.initializer),
            "opset": OPSET, "ir_version": IR_VERSION}

"""ONNX export (`nncli export RUN -o model.onnx`) checked by onnxruntime: for models holding
every layer type, and for each shipped config's model on synthetic data of its shape, the ONNX
outputs on 1,000 raw inputs equal nncli's float64 outputs (rtol 1e-4, atol 1e-5) and the
predicted classes are the same. Skipped, with the reason, where onnx or onnxruntime is not
installed (`pip install -e '.[test]'` installs both)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml

import nncli
from nncli.commands.export import export_checkpoint
from nncli.commands.predict import load_model
from nncli.nn.layers.base import LAYERS

onnx = pytest.importorskip("onnx", reason="onnx is not installed: pip install 'nncli[onnx]'")
ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed: pip install -e '.[test]'")

from nncli.training import onnx_export  # noqa: E402  (after the skip: it needs onnx)

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
RTOL, ATOL = 1e-4, 1e-5
N_INPUTS = 1000


def images(rng, n, shape):
    """`n` random uint8 images of `shape`."""
    return rng.integers(0, 256, size=(n, *shape), dtype=np.uint8)


def train(tmp_path, config: dict, x, y, name="run") -> Path:
    """`config` trained on x, y for its epochs (one, in these tests) into tmp_path/name."""
    run = nncli.train(config, data={"x_train": x, "y_train": y}, run_dir=tmp_path / name)
    return run.dir


def session(path: Path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def reference(run: Path, x: np.ndarray) -> np.ndarray:
    """nncli's predictions for raw samples `x`, the model and its preprocessing in float64."""
    model = load_model(run, warn=lambda message: None)
    model.model.astype(np.float64)
    model.preprocessor.dtype = np.dtype(np.float64)
    return model.predict(x)


def check(tmp_path, run: Path, x: np.ndarray) -> onnx.ModelProto:
    """Export `run` with the command's code, check it as onnx and onnxruntime read it, and
    compare its outputs on `x` with nncli's."""
    out = tmp_path / "model.onnx"
    written = export_checkpoint(run, out)
    assert written["format"] == "onnx" and out.is_file()
    proto = onnx.load(str(out))
    assert proto.ir_version == 8
    assert [(o.domain, o.version) for o in proto.opset_import] == [("", 17)]
    onnx.checker.check_model(proto, full_check=True)
    for tensor in proto.graph.initializer:
        assert tensor.data_type == onnx.TensorProto.FLOAT, tensor.name
    got = session(out).run(None, {"x": x.astype(np.float32)})[0]
    want = reference(run, x)
    assert got.dtype == np.float32 and got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)
    if want.shape[1] > 1:
        assert np.array_equal(got.argmax(axis=1), want.argmax(axis=1))
    else:
        assert np.array_equal(got[:, 0] > 0.5, want[:, 0] > 0.5)
    return proto


def config(model, loss="softmax_cross_entropy", preprocess=None, **data) -> dict:
    return {
        "name": "onnx_case",
        "seed": 0,
        "data": {"dataset": "arrays", "val_size": 0.25, "preprocess": preprocess or [], **data},
        "model": model,
        "loss": loss,
        "optimizer": {"type": "sgd", "lr": 0.05, "momentum": 0.9},
        "train": {"epochs": 1, "batch_size": 16},
    }


def _image_case(rng, shape, classes=4, n=96):
    x = images(rng, n, shape)
    return x, rng.integers(0, classes, n)


# Each case: (config, x_train, y_train, inputs); between them every registered layer, every
# preprocessing step, each loss's output link, both image layouts, asymmetric padding.
def _cases():
    def mlp(rng):  # images through scale and flatten steps, a dropout
        x, y = _image_case(rng, (1, 10, 10))
        return config([{"linear": {"units": 24}}, "relu", {"dropout": {"p": 0.3}}, {"linear": {"units": 4}}],
                      preprocess=["scale", "flatten"]), x, y, images(rng, N_INPUTS, (1, 10, 10))

    def activations(rng):  # a table: min-max scaling, then standardize; every activation
        x = rng.normal(3.0, 2.0, size=(120, 6)).astype(np.float32)
        y = (x[:, 0] > 3).astype(np.int64) + (x[:, 1] > 3)
        model = [{"linear": {"units": 16}}, {"leaky_relu": {"alpha": 0.2}}, {"linear": {"units": 16}},
                 "sigmoid", {"linear": {"units": 16}}, "tanh", "identity", {"linear": {"units": 3}}]
        inputs = rng.normal(3.0, 2.5, size=(N_INPUTS, 6)).astype(np.float32)
        return config(model, preprocess=["scale", "standardize"]), x, y, inputs

    def cnn(rng):  # same padding with stride 2 (pads 0 before, 1 after), max pools with padding
        x, y = _image_case(rng, (2, 14, 14))
        model = [{"conv2d": {"filters": 4, "kernel": 3, "stride": 2, "padding": "same"}}, "relu",
                 {"maxpool2d": {"size": 3, "stride": 2, "padding": 1}},
                 {"conv2d": {"filters": 5, "kernel": [2, 3], "padding": [1, 0], "bias": False}},
                 {"maxpool2d": {"size": 2}}, "flatten", {"linear": {"units": 4}}]
        return config(model, preprocess=["scale"]), x, y, images(rng, N_INPUTS, (2, 14, 14))

    def lenet(rng):  # average pools counting their padding as zeros, odd sizes
        x, y = _image_case(rng, (1, 11, 11))
        model = [{"conv2d": {"filters": 3, "kernel": 3, "padding": 1}}, "tanh",
                 {"avgpool2d": {"size": 3, "stride": 2, "padding": 1}}, {"avgpool2d": {"size": 2}},
                 "flatten", {"linear": {"units": 4}}]
        return config(model, preprocess=["scale"]), x, y, images(rng, N_INPUTS, (1, 11, 11))

    def channels_last(rng):  # (H, W, C) images, per-channel standardize, batch norm, global pool
        x, y = _image_case(rng, (9, 9, 3))
        model = [{"conv2d": {"filters": 6, "kernel": 3, "padding": 1}}, "batchnorm", "relu",
                 {"maxpool2d": {"size": 2}}, "global_avgpool", {"dropout": {"p": 0.2}},
                 {"linear": {"units": 4}}]
        return (config(model, preprocess=[{"standardize": {"per_channel": True}}], layout="channels_last"),
                x, y, images(rng, N_INPUTS, (9, 9, 3)))

    def binary(rng):  # a flatten layer, 1-d batch norm, a single output under a fused sigmoid
        x, y = _image_case(rng, (2, 4, 4), classes=2)
        model = ["flatten", {"linear": {"units": 12}}, "batchnorm", "relu", {"linear": {"units": 1}},
                 "sigmoid"]
        return (config(model, loss="binary_cross_entropy", preprocess=["standardize"]), x, y,
                images(rng, N_INPUTS, (2, 4, 4)))

    def hinge(rng):  # a softmax layer over image channels (nncli's last axis inside), scores out
        x, y = _image_case(rng, (2, 6, 6), classes=3)
        model = [{"conv2d": {"filters": 3, "kernel": 3}}, "softmax", "flatten", {"linear": {"units": 3}}]
        return (config(model, loss="multiclass_hinge", preprocess=["scale"]), x, y,
                images(rng, N_INPUTS, (2, 6, 6)))

    def regression(rng):  # two targets, mse: values out
        x = rng.normal(size=(120, 5)).astype(np.float32) * 4 + 10
        y = np.stack([np.sin(x[:, 0]), x[:, 1] * 0.1], axis=1).astype(np.float32)
        model = [{"linear": {"units": 16}}, "tanh", {"linear": {"units": 2}}]
        inputs = (rng.normal(size=(N_INPUTS, 5)) * 4 + 10).astype(np.float32)
        return config(model, loss="mse", preprocess=["standardize"], task="regression"), x, y, inputs

    return {f.__name__: f for f in (mlp, activations, cnn, lenet, channels_last, binary, hinge, regression)}


CASES = _cases()


def test_every_registered_layer_has_an_onnx_form():
    missing = sorted(name for name in LAYERS.names() if LAYERS.get(name) not in onnx_export.CONVERTERS)
    assert not missing, f"layers with no ONNX converter in nncli.training.onnx_export: {missing}"


def test_the_cases_hold_every_layer():
    used = set()
    for make in CASES.values():
        for entry in make(np.random.default_rng(0))[0]["model"]:
            used.add(entry if isinstance(entry, str) else next(iter(entry)))
    assert used == set(LAYERS.names())


@pytest.mark.parametrize("case", sorted(CASES))
def test_onnx_outputs_equal_nncli(tmp_path, case):
    rng = np.random.default_rng(sum(map(ord, case)))
    cfg, x, y, inputs = CASES[case](rng)
    proto = check(tmp_path, train(tmp_path, cfg, x, y), inputs)
    meta = {p.key: p.value for p in proto.metadata_props}
    if case == "regression":
        assert meta["task"] == "regression" and meta["outputs"] == "values" and "class_names" not in meta
    else:
        assert meta["task"] == "classification"
        assert json.loads(meta["class_names"]) == [str(c) for c in range(len(np.unique(y)))]
    if case == "channels_last":
        assert meta["input_layout"] == "channels_last"
        assert [d.dim_param or d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim] == \
            ["N", 9, 9, 3]


def test_leaky_relu_alpha_is_written(tmp_path):
    cfg, x, y, _ = CASES["activations"](np.random.default_rng(1))
    out = tmp_path / "m.onnx"
    export_checkpoint(train(tmp_path, cfg, x, y), out)
    [node] = [n for n in onnx.load(str(out)).graph.node if n.op_type == "LeakyRelu"]
    assert [(a.name, round(a.f, 6)) for a in node.attribute] == [("alpha", 0.2)]


def shipped(name: str, x, y, tmp_path, **data) -> Path:
    """configs/NAME.yaml's model, preprocessing and loss, trained one epoch on `x`, `y`;
    cifar10_cnn's layers with an eighth of their filters (the same layers and padding: its
    float64 reference on 1,000 inputs took most of this file's time)."""
    cfg = yaml.safe_load((CONFIGS / f"{name}.yaml").read_text())
    if name == "cifar10_cnn":
        for entry in cfg["model"]:
            if "conv2d" in entry:
                entry["conv2d"]["filters"] //= 8
    cfg["data"] = {"dataset": "arrays", "val_size": 0.25, "preprocess": cfg["data"].get("preprocess", []),
                   **data}
    cfg["train"] = {"epochs": 1, "batch_size": 32}
    cfg.pop("schedule", None)
    return train(tmp_path, cfg, x, y, name)


@pytest.mark.parametrize("name,shape", [
    ("quickstart", (1, 28, 28)), ("mnist_mlp", (1, 28, 28)), ("mnist_mlp_bn_dropout", (1, 28, 28)),
    ("mnist_cnn", (1, 28, 28)), ("mnist_lenet5", (1, 28, 28)), ("fashion_mnist_cnn", (1, 28, 28)),
    ("cifar10_cnn", (3, 32, 32)), ("spiral_mlp", (2,)),
])
def test_shipped_configs_on_synthetic_data(tmp_path, name, shape):
    """Each shipped config's model as written, on synthetic inputs of its dataset's shape
    (real MNIST is in test_onnx_on_real_mnist; CI has none)."""
    rng = np.random.default_rng(len(name))
    if len(shape) == 1:
        x = rng.normal(size=(64, *shape)).astype(np.float32)
        inputs = rng.normal(size=(N_INPUTS, *shape)).astype(np.float32) * 1.5
    else:
        x, inputs = images(rng, 64, shape), images(rng, N_INPUTS, shape)
    classes = 3 if name == "spiral_mlp" else 10
    y = np.arange(64) % classes
    check(tmp_path, shipped(name, x, y, tmp_path), inputs)


def test_csv_regression_with_standardize(tmp_path):
    """sine_regression's model on a CSV table with a header, standardized: the values out."""
    rng = np.random.default_rng(5)
    x = rng.uniform(-3, 3, size=(200, 2))
    rows = ["a,b,target"] + [f"{a:.6f},{b:.6f},{math.sin(a) + 0.5 * b:.6f}" for a, b in x]
    (tmp_path / "table.csv").write_text("\n".join(rows) + "\n")
    cfg = yaml.safe_load((CONFIGS / "sine_regression.yaml").read_text())
    cfg["data"] = {"dataset": "csv", "path": str(tmp_path / "table.csv"), "target": "target",
                   "val_size": 0.2, "preprocess": ["standardize"]}
    cfg["train"] = {"epochs": 1, "batch_size": 32}
    run = nncli.train(cfg, run_dir=tmp_path / "run").dir
    inputs = rng.uniform(-4, 4, size=(N_INPUTS, 2)).astype(np.float32)
    proto = check(tmp_path, run, inputs)
    meta = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(meta["target_names"]) == ["target"]
    assert json.loads(meta["feature_names"]) == ["a", "b"]


def test_onnx_on_real_mnist(tmp_path, real_data_dir):
    """mnist_cnn trained for one epoch on 500 real digits; the 1,000 first test digits."""
    from nncli.data.idx import read_idx

    images_ = read_idx(real_data_dir / "mnist" / "train-images-idx3-ubyte.gz")[:, None]
    labels = read_idx(real_data_dir / "mnist" / "train-labels-idx1-ubyte.gz")
    test = read_idx(real_data_dir / "mnist" / "t10k-images-idx3-ubyte.gz")[:N_INPUTS, None]
    run = shipped("mnist_cnn", images_[:500], labels[:500].astype(np.int64), tmp_path)
    check(tmp_path, run, test)


def test_an_unknown_layer_is_one_line_naming_it(tmp_path, monkeypatch, nncli):
    cfg, x, y, _ = CASES["hinge"](np.random.default_rng(2))
    run = train(tmp_path, cfg, x, y)
    monkeypatch.delitem(onnx_export.CONVERTERS, LAYERS.get("softmax"))
    result = nncli("export", run, "-o", tmp_path / "m.onnx")
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        "error: model[1] softmax: this layer has no ONNX form, so the model cannot be exported to ONNX"
        " (export it as .npz instead)"]
    assert not (tmp_path / "m.onnx").exists()


def test_the_readme_onnx_example_runs_as_written(tmp_path, monkeypatch):
    """README's "Deploying a model": an MNIST-shaped model exported as model.onnx, raw digits
    in digits.npz; the example's class names are those `predict` picks."""
    from test_api import readme_python

    rng = np.random.default_rng(7)
    x, y = _image_case(rng, (1, 28, 28), classes=10, n=80)
    run = shipped("quickstart", x, y, tmp_path)
    digits = images(rng, 20, (1, 28, 28))
    np.savez(tmp_path / "digits.npz", x=digits)
    export_checkpoint(run, tmp_path / "model.onnx")
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(readme_python("## Deploying a model"), "README.md", "exec"), scope)
    model = load_model(run, warn=lambda message: None)
    assert [scope["names"][i] for i in scope["probs"].argmax(axis=1)] == \
        [model.classes[i] for i in model.predict(digits).argmax(axis=1)]

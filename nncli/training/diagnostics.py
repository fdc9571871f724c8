"""What a run looked like when its loss stopped being finite: per-layer statistics of the
activations, parameters and gradients on the offending batch."""

from __future__ import annotations

import numpy as np


def tensor_stats(a: np.ndarray) -> dict:
    finite = np.isfinite(a)
    values = a[finite]
    stats = {"shape": list(a.shape), "nonfinite": int(a.size - values.size)}
    if values.size:
        stats.update(
            min=float(values.min()),
            max=float(values.max()),
            mean=float(values.mean()),
            std=float(values.std()),
            abs_max=float(np.abs(values).max()),
        )
    return stats


def nonfinite_report(exp, xb: np.ndarray, yb: np.ndarray, *, epoch: int, batch: int, loss: float) -> dict:
    """Re-run the batch layer by layer (the parameters are those that produced the bad loss:
    the step was not applied) and record what each layer saw and gave."""
    model = exp.model
    model.freeze_randomness(True)  # the same dropout masks as the failing pass
    try:
        # in the model's order (a ReLU before a max pool runs after it) and serially (the whole
        # batch through the model's own layers), so that the layers' caches are those
        # model.backward expects
        with model.serial():
            layers = {}
            out = model.inside(xb)
            for i in model.order:
                layer = model.layers[i]
                out = layer.forward(out, training=True)
                layers[i] = {"index": i, "layer": repr(layer), "activations": tensor_stats(out)}
            with np.errstate(all="ignore"):
                exp.loss.forward(model.outside(out), yb)
                model.backward(exp.loss.backward())
        layers = [layers[i] for i in range(len(model.layers))]
        for i, layer in enumerate(model.layers):
            layers[i]["params"] = {k: tensor_stats(v) for k, v in layer.params.items()}
            layers[i]["grads"] = {k: tensor_stats(v) for k, v in layer.grads.items()}
    finally:
        model.freeze_randomness(False)
    return {
        "epoch": epoch,
        "batch": batch + 1,
        "loss": repr(loss),
        "lr": exp.optimizer.lr,
        "input": tensor_stats(xb),
        "layers": layers,
    }

"""What a run looked like when its loss stopped being finite: per-layer statistics of the
activations, parameters and gradients on the offending batch."""

from __future__ import annotations

import numpy as np

from nncli.nn.step import step


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
    """Re-run the batch's step, short of the update (the parameters are those that produced the
    bad loss: the step was not applied), and record what each layer saw and gave."""
    model = exp.model
    layers = {}

    def record(event: str, index: int | None, value) -> None:
        if event == "forward":  # the layers come in the model's order: a ReLU after its pool
            layer = model.layers[index]
            layers[index] = {"index": index, "layer": repr(layer), "activations": tensor_stats(value)}

    model.freeze_randomness(True)  # the same dropout masks as the failing pass
    try:
        # the hook runs the whole batch serially through the model's own layers
        with np.errstate(all="ignore"):
            step(model, exp.loss, None, xb, yb, hook=record, finite_only=False)
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

"""What the builder says about a config that is legal but may not be what was meant, or that
it changed on the user's behalf: one line each, located at the config's file and line.

    note: configs/x.yaml:8 model[3].sigmoid: applied to predictions only; ...
    warning: configs/x.yaml:5 data: the inputs reach 255 as the model sees them, ...
"""

from __future__ import annotations

import numpy as np

from nncli.config.schema import Config
from nncli.data.contract import differences
from nncli.data.pipeline import Splits
from nncli.data.preprocess import repeated_steps
from nncli.nn.losses import Loss
from nncli.nn.model import Sequential

# What each activation limits its outputs to, for the warnings below.
BOUNDED = {"relu": "[0, inf)", "leaky_relu": "mostly [0, inf)", "sigmoid": "(0, 1)",
           "tanh": "(-1, 1)", "softmax": "(0, 1), summing to 1"}


def data_notes(config: Config, splits: Splits) -> list[str]:
    """What the dataset's loader decided on the config's behalf (whole-number labels read as
    regression targets because of the loss, say), and a warning for each preprocessing step
    that repeats an earlier one, one located line each."""
    where = config.source.location(("data",))
    notes = [f"note: {where} data: {note}" for note in splits.info.notes]
    for i, first, name in repeated_steps(config.data.preprocess):
        path = ("data", "preprocess", i)
        notes.append(f"warning: {config.source.location(path)} data.preprocess[{i}]: {name} is already"
                     f" preprocess[{first}], so it runs twice, the second time on the first one's"
                     " output; remove one")
    return notes


def split_notes(config: Config, splits: Splits) -> list[str]:
    """A warning for each way the test (or given validation) inputs look unlike the training
    inputs: another scale, reversed polarity, a column far outside its training range (a CSV
    in other units, say). The model would be judged on data it was not meant for."""
    where = config.source.location(("data",))
    info = splits.info
    names = info.columns.feature_labels if info.columns else None
    notes = []
    for split, what in (("val", "the validation set"), ("test", "the test set")):
        if split in splits.profiles:
            notes += [f"warning: {where} data: {line}" for line in differences(
                splits.profiles["train"], splits.profiles[split], source=what, names=names,
                pixel_max=info.pixel_max)]
    return notes


# Inputs beyond this size (after preprocessing) are far from the scale networks train well on.
INPUT_SCALE_LIMIT = 20.0


def input_notes(config: Config, splits: Splits) -> list[str]:
    """A warning when the training inputs, as the model sees them, are far from order 1 (raw
    0..255 pixels, say): they saturate activations and need a far smaller learning rate."""
    sample = splits.x_train[:4096]  # the head is enough to tell, and costs nothing
    finite = sample[np.isfinite(sample)]
    largest = float(np.abs(finite).max()) if finite.size else 0.0
    if largest <= INPUT_SCALE_LIMIT:
        return []
    path = ("data", "preprocess") if config.data.preprocess else ("data",)
    if splits.info.pixel_max is not None:
        fix = f"add scale to data.preprocess (it divides pixels by {splits.info.pixel_max:g})"
    else:
        fix = "add standardize (or scale) to data.preprocess"
    return [f"warning: {config.source.location(path)} data: the inputs reach {largest:g} as the model"
            f" sees them, far from the order-1 values networks train well on; {fix}"]


def output_notes(config: Config, model: Sequential, loss: Loss, splits: Splits) -> list[str]:
    """What the model's last layer means for its loss, one located line each."""
    last = model.stack[-1].name
    index = len(model.stack) - 1
    where = config.source.location(("model", index))

    def line(kind: str, text: str) -> str:
        return f"{kind}: {where} model[{index}].{last}: {text}"

    if model.output is not None:
        return [line("note", f"applied to predictions only; training runs {loss.name} on the logits"
                             " before it, the same loss computed stably in one step")]
    if last not in BOUNDED:
        return []
    if loss.task == "classification":
        own = {"binary_cross_entropy": "sigmoid", "softmax_cross_entropy": "softmax"}.get(loss.name)
        applies = f" and applies its own {own}" if own else ""
        return [line("warning", f"{loss.name} expects unbounded scores (logits){applies}, but a final"
                                f" {last} limits them to {BOUNDED[last]}: remove it")]
    one_hot = splits.info.task == "classification"
    if last in ("softmax", "sigmoid") and one_hot:
        return [line("warning", f"{last} before mse on one-hot class targets is legal but unusual: its"
                                " gradients vanish as outputs saturate; softmax_cross_entropy on the"
                                " logits trains better")]
    return []

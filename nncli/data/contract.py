"""What raw inputs look like, recorded at training and checked on every new input.

A model trained on pixels from 0 to 255 answers confidently, and wrongly, when it is given the
same pictures divided by 255, inverted, or as another table's columns: nothing fails, every
number is legal. So training records a description of its raw inputs (`describe`: per channel
of images, per column of tables, their minimum, maximum, mean and standard deviation, and for
images the background level), and new inputs are described the same way and compared with it
(`differences`): each way they are off is one sentence that names the difference and the fix.
Nothing here changes an input; the caller decides whether a sentence is a warning or an error.

A description is plain data (builtins only), for pickled checkpoints and the JSON of exports:

    {"groups": "channel" | "column" | "value", "count": N, "dtype": "uint8",
     "min": [...], "max": [...], "mean": [...], "std": [...], "background": [...] | None,
     "levels": [...]}   # tables only: each column's distinct values, counted up to 20

with one entry per group: per channel of (C, H, W) images, per column of (D,) rows (D at most
`MAX_COLUMNS`), else one group for every value of a sample.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# Beyond this many columns a sample is described as one group (a record stays small).
MAX_COLUMNS = 4096
# Mean and standard deviation come from at most this many samples, evenly spaced (no draw
# from the run's generator, so describing data never changes a run).
SAMPLE_ROWS = 2_000
# A table's column is "far off" when the inputs' mean lies this many training ranges beyond
# the training minimum or maximum (and beyond this many training standard deviations).
RANGES_OFF = 0.5
STDS_OFF = 4.0
# ... or when some input lies this many training ranges beyond them (and beyond twice as many
# standard deviations): values spread far wider than training's, around the same mean.
EXTREMES_OFF = 2.0
# A column holding one value in all inputs is worth a word only with this many inputs, and only
# where training gave it this many distinct values at least: a measurement, not a count or a
# category (a batch of rows with no children, or of one kind, is ordinary); descriptions count a
# column's distinct values up to this.
CONSTANT_ROWS = 10
LEVELS = 20
# Two value ranges whose largest magnitudes differ by this factor are "another scale".
SCALE_FACTOR = 20.0


def groups_of(sample_shape: Sequence[int]) -> str:
    """How samples of `sample_shape` are described: "channel" for (C, H, W) images, "column"
    for rows of at most `MAX_COLUMNS` values, "value" otherwise."""
    shape = tuple(sample_shape)
    if len(shape) == 3:
        return "channel"
    if len(shape) == 1 and shape[0] <= MAX_COLUMNS:
        return "column"
    return "value"


def _axes(ndim: int, groups: str) -> tuple[int, ...]:
    """The axes of (N, ...) arrays that a description reduces over."""
    if groups == "channel":
        return (0, 2, 3)
    if groups == "column":
        return (0,)
    return tuple(range(ndim))


def describe(x: np.ndarray) -> dict:
    """The description of raw samples `x` (N, ...), numbers, N >= 1, finite (the caller checks).
    Minimum and maximum are of every sample, mean and standard deviation of at most
    `SAMPLE_ROWS` evenly spaced ones; no float64 copy of more than those is made."""
    x = np.asarray(x)
    groups = groups_of(x.shape[1:])
    axes = _axes(x.ndim, groups)
    step = max(1, -(-len(x) // SAMPLE_ROWS))
    sample = x[::step].astype(np.float64)

    def listed(values) -> list[float]:
        return np.atleast_1d(np.asarray(values, dtype=np.float64)).reshape(-1).tolist()

    description = {
        "groups": groups,
        "count": int(len(x)),
        "dtype": x.dtype.name,
        "min": listed(x.min(axis=axes)),
        "max": listed(x.max(axis=axes)),
        "mean": listed(sample.mean(axis=axes)),
        "std": listed(sample.std(axis=axes)),
        "background": None,
    }
    if groups == "column":
        description["levels"] = [min(LEVELS, len(np.unique(column))) for column in sample.T]
    if groups == "channel" and min(x.shape[2:]) >= 3:
        description["background"] = listed(np.median(np.median(border_ring(sample), axis=-1), axis=0))
    return description


def read_record(saved) -> dict | None:
    """A checkpoint's description of its training inputs (`describe`), checked to be one: each
    statistic a list of finite numbers, one per group; a `TypeError`, `ValueError` or
    `KeyError` otherwise. None (a checkpoint written before descriptions) stays None."""
    if saved is None:
        return None
    if not isinstance(saved, dict) or saved.get("groups") not in ("channel", "column", "value"):
        raise TypeError("inputs: not a description of inputs")
    out = {"groups": saved["groups"], "count": int(saved["count"])}
    width = None
    for key in ("min", "max", "mean", "std"):
        values = [float(v) for v in saved[key]]
        if not values or not all(np.isfinite(values)) or width not in (None, len(values)):
            raise ValueError(f"inputs: {key} is not a list of numbers, one per group")
        width = len(values)
        out[key] = values
    background = saved.get("background")
    if background is not None:
        background = [float(v) for v in background]
        if len(background) != width or not all(np.isfinite(background)):
            raise ValueError("inputs: background is not a list of numbers, one per channel")
    out["background"] = background
    levels = saved.get("levels")
    if levels is not None:
        levels = [int(v) for v in levels]
        if len(levels) != width or min(levels) < 1:
            raise ValueError("inputs: levels is not a list of counts, one per column")
    out["levels"] = levels
    return out


def border_ring(images: np.ndarray) -> np.ndarray:
    """The outermost pixels of images (..., H, W), as (..., 2H + 2W - 4): their first and last
    rows and columns (every pixel of an image 2 pixels high or wide or less)."""
    if min(images.shape[-2:]) <= 2:
        return images.reshape(*images.shape[:-2], -1)
    top, bottom = images[..., 0, :], images[..., -1, :]
    left, right = images[..., 1:-1, 0], images[..., 1:-1, -1]
    return np.concatenate([top, bottom, left, right], axis=-1)


def differences(
    trained: dict,
    given: dict,
    *,
    source: str,
    names: Sequence[str] | None = None,
    pixel_max: float | None = None,
    polarity_fix: str | None = None,
) -> list[str]:
    """One sentence per way the inputs described by `given` differ from those a model was
    `trained` on, each with its fix; [] when they look alike. `names` name a table's columns
    (else "column j"), `pixel_max` is the training images' pixel maximum (None: not images).
    `polarity_fix` replaces the fix for reversed polarity ("invert them: 255 - x") where the
    inputs are not the caller's arrays (pictures whose inversion a flag forced)."""
    if trained.get("groups") != given.get("groups") or len(trained["min"]) != len(given["min"]):
        return []  # another shape: the caller's shape check speaks
    if trained["groups"] == "channel" or pixel_max is not None:
        return _image_differences(trained, given, source, pixel_max, polarity_fix)
    return _column_differences(trained, given, source, names)


def _largest(description: dict) -> float:
    return max(max(abs(v) for v in description["min"]), max(abs(v) for v in description["max"]))


def _image_differences(trained: dict, given: dict, source: str, pixel_max: float | None,
                       polarity_fix: str | None) -> list[str]:
    """Pixels share one unit, so images are judged as a whole: their scale, then polarity."""
    top, seen = _largest(trained), _largest(given)
    if seen == 0 or top == 0:
        return []
    found = []
    low, high = min(trained["min"]), max(trained["max"])
    span = high - low
    given_low = min(given["min"])
    if low >= 0 and given_low < -0.5 * seen and seen <= 1.05 and top >= 2:
        # symmetric values (-1..1) for a model trained on 0..top: the usual (x / 127.5 - 1)
        half = (pixel_max or top) / 2
        found.append(f"{source}: values range from {given_low:.3g} to {seen:.3g} where the training inputs"
                     f" range from {_fmt(low)} to {_fmt(high)}, so a model sees them out of scale: if they"
                     f" were mapped to -1..1, give them as they were: (x + 1) * {half:g}")
        return found
    if top / seen >= SCALE_FACTOR or seen / top >= SCALE_FACTOR:
        ratio = max(top, seen) / min(top, seen)
        if abs(ratio / 255 - 1) < 0.15 or (pixel_max and seen < top and abs(ratio / pixel_max - 1) < 0.15):
            factor = pixel_max if pixel_max and seen < top else 255.0
            fix = (f"if they were divided by {factor:g}, give them as they were: x * {factor:g}"
                   if seen < top else f"divide them by {factor:g}: x / {factor:g}")
        else:
            size = "smaller" if seen < top else "larger"
            fix = f"check their scale (they are {size} by a factor of about {ratio:.2g})"
        found.append(f"{source}: values reach {seen:.4g} where the training inputs reach {top:.4g}, so a"
                     f" model sees them out of scale: {fix}")
        return found  # polarity cannot be judged on another scale
    if span > 0 and (given_low < low - 0.25 * span or max(given["max"]) > high + 0.25 * span):
        found.append(f"{source}: values range from {given_low:.4g} to {max(given['max']):.4g} where the"
                     f" training inputs range from {_fmt(low)} to {_fmt(high)}; check how they were scaled"
                     " and shifted")
        return found
    if trained.get("background") and given.get("background") and span > 0:
        then = float(np.mean(trained["background"]))
        now = float(np.mean(given["background"]))
        middle = low + span / 2

        def shade(level: float) -> str:
            return "light" if level > middle else "dark"

        if shade(now) != shade(then) and abs(now - then) > 0.5 * span:
            fix = polarity_fix or f"invert them: {_fmt(pixel_max if pixel_max else low + high)} - x"
            found.append(
                f"{source}: the images' background is {shade(now)} ({now:.3g}) and the training images'"
                f" {shade(then)} ({then:.3g}), so their polarity is reversed; {fix}"
            )
    return found


def _column_differences(trained: dict, given: dict, source: str, names: Sequence[str] | None) -> list[str]:
    """A table's columns are judged one by one: far outside their training range, or held at
    one value where training varied."""
    def name(j: int) -> str:
        return repr(names[j]) if names and j < len(names) else f"column {j}"

    far, constant = [], []
    levels = trained.get("levels") or [LEVELS] * len(trained["min"])
    for j, (low, high, std) in enumerate(zip(trained["min"], trained["max"], trained["std"], strict=True)):
        span = high - low
        now = given["mean"][j]
        beyond = max(low - now, now - high, 0.0)
        reach = max(low - given["min"][j], given["max"][j] - high, 0.0)
        if beyond > RANGES_OFF * span and beyond > STDS_OFF * std and beyond > 0:
            far.append(f"{name(j)} averages {now:.4g} (training: {_fmt(low)} to {_fmt(high)})")
        elif reach > EXTREMES_OFF * span and reach > 2 * STDS_OFF * std and reach > 0:
            # the mean may stay in range while the values spread far beyond it (other units
            # around zero: a column times 100)
            far.append(f"{name(j)} ranges from {given['min'][j]:.4g} to {given['max'][j]:.4g}"
                       f" (training: {_fmt(low)} to {_fmt(high)})")
        elif (given["count"] >= CONSTANT_ROWS and given["min"][j] == given["max"][j] and high > low
              and levels[j] >= LEVELS):
            constant.append(f"{name(j)} is {_fmt(given['min'][j])} in every input (training: std {std:.3g})")
    found = []
    if far:
        found.append(f"{source}: {_count(far, 'column lies', 'columns lie')} far outside the training"
                     f" range: {'; '.join(far[:3])}{_more(far)}; check their units, order and scaling")
    if constant:
        found.append(f"{source}: {_count(constant, 'column holds', 'columns hold')} one value where"
                     f" training varied: {'; '.join(constant[:3])}{_more(constant)}; a filled-in default"
                     " makes the predictions those of a made-up sample")
    return found


def _count(items: list, one: str, many: str) -> str:
    return f"1 {one}" if len(items) == 1 else f"{len(items)} {many}"


def _more(items: list) -> str:
    return f"; and {len(items) - 3} more" if len(items) > 3 else ""


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def channels_last_hint(given: tuple[int, ...], expected: tuple[int, ...]) -> str | None:
    """The transpose that turns samples of shape `given` into `expected` where one layout of
    images is the other's (channels first (C, H, W) against last (H, W, C)); None otherwise.
    A reshape would scramble the pixels: only a transpose moves the channel axis."""
    if len(given) != 3 or len(expected) != 3 or given == expected:
        return None
    if given == (expected[1], expected[2], expected[0]):
        return (f"its samples are channels-last ({', '.join(map(str, given))}): move the channel axis"
                " first with x.transpose(0, 3, 1, 2)")
    if given == (expected[2], expected[0], expected[1]):
        return (f"its samples are channels-first ({', '.join(map(str, given))}): move the channel axis"
                " last with x.transpose(0, 2, 3, 1)")
    return None

"""Sweep files: a base training config and the values to try, validated before any trial runs.

    base: ../mnist_mlp.yaml            # a training config, relative to this file
    grid:                              # dotted keys as --set writes them; the cartesian product
      optimizer.lr: [0.05, 0.1, 0.2]
    random:                            # optional, instead of or beside grid
      trials: 20
      seed: 0                          # the draw of trials is itself reproducible
      space:
        optimizer.weight_decay: {loguniform: [1.0e-6, 1.0e-3]}
        model[2].dropout.p: {uniform: [0.0, 0.5]}
        model[0].linear.units: {choice: [256, 512, 1024]}
        train.epochs: {int: [5, 15]}
    seeds: [0, 1, 2]                   # each trial runs once per seed (default: the base's seed)
    metric: val_acc                    # from each run's metrics.csv: best over its epochs
    mode: max                          # default: max for *acc, min otherwise

Trials are the grid's product, then the random draws, each combined with every grid point
when both are given (grid points x random trials). Every key must be one a training config
takes; each trial's config is parsed and checked as `nncli train --set` would, and a mistake is
one line naming the sweep file, its line and the key.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from nncli.config.schema import load_config
from nncli.config.yamlsource import Source, load_yaml, parse_path
from nncli.errors import ConfigError
from nncli.registry import did_you_mean

KEYS = ("base", "grid", "random", "seeds", "metric", "mode")
RANDOM_KEYS = ("trials", "seed", "space")
DISTRIBUTIONS = ("uniform", "loguniform", "int", "choice")
METRICS = ("val_acc", "val_loss", "train_acc", "train_loss")


@dataclass(frozen=True)
class Trial:
    """One point of the sweep: `values` maps each varied key to its value."""

    index: int
    values: dict[str, Any]

    def overrides(self) -> list[str]:
        """As `--set KEY=VALUE` arguments (values written as YAML flow)."""
        return [f"{key}={_yaml(value)}" for key, value in self.values.items()]

    def label(self) -> str:
        return ", ".join(f"{key}={_yaml(value)}" for key, value in self.values.items()) or "base"


@dataclass(frozen=True)
class Sweep:
    path: Path
    name: str
    base: Path
    trials: tuple[Trial, ...]
    seeds: tuple[int, ...]
    metric: str
    mode: str
    varied: tuple[str, ...]  # the keys that change between trials, in file order


def _yaml(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True, width=10_000).strip().removesuffix("\n...")


def load_sweep(path: str | Path) -> Sweep:
    """Read and validate a sweep file; `ConfigError` naming the file, line and key otherwise."""
    source = load_yaml(path)
    raw = source.data
    if not isinstance(raw, dict):
        raise source.error((), f"expected a mapping of {', '.join(KEYS)}")
    for key in raw:
        if key not in KEYS:
            raise source.error((key,), f"unknown key{did_you_mean(str(key), list(KEYS))}; valid keys:"
                                       f" {', '.join(KEYS)}")
    if "base" not in raw or not isinstance(raw["base"], str) or not raw["base"]:
        raise source.error(("base",) if "base" in raw else (), "expected base: the training config"
                                                               " to sweep, relative to this file")
    base = (Path(path).resolve().parent / raw["base"]).resolve()
    if not base.is_file():
        raise source.error(("base",), f"{base} does not exist")
    if "grid" not in raw and "random" not in raw:
        raise source.error((), "expected a grid, a random search, or both")

    grid = _grid(source, raw.get("grid"))
    random = _random(source, raw.get("random"))
    points = [dict(zip(grid, combo, strict=True)) for combo in itertools.product(*grid.values())]
    draws = random if random else [{}]
    trials = tuple(Trial(i, {**point, **draw}) for i, (point, draw) in
                   enumerate(itertools.product(points, draws)))
    varied = tuple(dict.fromkeys(key for trial in trials for key in trial.values))

    seeds = raw.get("seeds")
    if seeds is None:
        seeds = [load_config(base).seed]
    if (not isinstance(seeds, list) or not seeds
            or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds)):
        raise source.error(("seeds",), f"expected a list of seeds (integers >= 0), got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise source.error(("seeds",), f"a seed is given twice in {seeds}")

    metric = raw.get("metric", "val_acc")
    if metric not in METRICS:
        raise source.error(("metric",), f"expected one of {', '.join(METRICS)}, got {metric!r}"
                                        f"{did_you_mean(str(metric), list(METRICS))}")
    mode = raw.get("mode", "max" if metric.endswith("acc") else "min")
    if mode not in ("min", "max"):
        raise source.error(("mode",), f"expected min or max, got {mode!r}")

    for trial in trials:  # every trial must be a config `nncli train` takes
        _check_trial(source, base, trial, seeds[0])
    return Sweep(Path(path), Path(path).stem, base, trials, tuple(seeds), metric, mode, varied)


def _grid(source: Source, spec: Any) -> dict[str, list]:
    if spec is None:
        return {}
    if not isinstance(spec, dict) or not spec:
        raise source.error(("grid",), "expected a mapping of keys to lists of values, like"
                                      " {optimizer.lr: [0.05, 0.1]}")
    for key, values in spec.items():
        _key(source, ("grid", key), key)
        if not isinstance(values, list) or not values:
            raise source.error(("grid", key), f"expected a non-empty list of values, got {values!r}")
    return dict(spec)


def _random(source: Source, spec: Any) -> list[dict[str, Any]]:
    if spec is None:
        return []
    if not isinstance(spec, dict):
        raise source.error(("random",), "expected a mapping with trials, seed and space")
    for key in spec:
        if key not in RANDOM_KEYS:
            raise source.error(("random", key), f"unknown key{did_you_mean(str(key), list(RANDOM_KEYS))};"
                                                f" valid keys: {', '.join(RANDOM_KEYS)}")
    trials = spec.get("trials")
    if not isinstance(trials, int) or isinstance(trials, bool) or trials <= 0:
        raise source.error(("random", "trials"), f"expected a positive number of trials, got {trials!r}")
    seed = spec.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise source.error(("random", "seed"), f"expected an integer >= 0, got {seed!r}")
    space = spec.get("space")
    if not isinstance(space, dict) or not space:
        raise source.error(("random", "space"), "expected a mapping of keys to distributions, like"
                                                " {optimizer.lr: {loguniform: [1.0e-3, 1.0e-1]}}")
    samplers = {key: _distribution(source, ("random", "space", key), key, d) for key, d in space.items()}
    rng = np.random.default_rng(seed)
    # draws in trial order, then key order: adding trials keeps the earlier ones
    return [{key: sample(rng) for key, sample in samplers.items()} for _ in range(trials)]


def _distribution(source: Source, path: tuple, key: str, spec: Any):
    _key(source, path, key)
    if not isinstance(spec, dict) or len(spec) != 1:
        raise source.error(path, f"expected one of {{{', '.join(f'{d}: ...' for d in DISTRIBUTIONS)}}},"
                                 f" got {spec!r}")
    ((kind, args),) = spec.items()
    where = (*path, kind)
    if kind not in DISTRIBUTIONS:
        raise source.error(where, f"unknown distribution{did_you_mean(str(kind), list(DISTRIBUTIONS))};"
                                  f" valid: {', '.join(DISTRIBUTIONS)}")
    if kind == "choice":
        if not isinstance(args, list) or not args:
            raise source.error(where, f"expected a non-empty list of values, got {args!r}")
        return lambda rng: args[int(rng.integers(len(args)))]
    if (not isinstance(args, list) or len(args) != 2
            or not all(isinstance(a, int | float) and not isinstance(a, bool) and math.isfinite(a)
                       for a in args)):
        raise source.error(where, f"expected bounds [low, high], got {args!r}")
    low, high = args
    if not low < high:
        raise source.error(where, f"expected low < high, got [{low}, {high}]")
    if kind == "loguniform":
        if low <= 0:
            raise source.error(where, f"expected positive bounds for a log scale, got [{low}, {high}]")
        return lambda rng: float(math.exp(rng.uniform(math.log(low), math.log(high))))
    if kind == "int":
        if not (isinstance(low, int) and isinstance(high, int)):
            raise source.error(where, f"expected integer bounds, got [{low}, {high}]")
        return lambda rng: int(rng.integers(low, high + 1))  # both ends included
    return lambda rng: float(rng.uniform(low, high))


def _key(source: Source, path: tuple, key: Any) -> None:
    if not isinstance(key, str):
        raise source.error(path, f"expected a dotted key like optimizer.lr, got {key!r}")
    try:
        parse_path(key)
    except ValueError as err:
        raise source.error(path, f"not a key like model[0].linear.units: {err}") from None


def _check_trial(source: Source, base: Path, trial: Trial, seed: int) -> None:
    """Parse the trial's config, and construct its layers, loss, optimizer and schedule (their
    options' values are checked there), as `nncli train` would before loading any data."""
    from nncli.nn import LAYERS, LOSSES, OPTIMIZERS, SCHEDULES

    try:
        config = load_config(base, [*trial.overrides(), f"seed={seed}"])
        parts = [(spec, LAYERS) for spec in config.model]
        parts += [(config.loss, LOSSES), (config.optimizer, OPTIMIZERS), (config.schedule, SCHEDULES)]
        for spec, registry in parts:
            with config.located(spec.path):
                registry.create(spec.type, dict(spec.options))
    except ConfigError as err:
        # point at the sweep file's line of the key the error is about
        about = [key for key in trial.values if (err.key or "").startswith(key) or key in err.message]
        key = about[0] if about else next(iter(trial.values), None)
        paths = [("grid", key), ("random", "space", key)]
        where = next((path for path in paths if path in source.lines), ())
        raise source.error(where, f"{err.message} (for {trial.label()})") from None

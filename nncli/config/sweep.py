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
    prune: {rule: asha, grace: 1, eta: 3, max_epochs: 27}   # optional: stop bad trials early
    prune: {rule: median, warmup: 5, from_epoch: 2}         # (one or the other)

Trials are the grid's product, then the random draws, each combined with every grid point
when both are given (grid points x random trials). Every key must be one a training config
takes; each trial's config is parsed and checked as `nncli train --set` would, and a mistake is
one line naming the sweep file, its line and the key.

The number of trials is counted before any is made: more than `MAX_TRIALS` need `max_trials`
(`nncli sweep --max-trials N`), and no sweep has more than `TRIALS_CEILING`. Two trials that
would be one run are refused, naming the keys: a value given twice in a grid list (`0.01` and
`0.010` are one number), `seed` as a swept key (the seeds are `seeds:`), random draws that
repeat, or values that resolve to the same config.

`prune` (`Prune`) stops trials that are behind, on the sweep's metric and mode (see
`nncli.commands.sweep_prune`): `asha` at the rungs grace * eta^k epochs below max_epochs
(default: the longest trial's train.epochs), `median` at every epoch from from_epoch on once
warmup trials have finished.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from nncli.config.schema import load_config
from nncli.config.yamlsource import Source, load_yaml, parse_path
from nncli.errors import ConfigError
from nncli.messages import count as plural
from nncli.messages import did_you_mean
from nncli.validate import MAX_SEED, shown

KEYS = ("base", "grid", "random", "seeds", "metric", "mode", "prune")
PRUNE_KEYS = {"asha": ("rule", "grace", "eta", "max_epochs"), "median": ("rule", "warmup", "from_epoch")}
RANDOM_KEYS = ("trials", "seed", "space")
DISTRIBUTIONS = ("uniform", "loguniform", "int", "choice")
METRICS = ("val_acc", "val_loss", "train_acc", "train_loss")
MAX_TRIALS = 1_000  # more need max_trials (--max-trials)
TRIALS_CEILING = 1_000_000  # what max_trials may allow
INT64 = (-(2**63), 2**63 - 2)  # the bounds an `int` distribution may take (both ends included)


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
class Prune:
    """A sweep's pruning rule: `asha` (grace, eta, max_epochs) or `median` (warmup, from_epoch)."""

    rule: str
    grace: int = 1
    eta: int = 3
    max_epochs: int = 0
    warmup: int = 5  # median: trials finished before any is pruned
    from_epoch: int = 1  # median: the first epoch at which a trial may be pruned

    def rungs(self) -> tuple[int, ...]:
        """asha: the epochs at which trials are compared, grace * eta^k below max_epochs."""
        rungs, epoch = [], self.grace
        while epoch < self.max_epochs:
            rungs.append(epoch)
            epoch *= self.eta
        return tuple(rungs)

    def describe(self) -> str:
        if self.rule == "asha":
            return (f"asha (grace {self.grace}, eta {self.eta}, max_epochs {self.max_epochs}:"
                    f" rungs at epochs {', '.join(map(str, self.rungs()))})")
        return f"median (warmup {plural(self.warmup, 'trial')}, from epoch {self.from_epoch})"


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
    prune: Prune | None = None


def short_keys(keys) -> dict[str, str]:
    """What a picture calls each key: its last name (`optimizer.lr` -> `lr`,
    `model[0].linear.units` -> `units`), or the whole key where two keys share that name."""
    last = {key: re.split(r"[.\]\[]", key.rstrip("]"))[-1] or key for key in keys}
    return {key: name if list(last.values()).count(name) == 1 else key for key, name in last.items()}


def trial_names(sweep: Sweep) -> dict[int, str]:
    """Each trial (by index) named by the values that tell it from the others: "lr=0.03, units=64"
    (keys that take one value in every trial are left out; "base" where none varies)."""
    changing = [key for key in sweep.varied
                if len({_yaml(trial.values.get(key)) for trial in sweep.trials}) > 1]
    short = short_keys(changing)
    return {
        trial.index: ", ".join(f"{short[key]}={_yaml(trial.values[key])}"
                               for key in changing if key in trial.values) or "base"
        for trial in sweep.trials
    }


def _yaml(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True, width=10_000).strip().removesuffix("\n...")


def load_sweep(path: str | Path, max_trials: int | None = None, say=None) -> Sweep:
    """Read and validate a sweep file; `ConfigError` naming the file, line and key otherwise.
    More than `MAX_TRIALS` trials need `max_trials`; `say` hears the count before the trials'
    configs are checked where there are more than a hundred (a second or more of checking)."""
    if max_trials is not None and not 1 <= max_trials <= TRIALS_CEILING:
        raise ConfigError(f"--max-trials takes 1 to {TRIALS_CEILING:,}, got {max_trials}")
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
    draw = _random(source, raw.get("random"))
    points_count = math.prod(len(values) for values in grid.values())
    random_count = raw["random"]["trials"] if draw else 1
    _check_count(source, points_count, random_count, max_trials)

    seeds = raw.get("seeds")
    if seeds is None:
        seeds = [load_config(base).seed]
    if (not isinstance(seeds, list) or not seeds
            or not all(isinstance(s, int) and not isinstance(s, bool) and 0 <= s <= MAX_SEED
                       for s in seeds)):
        given = repr(seeds) if len(repr(seeds)) < 200 else "other values"
        raise source.error(("seeds",), f"expected a list of seeds (integers from 0 to 2^63 - 1), got {given}")
    if len(set(seeds)) != len(seeds):
        raise source.error(("seeds",), f"a seed is given twice in {seeds}")
    count = points_count * random_count
    if say is not None and count > 100:
        say(f"{path}: {plural(count, 'trial')} x {plural(len(seeds), 'seed')} ="
            f" {plural(count * len(seeds), 'run')}; checking each trial's config")

    points = [dict(zip(grid, combo, strict=True)) for combo in itertools.product(*grid.values())]
    draws = draw(random_count) if draw else [{}]
    trials = tuple(Trial(i, {**point, **drawn}) for i, (point, drawn) in
                   enumerate(itertools.product(points, draws)))
    varied = tuple(dict.fromkeys(key for trial in trials for key in trial.values))

    metric = raw.get("metric", "val_acc")
    if metric not in METRICS:
        raise source.error(("metric",), f"expected one of {', '.join(METRICS)}, got {metric!r}"
                                        f"{did_you_mean(str(metric), list(METRICS))}")
    mode = raw.get("mode", "max" if metric.endswith("acc") else "min")
    if mode not in ("min", "max"):
        raise source.error(("mode",), f"expected min or max, got {mode!r}")

    resolved: dict[str, Trial] = {}
    for trial in trials:  # every trial must be a config `nncli train` takes, and a run of its own
        digest = _check_trial(source, base, trial, seeds[0])
        if digest in resolved:
            _same_run(source, resolved[digest], trial)
        resolved[digest] = trial
    prune = _prune(source, raw.get("prune"), base, trials) if "prune" in raw else None
    return Sweep(Path(path), Path(path).stem, base, trials, tuple(seeds), metric, mode, varied, prune)


def _prune(source: Source, spec: Any, base: Path, trials: tuple[Trial, ...]) -> Prune:
    """The `prune:` mapping checked; asha's max_epochs defaults to the longest trial's epochs."""
    rules = ", ".join(PRUNE_KEYS)
    if not isinstance(spec, dict) or spec.get("rule") not in PRUNE_KEYS:
        given = spec.get("rule") if isinstance(spec, dict) else spec
        where = ("prune", "rule") if isinstance(spec, dict) and "rule" in spec else ("prune",)
        hint = did_you_mean(str(given), list(PRUNE_KEYS)) if isinstance(given, str) else ""
        raise source.error(where, f"expected a rule: {rules} (like {{rule: asha, grace: 1, eta: 3}}),"
                                  f" got {shown(given)}{hint}")
    rule = spec["rule"]
    for key in spec:
        if key not in PRUNE_KEYS[rule]:
            other = [r for r, keys in PRUNE_KEYS.items() if key in keys and r != rule]
            why = (f"{key} is a key of the {other[0]} rule" if other
                   else f"unknown key{did_you_mean(str(key), list(PRUNE_KEYS[rule]))}")
            raise source.error(("prune", key), f"{why}; the {rule} rule takes"
                                               f" {', '.join(PRUNE_KEYS[rule][1:])}")

    def number(key: str, default: int, low: int) -> int:
        value = spec.get(key, default)
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= 1_000_000:
            raise source.error(("prune", key), f"expected an integer from {low} to 1,000,000, got"
                                               f" {shown(value)}")
        return value

    if rule == "median":
        return Prune(rule, warmup=number("warmup", 5, 0), from_epoch=number("from_epoch", 1, 1))
    grace, eta = number("grace", 1, 1), number("eta", 3, 2)
    given = "max_epochs" in spec
    if not given:  # the longest trial's (their configs were checked above)
        spec = {**spec, "max_epochs": max(load_config(base, trial.overrides()).train.epochs
                                          for trial in trials)}
    max_epochs = number("max_epochs", 0, 1)
    prune = Prune(rule, grace=grace, eta=eta, max_epochs=max_epochs)
    if not prune.rungs():
        where = ("prune", "max_epochs") if given else ("prune", "grace")
        raise source.error(where, f"grace {grace} is not below max_epochs {max_epochs}: there would be"
                                  " no rung at which to compare trials")
    return prune


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
        seen: dict = {}
        for i, value in enumerate(values):
            same = seen.setdefault(_same_as(value), i)
            if same != i:
                raise source.error(("grid", key, i), f"item {i} ({_yaml(value)}) is the same value as item"
                                   f" {same} ({_yaml(values[same])}): their trials would be one run;"
                                   " give each value once")
    return dict(spec)


def _random(source: Source, spec: Any):
    """None without a random search; else `draw(count)`, the first `count` trials' values."""
    if spec is None:
        return None
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
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed <= MAX_SEED:
        raise source.error(("random", "seed"), f"expected an integer from 0 to 2^63 - 1, got {shown(seed)}")
    space = spec.get("space")
    if not isinstance(space, dict) or not space:
        raise source.error(("random", "space"), "expected a mapping of keys to distributions, like"
                                                " {optimizer.lr: {loguniform: [1.0e-3, 1.0e-1]}}")
    samplers = {key: _distribution(source, ("random", "space", key), key, d) for key, d in space.items()}

    def draw(count: int) -> list[dict[str, Any]]:
        rng = np.random.default_rng(seed)
        # draws in trial order, then key order: adding trials keeps the earlier ones
        return [{key: sample(rng) for key, sample in samplers.items()} for _ in range(count)]

    return draw


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
            or not all(isinstance(a, int | float) and not isinstance(a, bool) for a in args)):
        raise source.error(where, f"expected bounds [low, high], got {args!r}")
    if kind == "int" and not all(isinstance(a, int) and INT64[0] <= a <= INT64[1] for a in args):
        raise source.error(where, f"expected integer bounds from -2^63 to 2^63 - 2, got"
                                  f" [{shown(args[0])}, {shown(args[1])}]")
    if not all(abs(a) <= 1e300 for a in args):  # an int past a float's range, inf, nan
        raise source.error(where, f"expected finite bounds, got [{shown(args[0])}, {shown(args[1])}]")
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
        parsed = parse_path(key)
    except ValueError as err:
        raise source.error(path, f"not a key like model[0].linear.units: {err}") from None
    if parsed == ("seed",):
        raise source.error(path, "the seed is not a key to sweep (each run's seed comes from seeds:, and"
                                 " these trials would all be one run): list them as seeds: [0, 1, 2]")


def _check_count(source: Source, points: int, draws: int, max_trials: int | None) -> None:
    """Refuse, before any trial is made, more trials than `max_trials` (or `MAX_TRIALS`)."""
    count = points * draws
    limit = MAX_TRIALS if max_trials is None else max_trials
    if count <= limit:
        return
    parts = [f"{points:,} grid points"] if points > 1 or draws == 1 else []
    parts += [f"{draws:,} random trials"] if draws > 1 else []
    where = ("random", "trials") if draws > points else ("grid",)
    what = f"{count:,} trials ({' x '.join(parts)})" if len(parts) > 1 else f"{count:,} trials"
    if count > TRIALS_CEILING:
        raise source.error(where, f"{what}: more than a sweep may have, {TRIALS_CEILING:,}")
    if max_trials is None:
        raise source.error(where, f"{what}: more than {MAX_TRIALS:,} need --max-trials"
                                  f" (--max-trials {count} to run them all)")
    raise source.error(where, f"{what}: more than --max-trials {max_trials:,}")


def _same_as(value: Any) -> Any:
    """What makes two values one: numbers equal as numbers (0.01 and 0.010, 1 and 1.0), but
    true is not 1; lists and mappings by their items."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return (type(value).__name__, value)
    if isinstance(value, int | float):
        return ("number", value)
    if isinstance(value, list):
        return ("list", tuple(_same_as(v) for v in value))
    if isinstance(value, dict):
        return ("mapping", tuple(sorted((str(k), _same_as(v)) for k, v in value.items())))
    return ("other", repr(value))


def _same_run(source: Source, first: Trial, second: Trial) -> None:
    """Two trials resolve to one config: name the keys whose values differ yet come to the same."""
    keys = [key for key in second.values if _same_as(first.values.get(key)) != _same_as(second.values[key])]
    paths = [path for key in keys or second.values for path in (("grid", key), ("random", "space", key))
             if path in source.lines]
    where = paths[0] if paths else ()
    head = f"trials {first.index} and {second.index} would be one run"
    if not keys:  # random draws that repeat
        raise source.error(where, f"{head}: the random search draws {second.label()} twice (a small choice"
                                  " or int space repeats its draws: fewer trials, or a grid)")
    pairs = "; ".join(f"{key}: {_yaml(first.values.get(key))} and {_yaml(second.values[key])}"
                      for key in keys)
    raise source.error(where, f"{head}: their configs resolve the same ({pairs})")


def _check_trial(source: Source, base: Path, trial: Trial, seed: int) -> str:
    """Parse the trial's config, and construct its layers, loss, optimizer and schedule (their
    options' values are checked there), as `nncli train` would before loading any data; a
    digest of the resolved config."""
    from nncli.nn import LAYERS, LOSSES, OPTIMIZERS, SCHEDULES

    try:
        config = load_config(base, [*trial.overrides(), f"seed={seed}"], overrides_label="the trial's")
        parts = [(spec, LAYERS) for spec in config.model]
        parts += [(config.loss, LOSSES), (config.optimizer, OPTIMIZERS), (config.schedule, SCHEDULES)]
        for spec, registry in parts:
            with config.located(spec.path):
                registry.create(spec.type, dict(spec.options))
        text = json.dumps(config.to_dict(), sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()
    except ConfigError as err:
        # point at the sweep file's line of the key the error is about
        about = [key for key in trial.values if (err.key or "").startswith(key) or key in err.message]
        key = about[0] if about else next(iter(trial.values), None)
        paths = [("grid", key), ("random", "space", key)]
        where = next((path for path in paths if path in source.lines), ())
        raise source.error(where, f"{err.message} (for {trial.label()})") from None

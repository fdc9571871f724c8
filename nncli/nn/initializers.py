"""Weight initializers, registered under their YAML names.

In YAML an initializer is a name (`init: he`) or a mapping (`init: {type: normal, scale: 0.01}`).
Each is called as `init(shape, fan_in, fan_out, rng, dtype)` and returns a new array.
"""

from __future__ import annotations

import math

import numpy as np

from nncli import validate
from nncli.errors import ConfigError
from nncli.registry import Registry

INITIALIZERS: Registry[type[Initializer]] = Registry("initializer")

_DISTRIBUTIONS = ("uniform", "normal")


class Initializer:
    def __call__(self, shape, fan_in: int, fan_out: int, rng: np.random.Generator, dtype):
        raise NotImplementedError

    def get_config(self) -> dict:
        return {}


class _VarianceScaling(Initializer):
    """Draws with variance `gain / fan`, uniform on [-a, a] (a = sqrt(3 var)) or normal."""

    gain = 1.0
    default_distribution = "normal"

    def __init__(self, distribution: str | None = None):
        self.distribution = validate.one_of(
            "distribution", distribution or self.default_distribution, _DISTRIBUTIONS
        )

    def fan(self, fan_in: int, fan_out: int) -> float:
        return fan_in

    def __call__(self, shape, fan_in, fan_out, rng, dtype):
        std = math.sqrt(self.gain / self.fan(fan_in, fan_out))
        if self.distribution == "uniform":
            limit = math.sqrt(3.0) * std
            return rng.uniform(-limit, limit, size=shape).astype(dtype, copy=False)
        return (rng.standard_normal(size=shape) * std).astype(dtype, copy=False)

    def get_config(self) -> dict:
        return {"distribution": self.distribution}


@INITIALIZERS.register("normal")
class Normal(Initializer):
    """N(0, scale^2): the tutorials' `weight_scale`."""

    def __init__(self, scale: float = 0.01):
        self.scale = validate.positive_float("scale", scale)

    def __call__(self, shape, fan_in, fan_out, rng, dtype):
        return (rng.standard_normal(size=shape) * self.scale).astype(dtype, copy=False)

    def get_config(self) -> dict:
        return {"scale": self.scale}


@INITIALIZERS.register("xavier", "glorot")
class Xavier(_VarianceScaling):
    """Variance 2 / (fan_in + fan_out) (Glorot & Bengio, 2010); uniform by default."""

    gain = 2.0
    default_distribution = "uniform"

    def fan(self, fan_in, fan_out):
        return fan_in + fan_out


@INITIALIZERS.register("he", "kaiming")
class He(_VarianceScaling):
    """Variance 2 / fan_in (He et al., 2015), for ReLU networks; normal by default."""

    gain = 2.0


@INITIALIZERS.register("lecun")
class LeCun(_VarianceScaling):
    """Variance 1 / fan_in (LeCun et al., 1998); normal by default."""


@INITIALIZERS.register("zeros")
class Zeros(Initializer):
    def __call__(self, shape, fan_in, fan_out, rng, dtype):
        return np.zeros(shape, dtype=dtype)


def get_initializer(spec) -> Initializer:
    """An initializer from its YAML form: a name, a mapping with `type`, or an instance."""
    if isinstance(spec, Initializer):
        return spec
    if isinstance(spec, str):
        try:
            return INITIALIZERS.create(spec)
        except ConfigError as err:
            raise err.at("init") from None
    if isinstance(spec, dict) and "type" in spec:
        options = {k: v for k, v in spec.items() if k != "type"}
        try:
            return INITIALIZERS.create(spec["type"], options)
        except ConfigError as err:
            raise err.at("init") from None
    raise ConfigError(f"expected an initializer name or a mapping with 'type', got {spec!r}", key="init")


def initializer_config(init: Initializer):
    """The YAML form of `init`: its name alone when it has no arguments."""
    options = init.get_config()
    name = type(init).registered_name
    return {"type": name, **options} if options else name

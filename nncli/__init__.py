"""nncli: neural networks written from scratch in numpy, trained from YAML files.

The Python API (`nncli.train`, `nncli.load`, `nncli.lr_find`, `nncli.Model`, `nncli.Run`; see nncli/api.py) is
imported on first use, so that `import nncli` and the command line's start stay light.
"""

# First thing, and in the command only: a Ctrl-C while the command's modules are imported is
# noted, never a traceback from inside an import (see nncli/_startup.py)
from nncli import _startup  # noqa: F401, I001  (it must come first)
from nncli import _openblas

_openblas.apply()  # before anything imports numpy: see nncli/_openblas.py

from nncli.errors import CheckpointError, ConfigError, DataError, NncliError  # noqa: E402

__version__ = "0.1.0"

_API = ("train", "load", "lr_find", "Model", "Run")
__all__ = [*_API, "NncliError", "ConfigError", "DataError", "CheckpointError"]


def __getattr__(name: str):
    if name in _API:
        from nncli import api

        return getattr(api, name)
    raise AttributeError(f"module 'nncli' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])

"""nncli: neural networks written from scratch in numpy, trained from YAML files."""

from nncli import _openblas

_openblas.apply()  # before anything imports numpy: see nncli/_openblas.py

__version__ = "0.1.0"

"""nncli: neural networks written from scratch in numpy, trained from YAML files."""

__version__ = "0.1.0"

"""Datasets: loaders registered by YAML name, preprocessing, validation split and batches.

Importing this package registers every dataset in `DATASETS`.
"""

from nncli.data import cifar, mnist, synthetic, tabular  # noqa: F401  (registers the loaders)
from nncli.data.datasets import DATASETS, DatasetInfo, RawData, resolve_data_dir
from nncli.data.pipeline import Preprocessor, Splits, iterate_batches, load_data

__all__ = [
    "DATASETS",
    "DatasetInfo",
    "Preprocessor",
    "RawData",
    "Splits",
    "iterate_batches",
    "load_data",
    "resolve_data_dir",
]

"""Datasets: loaders registered by YAML name, preprocessing, validation split and batches.

Importing this package registers every dataset in `DATASETS`.
"""

from nncli.data import cifar, mnist, synthetic, tabular  # noqa: F401  (registers the loaders)
from nncli.data.datasets import DATASETS, DatasetInfo, RawData, resolve_data_dir

__all__ = [
    "DATASETS",
    "DatasetInfo",
    "RawData",
    "resolve_data_dir",
]

"""Datasets: loaders registered by YAML name, preprocessing, validation split, batches and
image augmentation (`AUGMENTATIONS`).

Importing this package registers every dataset in `DATASETS`.
"""

from nncli.data import arrays, cifar, mnist, synthetic, tables  # noqa: F401  (registers the loaders)
from nncli.data.augment import AUGMENTATIONS, Augmenter
from nncli.data.datasets import DATASETS, DatasetInfo, RawData, resolve_data_dir
from nncli.data.pipeline import Splits, iterate_batches, load_data
from nncli.data.preprocess import Preprocessor

__all__ = [
    "AUGMENTATIONS",
    "DATASETS",
    "Augmenter",
    "DatasetInfo",
    "Preprocessor",
    "RawData",
    "Splits",
    "iterate_batches",
    "load_data",
    "resolve_data_dir",
]

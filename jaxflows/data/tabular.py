"""Vector (tabular) datasets: 2-D toys, an offline real default, and the MAF paper's five sets.

Every source here is a random-access sequence of records ``{"image": float32 [D], "label":
int}`` (:class:`VectorSource`): the key ``"image"`` holds *the example* for every source
of :mod:`jaxflows.data` (so the loader, the trainer and the evaluation code share one
path), and for vector sources it is a float32 vector that is used as it is: no
dequantisation, no pixel preprocessing. The trainer scores such data in nats per
dimension and reports the test log-likelihood in nats per example (the figure of the
MAF / NAF / NSF tables); bits/dim are not reported for them.

Names (``jaxflows.data.get_source(name, split)`` / ``get_info(name)``), base splits
``train`` / ``validation`` / ``test`` (TFDS slicing such as ``"train[:50%]"`` applies):

=====================  ====  ================================  =================================
name                   D     splits (train / validation / test)  source
=====================  ====  ================================  =================================
``two_moons``,         2     20,000 / 5,000 / 5,000           :mod:`jaxflows.data.toy2d`, drawn
``8gaussians``,                                                once with fixed keys (0, 1, 2)
``grid_gaussians``,
``checkerboard``,
``pinwheel``,
``spirals``
``breast_cancer``      24    455 / 57 / 57                    scikit-learn's bundled Wisconsin
                                                               breast cancer data (offline)
``power``              6     1,659,917 / 184,435 / 204,928    MAF files in ``data_dir``
``gas``                8     852,174 / 94,685 / 105,206       MAF files in ``data_dir``
``hepmass``            21    315,123 / 35,013 / 174,987       MAF files in ``data_dir``
``miniboone``          43    29,556 / 3,284 / 3,648           MAF files in ``data_dir``
``bsds300``            63    1,000,000 / 50,000 / 250,000     MAF files in ``data_dir``
=====================  ====  ================================  =================================

Preprocessing of the five MAF sets (Papamakarios et al. 2017, App. D; read from the
reference code, github.com/gpapamak/maf, ``datasets/*.py``), on the files of the
MAF data release (https://zenodo.org/record/1161203, ``data.tar.gz``) unpacked into
``data_dir`` (``data_dir/power/data.npy``, ...):

* **POWER** (``power/data.npy``, 8 columns): rows shuffled with
  ``numpy.random.RandomState(42)``; columns 3 and 1 deleted (global reactive power,
  global intensity); uniform noise added to break ties, drawn from the same generator in
  this order: ``0.01 U`` on the voltage column, ``0.001 U`` on the gap column, ``U`` on
  each of the three sub-metering columns, none on the time column; the last 10% of the
  rows (``int(0.1 N)``) are the test split, the last 10% of the rest the validation
  split; standardised with the mean and standard deviation of train + validation.
* **GAS** (``gas/ethylene_CO.pickle``, a pandas DataFrame; needs ``pandas``): columns
  ``Meth``, ``Eth`` and ``Time`` dropped; then, while some column has a correlation
  above 0.98 with another one, the first such column is dropped; standardised with the
  whole file's mean and (ddof=1) standard deviation; test = last 10%, validation = last
  10% of the rest.
* **HEPMASS** (``hepmass/1000_train.csv``, ``hepmass/1000_test.csv``; header line, first
  column the class label): only rows of class 1 kept; the label column dropped, and the
  test file's last column too (the reference's "the data set is messed up"); standardised
  with the training file's mean and (ddof=1) standard deviation; features removed whose
  *smallest* value occurs more than 5 times in the training file (the reference computes
  ``sorted(Counter(feature).items())[0]``, the count of the smallest value, under the name
  ``max_count``; kept as written); the last 10% of the training file is the validation
  split.
* **MINIBOONE** (``miniboone/data.npy``, 43 columns, already cleaned by the authors):
  test = last 10%, validation = last 10% of the rest, standardised with train +
  validation statistics.
* **BSDS300** (``BSDS300/BSDS300.hdf5`` with datasets ``train``, ``validation``, ``test``
  of 63 columns; needs ``h5py``): used as stored.

A missing file raises ``FileNotFoundError`` saying where to get it and where to put it; a
file with a NaN (or inf) or a wrong number of columns raises ``ValueError`` naming the
file and the column.

The offline default ``breast_cancer`` (569 examples of 30 features, no network) follows
the same rules: the features whose most frequent value occurs more than 5 times are
dropped (HEPMASS's rule, here with the true most frequent value: six concavity features
that are exactly 0 for 13 patients, which a density model could otherwise exploit as
point masses), the rows are shuffled with ``RandomState(0)`` and split 80/10/10, and
every split is standardised with the training split's mean and (ddof=0) standard
deviation.
"""
from __future__ import annotations

import collections
import dataclasses
import functools
import os
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import numpy as np

__all__ = ["VectorSource", "VECTOR_DATASETS", "TOY_SPLIT_SIZES", "MAF_DOWNLOAD_URL",
           "is_vector_dataset", "vector_splits", "check_table", "load_power", "load_gas",
           "load_hepmass", "load_miniboone", "load_bsds300", "load_sklearn"]

MAF_DOWNLOAD_URL = "https://zenodo.org/record/1161203 (data.tar.gz)"
TOY_SPLIT_SIZES = {"train": 20000, "validation": 5000, "test": 5000}
_BASE_SPLITS = ("train", "validation", "test")


class VectorSource:
    """A random-access source over an in-memory float32 array ``[N, D]``.

    ``source[i]`` is ``{"image": float32 [D], "label": int}`` (``"image"`` is the
    example key shared with image sources, see the module docstring) and
    ``source.get_batch(indices)`` the stacked arrays (``label`` int32).

    Args:
      x: a finite floating-point array ``[N, D]``.
      labels: optional integer labels ``[N]`` (default 0).
      name: what to call the data in error messages.
    """

    def __init__(self, x, labels=None, *, name: str = "x"):
        x = np.asarray(x)
        if x.ndim != 2 or not np.issubdtype(x.dtype, np.floating):
            raise ValueError(f"{name}: expected a floating-point array [N, D], got "
                             f"{x.dtype} {x.shape}.")
        check_table(x, name)
        x = np.ascontiguousarray(x, np.float32)
        if labels is None:
            labels = np.zeros(x.shape[0], np.int32)
        labels = np.asarray(labels)
        if labels.shape != (x.shape[0],) or not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"labels: expected an integer array of shape ({x.shape[0]},), "
                             f"got {labels.dtype} {labels.shape}.")
        self.x, self.labels = x, labels.astype(np.int32)
        self.x.setflags(write=False)
        self.labels.setflags(write=False)

    def __len__(self) -> int:
        return self.x.shape[0]

    def __getitem__(self, index: int) -> Dict[str, Any]:
        return {"image": self.x[index], "label": int(self.labels[index])}

    def get_batch(self, indices) -> Dict[str, np.ndarray]:
        """Records ``indices`` stacked: ``{"image": float32 [n, D], "label": int32 [n]}``."""
        indices = np.asarray(indices, dtype=np.int64)
        return {"image": self.x[indices], "label": self.labels[indices]}

    @property
    def image_shape(self) -> Tuple[int]:
        """``(D,)``: the event shape of one example."""
        return (self.x.shape[1],)

    def __repr__(self) -> str:
        return f"VectorSource(num_records={len(self)}, dim={self.x.shape[1]})"


def check_table(x: np.ndarray, path: str, columns: Optional[int] = None) -> np.ndarray:
    """``x`` if it is a finite 2-D table with ``columns`` columns (when given).

    Raises:
      ValueError: naming ``path`` and the first column holding a NaN or inf (and its
        first row), or the column count found against the one expected.
    """
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"{path}: expected a table [rows, columns], got shape {x.shape}.")
    if columns is not None and x.shape[1] != columns:
        raise ValueError(f"{path}: expected {columns} columns, found {x.shape[1]} (shape "
                         f"{x.shape}); is this the file of the MAF data release "
                         f"({MAF_DOWNLOAD_URL})?")
    if np.issubdtype(x.dtype, np.inexact):
        bad = ~np.isfinite(x)
        if bad.any():
            col = int(np.nonzero(bad.any(axis=0))[0][0])
            row = int(np.nonzero(bad[:, col])[0][0])
            raise ValueError(f"{path}: column {col} holds a non-finite value ({x[row, col]}) "
                             f"at row {row} ({int(bad[:, col].sum())} in that column, "
                             f"{int(bad.sum())} in the file): the file is damaged or not the "
                             "published one.")
    return x


def _missing(path: str, what: str) -> FileNotFoundError:
    return FileNotFoundError(
        f"{what}: {path} not found. Download the MAF data release from {MAF_DOWNLOAD_URL}, "
        "unpack it, and pass the folder that holds power/, gas/, hepmass/, miniboone/ and "
        "BSDS300/ as data_dir (config.dataset.data_dir).")


def _require(folder: str, *parts: str, what: str) -> str:
    if folder is None:
        raise ValueError(f"{what}: data_dir is required (config.dataset.data_dir: the folder "
                         f"of the MAF data release, {MAF_DOWNLOAD_URL}).")
    path = os.path.join(folder, *parts)
    if not os.path.isfile(path):
        raise _missing(path, what)
    return path


def _split_last(data: np.ndarray, fraction: float = 0.1):
    """``(head, tail)``: the last ``int(fraction * N)`` rows are the tail."""
    n = int(fraction * data.shape[0])
    return data[:data.shape[0] - n], data[data.shape[0] - n:]


def _standardise(splits, mu, s):
    s = np.where(s > 0, s, 1.0)
    return tuple(((x - mu) / s).astype(np.float32) for x in splits)


def _train_val_test_maf(data: np.ndarray):
    """MAF's split: test = last 10%, validation = last 10% of the rest."""
    rest, test = _split_last(data)
    train, val = _split_last(rest)
    return train, val, test


def load_power(folder: str):
    """POWER as ``(train, validation, test)`` float32 (module docstring for the rules)."""
    path = _require(folder, "power", "data.npy", what="POWER")
    data = check_table(np.load(path), path, 8).astype(np.float64)
    rng = np.random.RandomState(42)
    rng.shuffle(data)
    n = data.shape[0]
    data = np.delete(data, 3, axis=1)
    data = np.delete(data, 1, axis=1)
    voltage_noise = 0.01 * rng.rand(n, 1)
    gap_noise = 0.001 * rng.rand(n, 1)
    sm_noise = rng.rand(n, 3)
    time_noise = np.zeros((n, 1))
    data = data + np.hstack((gap_noise, voltage_noise, sm_noise, time_noise))
    train, val, test = _train_val_test_maf(data)
    both = np.vstack((train, val))
    return _standardise((train, val, test), both.mean(0), both.std(0))


def load_miniboone(folder: str):
    """MINIBOONE as ``(train, validation, test)`` float32 (module docstring)."""
    path = _require(folder, "miniboone", "data.npy", what="MINIBOONE")
    data = check_table(np.load(path), path, 43).astype(np.float64)
    train, val, test = _train_val_test_maf(data)
    both = np.vstack((train, val))
    return _standardise((train, val, test), both.mean(0), both.std(0))


def _read_csv(path: str) -> np.ndarray:
    """A numeric CSV with one header line as float64 (NaN for empty or non-numeric cells)."""
    with open(path) as f:
        header = f.readline()
    width = len(header.split(","))
    data = np.genfromtxt(path, delimiter=",", skip_header=1, dtype=np.float64,
                         invalid_raise=False)
    if data.ndim == 1:
        data = data.reshape(-1, width) if data.size % width == 0 else data[None]
    return data


def load_hepmass(folder: str):
    """HEPMASS as ``(train, validation, test)`` float32 (module docstring)."""
    train_path = _require(folder, "hepmass", "1000_train.csv", what="HEPMASS")
    test_path = _require(folder, "hepmass", "1000_test.csv", what="HEPMASS")
    train = check_table(_read_csv(train_path), train_path, 29)
    test = check_table(_read_csv(test_path), test_path, 30)
    train = train[train[:, 0] == 1][:, 1:]
    test = test[test[:, 0] == 1][:, 1:-1]
    mu, s = train.mean(0), train.std(0, ddof=1)
    train, test = _standardise((train, test), mu, s)
    keep = []
    for j in range(train.shape[1]):
        counts = collections.Counter(train[:, j].tolist())
        smallest_count = counts[min(counts)]
        if smallest_count <= 5:
            keep.append(j)
    train, test = train[:, keep], test[:, keep]
    train, val = _split_last(train)
    return train, val, test


def load_gas(folder: str):
    """GAS as ``(train, validation, test)`` float32 (module docstring); needs pandas."""
    path = _require(folder, "gas", "ethylene_CO.pickle", what="GAS")
    try:
        import pandas as pd
    except ImportError as e:
        raise ImportError(f"GAS: reading {path} (a pandas DataFrame pickle) needs pandas: "
                          "pip install pandas.") from e
    frame = pd.read_pickle(path)
    missing = [c for c in ("Meth", "Eth", "Time") if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: expected the columns Meth, Eth and Time, missing "
                         f"{missing} (columns: {list(frame.columns)}).")
    frame = frame.drop(columns=["Meth", "Eth", "Time"])
    check_table(frame.to_numpy(np.float64), path, 16)
    while True:
        high = (frame.corr() > 0.98).to_numpy().sum(axis=1)
        if not np.any(high > 1):
            break
        frame = frame.drop(columns=frame.columns[int(np.nonzero(high > 1)[0][0])])
    frame = (frame - frame.mean()) / frame.std()
    return tuple(x.astype(np.float32) for x in _train_val_test_maf(frame.to_numpy()))


def load_bsds300(folder: str):
    """BSDS300 patches as ``(train, validation, test)`` float32; needs h5py."""
    path = _require(folder, "BSDS300", "BSDS300.hdf5", what="BSDS300")
    try:
        import h5py
    except ImportError as e:
        raise ImportError(f"BSDS300: reading {path} needs h5py: pip install h5py.") from e
    with h5py.File(path, "r") as f:
        out = []
        for key in _BASE_SPLITS:
            if key not in f:
                raise ValueError(f"{path}: expected datasets train, validation and test, "
                                 f"found {list(f)}.")
            out.append(check_table(np.asarray(f[key][:]), f"{path}[{key}]", 63))
    return tuple(x.astype(np.float32) for x in out)


def load_sklearn(name: str):
    """An offline scikit-learn table as ``(train, validation, test)`` plus labels.

    ``name``: ``"breast_cancer"`` (module docstring for the rules).
    Returns ``((train, val, test), (train_labels, val_labels, test_labels))``.
    """
    import sklearn.datasets as skd
    bunch = {"breast_cancer": skd.load_breast_cancer}[name]()
    x = np.asarray(bunch.data, np.float64)
    y = np.asarray(bunch.target, np.int32)
    keep = [j for j in range(x.shape[1])
            if collections.Counter(x[:, j].tolist()).most_common(1)[0][1] <= 5]
    x = x[:, keep]
    perm = np.random.RandomState(0).permutation(x.shape[0])
    x, y = x[perm], y[perm]
    n = x.shape[0]
    n_val = n_test = int(round(0.1 * n))
    n_train = n - n_val - n_test
    parts = (slice(0, n_train), slice(n_train, n_train + n_val), slice(n_train + n_val, n))
    train = x[parts[0]]
    xs = _standardise([x[p] for p in parts], train.mean(0), train.std(0))
    return xs, tuple(y[p] for p in parts)


def _toy(name: str):
    import jax

    from jaxflows.data import toy2d
    out = []
    for i, split in enumerate(_BASE_SPLITS):
        x = np.asarray(toy2d.sample(name, jax.random.PRNGKey(i), TOY_SPLIT_SIZES[split]))
        out.append(x.astype(np.float32))
    return tuple(out), None


@dataclasses.dataclass(frozen=True)
class _VectorSpec:
    dim: int
    load: Callable[[Optional[str]], Tuple[Sequence[np.ndarray], Optional[Sequence]]]
    num_classes: Optional[int] = None
    sizes: Optional[Dict[str, int]] = None   # known without reading (offline sets)


def _published(sizes):
    """The MAF paper's split sizes (``get_info`` reports them without reading the files)."""
    return dict(zip(_BASE_SPLITS, sizes))


def _maf(loader):
    return lambda folder: (loader(folder), None)


def _toy_spec(name):
    return _VectorSpec(2, lambda folder: _toy(name), None, dict(TOY_SPLIT_SIZES))


VECTOR_DATASETS: Dict[str, _VectorSpec] = {
    **{name: _toy_spec(name) for name in ("two_moons", "8gaussians", "grid_gaussians",
                                          "checkerboard", "pinwheel", "spirals")},
    "breast_cancer": _VectorSpec(24, lambda folder: load_sklearn("breast_cancer"), 2,
                                 {"train": 455, "validation": 57, "test": 57}),
    "power": _VectorSpec(6, _maf(load_power),
                         None, _published((1659917, 184435, 204928))),
    "gas": _VectorSpec(8, _maf(load_gas),
                         None, _published((852174, 94685, 105206))),
    "hepmass": _VectorSpec(21, _maf(load_hepmass),
                         None, _published((315123, 35013, 174987))),
    "miniboone": _VectorSpec(43, _maf(load_miniboone),
                         None, _published((29556, 3284, 3648))),
    "bsds300": _VectorSpec(63, _maf(load_bsds300),
                         None, _published((1000000, 50000, 250000))),
}


def is_vector_dataset(name) -> bool:
    """Whether ``name`` is a vector dataset of this module."""
    return isinstance(name, str) and name in VECTOR_DATASETS


def _cache_key(name: str, data_dir: Optional[str]):
    if name in ("power", "gas", "hepmass", "miniboone", "bsds300"):
        folder = os.path.abspath(data_dir) if data_dir else None
        stamp = None
        if folder:
            try:
                stamp = tuple(sorted((p, os.path.getmtime(os.path.join(folder, p)))
                                     for p in os.listdir(folder)))
            except OSError:
                stamp = None
        return name, folder, stamp
    return name, None, None


@functools.lru_cache(maxsize=4)
def _load(key) -> Dict[str, VectorSource]:
    name, folder, _ = key
    spec = VECTOR_DATASETS[name]
    xs, labels = spec.load(folder)
    out = {}
    for i, split in enumerate(_BASE_SPLITS):
        out[split] = VectorSource(xs[i], None if labels is None else labels[i],
                                  name=f"{name} {split}")
        if out[split].x.shape[1] != spec.dim:
            raise ValueError(f"{name}: expected {spec.dim} features after preprocessing, got "
                             f"{out[split].x.shape[1]}: the files in {folder} are not the "
                             f"published ones ({MAF_DOWNLOAD_URL}).")
    return out


def vector_splits(name: str, data_dir: Optional[str] = None) -> Dict[str, VectorSource]:
    """The base splits ``{"train", "validation", "test"}`` of vector dataset ``name``.

    Read (and preprocessed) once per process and data folder.
    """
    if not is_vector_dataset(name):
        raise ValueError(f"Unknown vector dataset {name!r}; known: {sorted(VECTOR_DATASETS)}.")
    return _load(_cache_key(name, data_dir))

"""Random-access image sources: TFDS datasets, the offline ``digits`` and ``mnist_8k``, ``.npz``.

Every source returned here is a random-access sequence of records
``{"image": uint8 [H, W, C], "label": int}`` with ``len(source)`` and ``source[i]``, plus a
vectorised ``source.get_batch(indices)`` used by :func:`jaxflows.data.make_loader`. Images stay
uint8 on the host; dequantisation happens on device in the train step.

Per-pixel labels. A dataset whose ``DatasetInfo.label_shape`` is ``(H, W)`` (``cityscapes_256``,
an ``npz:`` file whose ``label`` is ``[N, H, W]``) carries a label *map* per record:
``{"image": uint8 [H, W, C], "label": int32 [H, W]}``, a class per pixel, and batches stack
them as int32 ``[n, H, W]``. Every other dataset has ``label_shape == ()``: one class per
record, batches of int32 ``[n]``.

Names understood by :func:`get_source` / :func:`get_info`:

==============================  ============  ======  =======  ==================================
name                            image shape   bins    classes  splits
==============================  ============  ======  =======  ==================================
``digits``                      8x8x1         17      10       train 1,500 / test 297 (offline)
``mnist_8k``                    28x28x1       256     10       train 7,200 / test 800 (offline)
``mnist_8k_seg``                28x28x1       256     11/px    train 7,200 / test 800 (offline)
``sklearn_patches``             32x32x3       256     --       train 975 / test 975 (offline)
``mnist``                       28x28x1       256     10       train 60,000 / test 10,000
``fashion_mnist``               28x28x1       256     10       train 60,000 / test 10,000
``cifar10``                     32x32x3       256     10       train 50,000 / test 10,000
``celeb_a``                     64x64x3       256     --       train / validation / test
``celeb_a_160``                 160x160x3     256     --       train / validation / test
``cityscapes_256``              256x256x3     256     34/px    train / validation / test
``downsampled_imagenet/32x32``  32x32x3       256     --       train / test (= TFDS validation)
``downsampled_imagenet/64x64``  64x64x3       256     --       train / test (= TFDS validation)
``npz:/path/file.npz``          from file     256     from file  train / test (see below)
==============================  ============  ======  =======  ==================================

Vector (tabular) datasets -- the 2-D toys (``two_moons``, ``8gaussians``, ``grid_gaussians``,
``checkerboard``, ``pinwheel``, ``spirals``), the offline ``breast_cancer`` and ``wine``, and
the MAF paper's ``power``, ``gas``, ``hepmass``, ``miniboone``, ``bsds300`` read from
``data_dir`` -- are served by :mod:`jaxflows.data.tabular` through the same functions: their
records hold a float32 vector ``[D]`` under ``"image"`` (the example key of every source),
their ``DatasetInfo`` has ``kind="vector"``, ``image_shape=(D,)`` and ``num_bins=None``, and
their base splits are ``train`` / ``validation`` / ``test``.

* TFDS datasets are read with ``tfds.data_source`` (``array_record`` files, random access). They
  must be prepared once on a machine with network access (``tfds build mnist
  --file_format=array_record --data_dir=DIR``) or with ``download=True``. A dataset that is not
  prepared fails at once with :class:`DatasetNotPreparedError` saying how to prepare it; nothing
  ever waits on network retries (with ``download=True`` the network is probed first, with a short
  timeout).
* ``celeb_a`` follows RealNVP (Dinh et al. 2017, Sec. 4.1): the central 148x148 crop of the
  218x178 image, resized to 64x64 (box filter). It has no class label (``label`` is 0).
* ``celeb_a_160`` is the same TFDS ``celeb_a`` at the 160x160 of the AttnFlow source's and
  SRFlow's 8x face super-resolution (HR 160x160 from LR 20x20): the central 178x178 square
  of the 218x178 aligned image (its full width), resized to 160x160 (box filter). The
  sources do not state their crop; this one keeps the whole face and the hair line.
* ``cityscapes_256``: TFDS ``cityscapes/semantic_segmentation`` (Cordts et al. 2016) for the
  AttnFlow source's segmentation-to-image task (supplement Sec. 3: 256x256, 2,975 train and
  500 validation images). The 1024x2048 ``image_left`` is resized to 256x256 (box filter,
  i.e. area averaging) **without cropping**: the 2:1 street scene is squashed to 1:1, as
  pix2pix's Cityscapes (Isola et al. 2017) is. The label is the per-pixel map of
  ``segmentation_label`` (the ``gtFine_labelIds`` image: Cityscapes label ids 0..33)
  resized to 256x256 by nearest neighbour (every output pixel takes the id of one input
  pixel, never a blend of classes), int32 ``[256, 256]``; ``num_classes`` is 34. The
  source says "30 different classes": the Cityscapes website's 30 classes are the ids
  4..33; the label images also hold ids 0..3 (``unlabeled``, ``ego vehicle``,
  ``rectification border``, ``out of roi``: the car's bonnet and the image border), so
  this source serves all 34 ids 0..33 as they are, not remapped (ids outside 0..33 --
  none in the real label images, random values in ``tfds.testing.mock_data`` -- become
  0, ``unlabeled``; ``license plate``, id -1, is not drawn in the label images). The test split's
  ground truth is withheld by Cityscapes (its label images carry no annotation): the
  source's evaluation set is the 500-image ``validation`` split. Cityscapes needs a
  registration and a **manual download** (see :func:`get_source`'s
  :class:`DatasetNotPreparedError` message, or ``docs/conditional.md``).
* ``downsampled_imagenet`` (van den Oord et al. 2016, "Pixel Recurrent Neural Networks") has no
  test split in TFDS: ``test`` reads its ``validation`` split. No label (``label`` is 0).
* ``digits`` is scikit-learn's bundled 8x8 digits (values 0..16) as a TFDS builder
  (:mod:`jaxflows.data.digits`), prepared automatically on first use without network.
* ``mnist_8k`` is 8,000 real MNIST digits shipped inside this package (MIT licence, see
  :mod:`jaxflows.data.mnist_8k` for the provenance): no network, no TensorFlow, no preparation.
  ``train`` is the first 7,200 records, ``test`` the last 800. For the full MNIST use ``mnist``
  (TFDS, prepared once with network access).
* ``mnist_8k_seg``: the same 8,000 digits with a **semantic label map** per image instead of a
  class: ``1 + digit class`` on the stroke (pixels of at least 128 of 255), 0 on the
  background (11 classes, int32 ``[28, 28]``): an offline stand-in for Cityscapes' label
  maps (segmentation to image through the same ``"segmentation"`` context).
* ``sklearn_patches``: 32x32 RGB patches (stride-16 grid) of the two photos bundled with
  scikit-learn, ``train`` from ``china.jpg`` and ``test`` from ``flower.jpg`` (CC BY 2.0; see
  :mod:`jaxflows.data.sklearn_images`). No label (``label`` is 0); no network.
* ``npz:/path/file.npz``: arrays ``image`` (uint8, NHWC or NHW) and optionally ``label``
  (integer ``[N]``, a class per record, or ``[N, H, W]``, a label map per record of the
  images' height and width: ``label_shape`` ``(H, W)``; ``num_classes`` is the largest
  label + 1 either way). The file's last 10% of records (rounded down) are its ``test``
  split and the rest its ``train`` split; ``npz:/path/file.npz?test=N`` makes the last
  ``N`` records the test split and ``?test=0.25`` the last quarter.

Padding: ``get_source(..., pad=p)`` surrounds every image with ``p`` rows and columns of
zeros on each side (``[H, W, C] -> [H + 2p, W + 2p, C]``, uint8, the original image in the
centre), and ``get_info(..., pad=p)`` reports that padded shape. This is how a model whose
levels need sides divisible by ``2^L`` runs on images that are not (MNIST 28x28 with
``pad=2`` gives 32x32, as in AttnFlow, Sukthanker et al. 2022). A density of padded images
is a density over ``(H + 2p)(W + 2p)C`` dimensions: the border pixels are constant zeros
(plus dequantisation noise in training), so bits/dim with padding is not comparable to
bits/dim without it. Label maps are padded alike, with class **0** (``[H, W] -> [H + 2p,
W + 2p]``): the padding's zero pixels are labelled class 0, which is ``unlabeled`` in
Cityscapes and background in the two-class masks.

Splits accept TFDS slicing on top of the base split: ``"train[:90%]"``, ``"train[1350:]"``,
``"train[10%:20%]"``, ``"train+test"``. The data directory is ``data_dir``, else the environment
variable ``TFDS_DATA_DIR``, else ``~/tensorflow_datasets``.

Mock data (for tests of code that trains on datasets that are not available): pass
``mock=True`` to :func:`get_source`, or wrap the code in ``with mock_datasets():``. TFDS datasets
then go through ``tfds.testing.mock_data`` (random records of the dataset's real feature spec,
read through the real ``tfds.data_source`` path and the same post-processing as real data), with
``mock_num_examples`` records per base split. ``digits``, ``mnist_8k`` and ``npz:`` sources are
always real.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import socket
import threading
import types
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from jaxflows.data import mnist_8k as mnist_8k_lib
from jaxflows.data import sklearn_images as sklearn_images_lib

__all__ = [
    "ArraySource",
    "DatasetInfo",
    "DatasetNotPreparedError",
    "KNOWN_DATASETS",
    "PaddedSource",
    "TfdsSource",
    "default_data_dir",
    "get_info",
    "get_source",
    "manual_dir",
    "mock_datasets",
    "nearest_resize_labels",
    "pad_images",
    "pad_labels",
    "stack_labels",
]


class DatasetNotPreparedError(FileNotFoundError):
    """A TFDS dataset is not prepared in the data directory and was not (or can't be) downloaded."""


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """Static description of an image dataset.

    Attributes:
      name: the name given to :func:`get_info`.
      image_shape: ``(H, W, C)`` of the images the source yields.
      num_bins: number of pixel levels: values lie in ``{0, ..., num_bins - 1}`` (256 for
        8-bit images, 17 for ``digits``).
      num_classes: number of label classes, or ``None`` if the dataset has no label.
      split_sizes: number of records in each base split (the published TFDS sizes, or the sizes
        of the prepared data when it is found, aliases such as imagenet's "test" included).
      pad: zero pixels added on each side of H and W (``get_info(..., pad=...)``);
        ``image_shape`` is the padded shape.
      kind: ``"image"`` (uint8 images, dequantised in training, scored in bits/dim) or
        ``"vector"`` (float32 vectors of :mod:`jaxflows.data.tabular`, used as they are,
        scored in nats; ``image_shape`` is then ``(D,)`` and ``num_bins`` is None).
      label_shape: the shape of one record's label: ``()`` (default) for a class per record,
        ``(H, W)`` (the images' height and width, padded alike) for a per-pixel label map;
        batches of labels are int32 ``(n,) + label_shape``.
    """

    name: str
    image_shape: tuple[int, ...]
    num_bins: int | None
    num_classes: int | None
    split_sizes: Mapping[str, int]
    pad: int = 0
    kind: str = "image"
    label_shape: tuple[int, ...] = ()

    @property
    def event_shape(self) -> tuple[int, ...]:
        """The shape of one example (``image_shape``: ``(H, W, C)`` or ``(D,)``)."""
        return tuple(self.image_shape)

    @property
    def is_vector(self) -> bool:
        """Whether the examples are float vectors (``kind == "vector"``)."""
        return self.kind == "vector"


@dataclasses.dataclass(frozen=True)
class _TfdsSpec:
    tfds_name: str
    info: DatasetInfo
    split_aliases: Mapping[str, str] = dataclasses.field(default_factory=dict)
    transform: Callable[[np.ndarray], np.ndarray] | None = None
    has_label: bool = True
    image_key: str = "image"
    label_key: str = "label"
    # Per-pixel labels: the map's post-processing (raw feature -> int32 label_shape).
    label_transform: Callable[[np.ndarray], np.ndarray] | None = None
    # Files to be placed in the TFDS manual directory (datasets behind a registration).
    manual_files: tuple[str, ...] = ()
    manual_url: str = ""


def _centre_crop_resize(image: np.ndarray, crop: int | None, size: tuple[int, int]) -> np.ndarray:
    """Central ``crop x crop`` window of ``image``, resized to ``size`` by a box filter.

    ``crop`` None takes the largest central square; the box filter averages areas. ``image`` is
    uint8 ``[H, W, C]``.
    """
    h, w = image.shape[:2]
    c = min(h, w) if crop is None else min(crop, h, w)
    top, left = (h - c) // 2, (w - c) // 2
    window = image[top:top + c, left:left + c]
    if window.shape[:2] == tuple(size):
        return np.ascontiguousarray(window)
    from PIL import Image  # Pillow is a dependency of matplotlib and tfds.
    channels = window.shape[2]
    pil = Image.fromarray(window[..., 0] if channels == 1 else window)
    out = np.asarray(pil.resize((size[1], size[0]), Image.Resampling.BOX), dtype=np.uint8)
    return out.reshape(size[0], size[1], channels)


def _celeb_a_transform(image: np.ndarray) -> np.ndarray:
    # RealNVP (Dinh et al. 2017, Sec. 4.1): central 148x148 crop, downsampled to 64x64.
    return _centre_crop_resize(image, 148, (64, 64))


def _celeb_a_160_transform(image: np.ndarray) -> np.ndarray:
    # The super-resolution CelebA (AttnFlow / SRFlow: 160x160 HR): the central square of
    # the full width (178x178 of 218x178), downsampled to 160x160.
    return _centre_crop_resize(image, None, (160, 160))


def _fit_to(size: tuple[int, int]) -> Callable[[np.ndarray], np.ndarray]:
    # Downsampled ImageNet is stored at its final size, so this is the identity on real data; TFDS
    # declares its shape as (None, None, 3), and mock data of that spec has random sizes.
    def fit(image: np.ndarray) -> np.ndarray:
        if image.shape[:2] == tuple(size):
            return image
        return _centre_crop_resize(image, None, size)
    return fit


def _box_resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 ``[H, W, C]`` resized to ``size`` by a box filter (area average), no crop."""
    from PIL import Image
    channels = image.shape[2]
    pil = Image.fromarray(image[..., 0] if channels == 1 else image)
    out = np.asarray(pil.resize((size[1], size[0]), Image.Resampling.BOX), dtype=np.uint8)
    return out.reshape(size[0], size[1], channels)


def nearest_resize_labels(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A label map ``[H, W]`` (or ``[H, W, 1]``) resized to ``size`` by nearest neighbour.

    Output pixel ``(i, j)`` is input pixel ``(floor((i + 1/2) H / h), floor((j + 1/2) W /
    w))``, the input pixel under the output pixel's centre (Pillow's ``NEAREST``): every
    output label is one of the input's labels, never a blend. Returns the input's dtype.
    """
    labels = np.asarray(labels)
    if labels.ndim == 3 and labels.shape[2] == 1:
        labels = labels[..., 0]
    if labels.ndim != 2:
        raise ValueError(f"labels: expected a label map [H, W] or [H, W, 1], got shape "
                         f"{labels.shape}.")
    h, w = labels.shape
    rows = ((np.arange(size[0]) + 0.5) * h / size[0]).astype(np.int64)
    cols = ((np.arange(size[1]) + 0.5) * w / size[1]).astype(np.int64)
    return np.ascontiguousarray(labels[rows[:, None], cols[None, :]])


# Cityscapes (TFDS cityscapes/semantic_segmentation) for segmentation to image at 256x256.
CITYSCAPES_SIZE = (256, 256)
# Label ids 0..33 of the gtFine_labelIds images (cityscapesScripts' labels.py; license
# plate, id -1, is not drawn in them).
CITYSCAPES_NUM_CLASSES = 34


def _cityscapes_image(image: np.ndarray) -> np.ndarray:
    # 1024x2048 -> 256x256 by a box filter, no crop: the 2:1 scene is squashed to 1:1
    # (as pix2pix's Cityscapes).
    return _box_resize(image, CITYSCAPES_SIZE)


def _cityscapes_labels(labels: np.ndarray) -> np.ndarray:
    # gtFine_labelIds [1024, 2048, 1] -> int32 [256, 256] by nearest neighbour; ids outside
    # 0..33 (none in the real data; mock data are random bytes) become 0 ("unlabeled").
    out = nearest_resize_labels(labels, CITYSCAPES_SIZE).astype(np.int32)
    return np.where((out >= 0) & (out < CITYSCAPES_NUM_CLASSES), out, 0).astype(np.int32)


_DIGITS_INFO = DatasetInfo("digits", (8, 8, 1), 17, 10, {"train": 1500, "test": 297})
_MNIST_8K_INFO = DatasetInfo(
    "mnist_8k", mnist_8k_lib.IMAGE_SHAPE, mnist_8k_lib.NUM_BINS, mnist_8k_lib.NUM_CLASSES,
    {"train": mnist_8k_lib.NUM_TRAIN, "test": mnist_8k_lib.NUM_TEST})
_SKLEARN_PATCHES_INFO = DatasetInfo(
    "sklearn_patches", sklearn_images_lib.IMAGE_SHAPE, sklearn_images_lib.NUM_BINS, None,
    {s: sklearn_images_lib.NUM_PER_IMAGE for s in sklearn_images_lib.IMAGE_FILES})
# The stroke threshold of mnist_8k_seg's label maps (pixel levels of 255).
MNIST_8K_SEG_THRESHOLD = 128
_MNIST_8K_SEG_INFO = dataclasses.replace(
    _MNIST_8K_INFO, name="mnist_8k_seg", num_classes=mnist_8k_lib.NUM_CLASSES + 1,
    label_shape=tuple(mnist_8k_lib.IMAGE_SHAPE[:2]))
_OFFLINE_INFOS = {"digits": _DIGITS_INFO, "mnist_8k": _MNIST_8K_INFO,
                  "mnist_8k_seg": _MNIST_8K_SEG_INFO,
                  "sklearn_patches": _SKLEARN_PATCHES_INFO}

_TFDS_SPECS: dict[str, _TfdsSpec] = {
    "mnist": _TfdsSpec("mnist", DatasetInfo(
        "mnist", (28, 28, 1), 256, 10, {"train": 60000, "test": 10000})),
    "fashion_mnist": _TfdsSpec("fashion_mnist", DatasetInfo(
        "fashion_mnist", (28, 28, 1), 256, 10, {"train": 60000, "test": 10000})),
    "cifar10": _TfdsSpec("cifar10", DatasetInfo(
        "cifar10", (32, 32, 3), 256, 10, {"train": 50000, "test": 10000})),
    "celeb_a": _TfdsSpec(
        "celeb_a",
        DatasetInfo("celeb_a", (64, 64, 3), 256, None,
                    {"train": 162770, "validation": 19867, "test": 19962}),
        transform=_celeb_a_transform, has_label=False),
    "celeb_a_160": _TfdsSpec(
        "celeb_a",
        DatasetInfo("celeb_a_160", (160, 160, 3), 256, None,
                    {"train": 162770, "validation": 19867, "test": 19962}),
        transform=_celeb_a_160_transform, has_label=False),
    "cityscapes_256": _TfdsSpec(
        "cityscapes/semantic_segmentation",
        DatasetInfo("cityscapes_256", CITYSCAPES_SIZE + (3,), 256, CITYSCAPES_NUM_CLASSES,
                    {"train": 2975, "validation": 500, "test": 1525},
                    label_shape=CITYSCAPES_SIZE),
        transform=_cityscapes_image, image_key="image_left", label_key="segmentation_label",
        label_transform=_cityscapes_labels,
        manual_files=("leftImg8bit_trainvaltest.zip", "gtFine_trainvaltest.zip"),
        manual_url="https://www.cityscapes-dataset.com/downloads/"),
    "downsampled_imagenet/32x32": _TfdsSpec(
        "downsampled_imagenet/32x32",
        DatasetInfo("downsampled_imagenet/32x32", (32, 32, 3), 256, None,
                    {"train": 1281149, "test": 49999}),
        split_aliases={"test": "validation"}, transform=_fit_to((32, 32)), has_label=False),
    "downsampled_imagenet/64x64": _TfdsSpec(
        "downsampled_imagenet/64x64",
        DatasetInfo("downsampled_imagenet/64x64", (64, 64, 3), 256, None,
                    {"train": 1281149, "test": 49999}),
        split_aliases={"test": "validation"}, transform=_fit_to((64, 64)), has_label=False),
}

def _vector_names() -> tuple[str, ...]:
    from jaxflows.data import tabular
    return tuple(tabular.VECTOR_DATASETS)


KNOWN_DATASETS: tuple[str, ...] = ("digits", "mnist_8k", "mnist_8k_seg", "sklearn_patches",
                                   *_TFDS_SPECS,
                                   "npz:/path/file.npz", *_vector_names())

_NPZ_PREFIX = "npz:"
_NPZ_DEFAULT_TEST_FRACTION = 0.1


def default_data_dir(data_dir: str | os.PathLike | None = None) -> str:
    """``data_dir`` if given, else ``$TFDS_DATA_DIR``, else ``~/tensorflow_datasets``."""
    if data_dir is not None:
        return os.fspath(data_dir)
    return os.environ.get("TFDS_DATA_DIR") or os.path.expanduser("~/tensorflow_datasets")


def _unknown_name(name: Any) -> ValueError:
    return ValueError(
        f"Unknown dataset name {name!r}: expected one of {', '.join(KNOWN_DATASETS)} "
        "(npz: followed by the path of an .npz file with arrays 'image' and optionally 'label').")


# --------------------------------------------------------------------------- in-memory sources


class ArraySource:
    """A random-access source over in-memory arrays.

    Args:
      images: uint8 array ``[N, H, W, C]``, or ``[N, H, W]`` (a channel axis is added). Other
        integer dtypes are accepted if every value lies in 0..255.
      labels: optional integer array ``[N]`` (a class per record) or ``[N, H, W]`` (a
        label map per record, of the images' height and width); without it every
        record's label is 0.

    ``source[i]`` returns ``{"image": uint8 [H, W, C], "label": int}`` (``"label"``: int32
    ``[H, W]`` with label maps); ``source.get_batch(indices)`` returns the stacked arrays
    (``label`` int32 ``[n]`` or ``[n, H, W]``).
    """

    def __init__(self, images, labels=None):
        images = np.asarray(images)
        if images.ndim == 3:
            images = images[..., None]
        if images.ndim != 4:
            raise ValueError(
                f"images: expected an array [N, H, W, C] or [N, H, W], got shape {images.shape}.")
        if images.dtype != np.uint8:
            if not np.issubdtype(images.dtype, np.integer):
                raise ValueError(
                    f"images: expected uint8 (integer pixel values), got dtype {images.dtype}.")
            if images.size and (images.min() < 0 or images.max() > 255):
                raise ValueError(
                    "images: integer pixel values must lie in 0..255 to be stored as uint8.")
            images = images.astype(np.uint8)
        if labels is None:
            labels = np.zeros(images.shape[0], np.int32)
        else:
            labels = np.asarray(labels)
            n, h, w = images.shape[:3]
            if (labels.shape not in ((n,), (n, h, w))
                    or not np.issubdtype(labels.dtype, np.integer)):
                raise ValueError(
                    f"labels: expected an integer array of shape ({n},) (a class per image) "
                    f"or ({n}, {h}, {w}) (a label map per image), got {labels.dtype} "
                    f"{labels.shape}.")
            labels = labels.astype(np.int32)
        self.images = images
        self.labels = labels

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> dict[str, Any]:
        if self.labels.ndim > 1:
            return {"image": self.images[index], "label": self.labels[index]}
        return {"image": self.images[index], "label": int(self.labels[index])}

    def get_batch(self, indices) -> dict[str, np.ndarray]:
        """Records ``indices`` stacked: ``{"image": uint8 [n, H, W, C], "label": int32 [n]}``."""
        indices = np.asarray(indices, dtype=np.int64)
        return {"image": self.images[indices], "label": self.labels[indices]}

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(H, W, C)`` of every image."""
        return tuple(self.images.shape[1:])

    @property
    def label_shape(self) -> tuple[int, ...]:
        """``()`` (a class per record) or ``(H, W)`` (a label map per record)."""
        return tuple(self.labels.shape[1:])

    def __repr__(self) -> str:
        extra = f", label_shape={self.label_shape}" if self.label_shape else ""
        return f"ArraySource(num_records={len(self)}, image_shape={self.image_shape}{extra})"


class _ConcatSource:
    """Concatenation of index ranges of sources (used for sliced / combined splits)."""

    def __init__(self, parts: Sequence[tuple[Any, int, int]]):
        self._parts = list(parts)
        self._offsets = np.cumsum([0] + [stop - start for _, start, stop in self._parts])

    def __len__(self) -> int:
        return int(self._offsets[-1])

    def _locate(self, indices: np.ndarray):
        part = np.searchsorted(self._offsets, indices, side="right") - 1
        return part, indices - self._offsets[part]

    def __getitem__(self, index: int):
        n = len(self)
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError(f"index {index} out of range for a source of {n} records.")
        part, local = self._locate(np.asarray([index]))
        source, start, _ = self._parts[int(part[0])]
        return source[start + int(local[0])]

    def get_batch(self, indices) -> dict[str, np.ndarray]:
        indices = np.asarray(indices, dtype=np.int64)
        part, local = self._locate(indices)
        if len(self._parts) == 1:
            source, start, _ = self._parts[0]
            return _get_batch(source, start + local)
        labels = out_image = None
        for p in np.unique(part):
            source, start, _ = self._parts[int(p)]
            where = np.nonzero(part == p)[0]
            batch = _get_batch(source, start + local[where])
            if out_image is None:  # uint8 images, or float32 vectors of tabular sources
                out_image = np.zeros((len(indices), *batch["image"].shape[1:]),
                                     batch["image"].dtype)
                # int32 [n], or [n, H, W] label maps
                labels = np.zeros((len(indices), *np.shape(batch["label"])[1:]), np.int32)
            out_image[where] = batch["image"]
            labels[where] = batch["label"]
        return {"image": out_image, "label": labels}


def _get_batch(source, indices) -> dict[str, np.ndarray]:
    """Stacked records ``indices`` of any random-access source."""
    if hasattr(source, "get_batch"):
        return source.get_batch(indices)
    records = [source[int(i)] for i in indices]
    return {"image": np.stack([np.asarray(r["image"], np.uint8) for r in records]),
            "label": stack_labels([r.get("label", 0) for r in records])}


def stack_labels(labels: Sequence[Any], label_shape: tuple[int, ...] | None = None
                 ) -> np.ndarray:
    """Records' labels stacked as int32 ``(n,) + label_shape``.

    Scalar labels (a class per record) give ``[n]``, label maps ``[H, W]`` give
    ``[n, H, W]``; ``label_shape`` (default: the first label's shape) is the shape of an
    empty batch's labels and is checked against every label.
    """
    if not len(labels):
        return np.zeros((0, *(label_shape or ())), np.int32)
    if label_shape is None:
        label_shape = np.shape(labels[0])
    if not label_shape:
        return np.asarray([int(v) for v in labels], np.int32)
    out = np.stack([np.asarray(v) for v in labels])
    if out.shape[1:] != tuple(label_shape):
        raise ValueError(f"labels: expected label maps of shape {tuple(label_shape)}, got "
                         f"{out.shape[1:]}.")
    return out.astype(np.int32)


def _split_by_spec(split: str, base: Mapping[str, tuple[Any, int, int]], dataset: str):
    """Applies a TFDS split spec (``"train[:90%]"``, ``"train+test"``) to base splits.

    The base splits are given as ``{name: (source, start, stop)}``; the spec is parsed and
    rounded by TFDS's own rules.
    """
    import tensorflow_datasets as tfds
    if not isinstance(split, str):
        raise ValueError(
            f"split: expected a string such as 'train' or 'train[:90%]', got {split!r}.")
    infos = {k: types.SimpleNamespace(num_examples=stop - start)
             for k, (_, start, stop) in base.items()}
    try:
        absolute = tfds.core.ReadInstruction.from_spec(split).to_absolute(infos)
    except (ValueError, AssertionError) as e:
        raise ValueError(
            f"split: {split!r} is not a valid split of {dataset!r} (splits {sorted(base)}, "
            f"slicing like 'train[:90%]'): {e}") from None
    parts = []
    for instr in absolute:
        source, start, stop = base[instr.splitname]
        n = stop - start
        lo = 0 if instr.from_ is None else instr.from_
        hi = n if instr.to is None else instr.to
        lo, hi = max(0, min(lo, n)), max(0, min(hi, n))
        parts.append((source, start + lo, start + max(lo, hi)))
    return _ConcatSource(parts)


def _parse_npz_name(name: str) -> tuple[str, float | int | None]:
    path, _, query = name[len(_NPZ_PREFIX):].partition("?")
    test = None
    if query:
        key, _, value = query.partition("=")
        if key != "test" or not value:
            raise ValueError(f"name: expected 'npz:/path/file.npz' or "
                             f"'npz:/path/file.npz?test=N', got {name!r}.")
        try:
            test = int(value)
        except ValueError:
            try:
                test = float(value)
            except ValueError:
                raise ValueError(
                    f"name: 'test=' in {name!r} must be a count or a fraction.") from None
    return path, test


def _npz_test_count(test, n: int, name: str) -> int:
    if test is None:
        test = _NPZ_DEFAULT_TEST_FRACTION
    if isinstance(test, float):
        if not 0.0 <= test < 1.0:
            raise ValueError(f"name: the test fraction in {name!r} must lie in [0, 1).")
        return int(n * test)
    if not 0 <= test < n:
        raise ValueError(f"name: the test count in {name!r} must lie in [0, {n}).")
    return test


_NPZ_CACHE: dict[tuple[str, float], ArraySource] = {}


def _load_npz(path: str) -> ArraySource:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"npz dataset file not found: {path!r}.")
    key = (os.path.abspath(path), os.path.getmtime(path))
    if key not in _NPZ_CACHE:
        with np.load(path) as f:
            if "image" not in f:
                raise ValueError(f"{path!r}: expected an array 'image' (uint8 NHWC or NHW), "
                                 f"found {list(f)}.")
            _NPZ_CACHE[key] = ArraySource(f["image"], f["label"] if "label" in f else None)
    return _NPZ_CACHE[key]


def _npz_splits(name: str):
    path, test = _parse_npz_name(name)
    full = _load_npz(path)
    n = len(full)
    n_test = _npz_test_count(test, n, name)
    return full, {"train": (full, 0, n - n_test), "test": (full, n - n_test, n)}


# --------------------------------------------------------------------------- padding


def _check_pad(pad, who: str = "pad") -> int:
    """``pad`` as a non-negative int, else ``ValueError`` naming ``who``."""
    if isinstance(pad, (bool, np.bool_)) or not isinstance(pad, (int, np.integer)) or pad < 0:
        raise ValueError(f"{who} must be a non-negative int (zero pixels added on each side of "
                         f"the image height and width), got {pad!r}.")
    return int(pad)


def pad_images(images: np.ndarray, pad: int) -> np.ndarray:
    """Zero-pads a batch of images ``[N, H, W, C]`` by ``pad`` pixels on each side of H and W.

    Returns ``[N, H + 2 pad, W + 2 pad, C]`` of the same dtype, with
    ``out[:, pad:pad + H, pad:pad + W] == images`` and zeros elsewhere.
    """
    pad = _check_pad(pad)
    images = np.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"images: expected a batch [N, H, W, C], got shape {images.shape}.")
    if pad == 0:
        return images
    return np.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))


class PaddedSource:
    """A random-access source whose images are those of ``source`` zero-padded by ``pad``.

    ``source[i]["image"]`` of shape ``[H, W, C]`` becomes ``[H + 2 pad, W + 2 pad, C]``
    (:func:`pad_images`); class labels are unchanged, and label maps ``[H, W]`` are padded
    alike with class 0 (:func:`pad_labels`). Padding happens per record / per batch, so a
    streamed source stays streamed. :func:`get_source` with ``pad > 0`` returns this wrapper
    (or an :class:`ArraySource` of padded images when the split is read into memory).
    """

    def __init__(self, source, pad: int):
        self.source = source
        self.pad = _check_pad(pad)

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> dict[str, Any]:
        record = dict(self.source[index])
        record["image"] = pad_images(np.asarray(record["image"], np.uint8)[None], self.pad)[0]
        if np.ndim(record.get("label", 0)) > 0:
            record["label"] = pad_labels(np.asarray(record["label"])[None], self.pad)[0]
        return record

    def get_batch(self, indices) -> dict[str, np.ndarray]:
        """Records ``indices`` of the wrapped source, stacked, with padded images (and
        label maps).
        """
        batch = dict(_get_batch(self.source, indices))
        batch["image"] = pad_images(batch["image"], self.pad)
        if np.ndim(batch["label"]) > 1:
            batch["label"] = pad_labels(batch["label"], self.pad)
        return batch

    def __repr__(self) -> str:
        return f"PaddedSource({self.source!r}, pad={self.pad})"


def pad_labels(labels: np.ndarray, pad: int) -> np.ndarray:
    """Pads a batch of label maps ``[N, H, W]`` by ``pad`` pixels of class **0** on each side.

    Returns ``[N, H + 2 pad, W + 2 pad]`` of the same dtype, the map in the centre: the
    labels of the zero pixels that :func:`pad_images` adds (class 0 is ``unlabeled`` in
    Cityscapes, background in two-class masks).
    """
    pad = _check_pad(pad)
    labels = np.asarray(labels)
    if labels.ndim != 3:
        raise ValueError(f"labels: expected a batch of label maps [N, H, W], got shape "
                         f"{labels.shape}.")
    if pad == 0:
        return labels
    return np.pad(labels, ((0, 0), (pad, pad), (pad, pad)))


def _padded(source, pad: int):
    if pad == 0:
        return source
    if isinstance(source, ArraySource):  # in memory: pad once, keep the fast in-memory path
        labels = source.labels if source.labels.ndim == 1 else pad_labels(source.labels, pad)
        return ArraySource(pad_images(source.images, pad), labels)
    return PaddedSource(source, pad)


def _padded_info(info: DatasetInfo, pad: int) -> DatasetInfo:
    if pad == 0:
        return info
    h, w, c = info.image_shape
    label_shape = tuple(info.label_shape)
    if label_shape:   # label maps are padded with the images (class 0)
        label_shape = (label_shape[0] + 2 * pad, label_shape[1] + 2 * pad)
    return dataclasses.replace(info, image_shape=(h + 2 * pad, w + 2 * pad, c),
                               pad=info.pad + pad, label_shape=label_shape)


# --------------------------------------------------------------------------- TFDS sources


class TfdsSource:
    """A TFDS ``data_source`` with per-dataset post-processing, as ``{"image", "label"}``.

    Args:
      data_source: the TFDS data source (random access to decoded records).
      transform: the image's post-processing (uint8 ``[H, W, C]`` in and out).
      has_label: whether the records' ``label_key`` is served (else every label is 0).
      image_shape: ``(H, W, C)`` served (the shape of an empty batch).
      batched_reads: read batches with the data source's ``__getitems__``.
      image_key, label_key: the record's features holding the image and the label
        (Cityscapes: ``"image_left"``, ``"segmentation_label"``).
      label_transform: a label map's post-processing (raw feature -> int32
        ``label_shape``); ``None`` for class labels.
      label_shape: ``()`` for a class per record, ``(H, W)`` for label maps.
    """

    def __init__(self, data_source, *, transform=None, has_label=True, image_shape=None,
                 batched_reads=True, image_key="image", label_key="label",
                 label_transform=None, label_shape=()):
        self._ds = data_source
        # tfds.testing.mock_data's data sources break on __getitems__ (tfds 4.9.10): read one
        # by one.
        self._batched_reads = batched_reads
        self._transform = transform
        self._has_label = has_label
        self._image_shape = image_shape
        self._image_key, self._label_key = image_key, label_key
        self._label_transform = label_transform
        self.label_shape = tuple(label_shape)

    def __len__(self) -> int:
        return len(self._ds)

    def _convert(self, record) -> tuple[np.ndarray, Any]:
        image = np.asarray(record[self._image_key], dtype=np.uint8)
        if image.ndim == 2:
            image = image[..., None]
        if self._transform is not None:
            image = self._transform(image)
        if self.label_shape:    # a label map per record
            label = np.asarray(record[self._label_key])
            if self._label_transform is not None:
                label = self._label_transform(label)
            label = np.asarray(label, np.int32)
            if label.shape != self.label_shape:
                raise ValueError(f"label: expected a label map of shape {self.label_shape} "
                                 f"after post-processing, got {label.shape}.")
            return image, label
        label = (int(record[self._label_key])
                 if self._has_label and self._label_key in record else 0)
        return image, label

    def __getitem__(self, index: int) -> dict[str, Any]:
        image, label = self._convert(self._ds[index])
        return {"image": image, "label": label}

    def get_batch(self, indices) -> dict[str, np.ndarray]:
        """Records ``indices`` stacked: ``{"image": uint8 [n, H, W, C], "label": int32 [n]}``."""
        indices = [int(i) for i in np.asarray(indices).reshape(-1)]
        if self._batched_reads and hasattr(self._ds, "__getitems__"):
            records = self._ds.__getitems__(indices)
        else:
            records = [self._ds[i] for i in indices]
        converted = [self._convert(r) for r in records]
        if not converted:
            return {"image": np.zeros((0, *(self._image_shape or (0, 0, 0))), np.uint8),
                    "label": np.zeros((0, *self.label_shape), np.int32)}
        return {"image": np.stack([c[0] for c in converted]),
                "label": stack_labels([c[1] for c in converted], self.label_shape)}

    def to_array_source(self) -> ArraySource:
        """Reads every record into memory (fast random access for small datasets)."""
        batch = self.get_batch(np.arange(len(self)))
        return ArraySource(batch["image"], batch["label"])


def _network_reachable(host: str = "storage.googleapis.com", port: int = 443,
                       timeout: float = 3.0) -> bool:
    """Whether a TCP connection to ``host`` opens within ``timeout`` seconds (DNS included)."""
    result = []

    def probe():
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout + 0.5)
    return bool(result and result[0])


def _prepare_instructions(tfds_name: str, data_dir: str) -> str:
    return (
        f"To prepare it, run on a machine with network access\n"
        f"    tfds build {tfds_name} --file_format=array_record --data_dir={data_dir}\n"
        f"(then copy that machine's {os.path.join(data_dir, tfds_name.split('/')[0])} directory "
        f"to the same place here), or call "
        f"get_source(..., download=True, data_dir={data_dir!r}) where the network is reachable. "
        f"Use data_dir=... or the environment variable TFDS_DATA_DIR to read from another "
        f"directory, or mock=True for random data of the same shape in tests.")


def manual_dir(data_dir: str) -> str:
    """TFDS's default manual-download directory of ``data_dir``: ``data_dir/downloads/manual``."""
    return os.path.join(data_dir, "downloads", "manual")


def _manual_instructions(spec: _TfdsSpec, data_dir: str) -> str:
    manual = manual_dir(data_dir)
    files = " and ".join(spec.manual_files)
    return (
        f"It cannot be downloaded automatically: register at "
        f"{spec.manual_url} and download {files} into\n    {manual}\n"
        f"then prepare it once (this needs TensorFlow, for tf.io.gfile, and decodes every "
        f"image: expect hours and tens of GB)\n"
        f"    tfds build {spec.tfds_name} --file_format=array_record --data_dir={data_dir} "
        f"--manual_dir={manual}\n"
        f"or call get_source(..., download=True, data_dir={data_dir!r}), which prepares it from "
        f"those files without network access. Use data_dir=... or the environment variable "
        f"TFDS_DATA_DIR to read from another directory, or mock=True for random data of the "
        f"same shape in tests.")


def _prepare_manual(spec: _TfdsSpec, data_dir: str):
    """Prepares a manual-download dataset from the files in its manual directory."""
    import tensorflow_datasets as tfds
    manual = manual_dir(data_dir)
    missing = [f for f in spec.manual_files if not os.path.isfile(os.path.join(manual, f))]
    if missing:
        raise DatasetNotPreparedError(
            f"Dataset {spec.tfds_name!r} is not prepared in {data_dir} and download=True "
            f"cannot fetch it: {', '.join(missing)} missing from {manual}. "
            + _manual_instructions(spec, data_dir))
    builder = tfds.builder(spec.tfds_name, data_dir=data_dir, file_format="array_record")
    builder.download_and_prepare(file_format="array_record",
                                 download_config=tfds.download.DownloadConfig(manual_dir=manual))
    return builder


def _open_tfds(spec: _TfdsSpec, data_dir: str, download: bool):
    import tensorflow_datasets as tfds
    builder = tfds.builder(spec.tfds_name, data_dir=data_dir)
    if not builder.is_prepared() and spec.manual_files:
        if not download:
            raise DatasetNotPreparedError(
                f"Dataset {spec.tfds_name!r} is not prepared in {data_dir} and download=False. "
                + _manual_instructions(spec, data_dir))
        builder = _prepare_manual(spec, data_dir)
    if not builder.is_prepared():
        if not download:
            raise DatasetNotPreparedError(
                f"Dataset {spec.tfds_name!r} is not prepared in {data_dir} and download=False. "
                + _prepare_instructions(spec.tfds_name, data_dir))
        if not _network_reachable():
            raise DatasetNotPreparedError(
                f"Dataset {spec.tfds_name!r} is not prepared in {data_dir} and cannot be "
                "downloaded: storage.googleapis.com is not reachable from this machine. "
                + _prepare_instructions(spec.tfds_name, data_dir))
        builder = tfds.builder(spec.tfds_name, data_dir=data_dir, file_format="array_record")
        builder.download_and_prepare(file_format="array_record")
    info = builder.info
    formats = {info.file_format, *getattr(info, "alternative_file_formats", ())}
    if tfds.core.FileFormat.ARRAY_RECORD not in formats:
        raise DatasetNotPreparedError(
            f"Dataset {spec.tfds_name!r} is prepared in {builder.data_dir} in the "
            f"{info.file_format} format, which has no random access. Convert it with\n"
            f"    tfds convert_format --dataset_version_dir={builder.data_dir} "
            "--out_file_format=array_record\n"
            f"or rebuild it with `tfds build {spec.tfds_name} --file_format=array_record`.")
    sizes = {k: v.num_examples for k, v in info.splits.items()}
    return builder, sizes


# --------------------------------------------------------------------------- mock data

_MOCK = types.SimpleNamespace(num_examples=None)  # Process-wide, so that worker threads see it.


@contextlib.contextmanager
def mock_datasets(num_examples: int = 64):
    """Within this context, :func:`get_source` returns mock data for every TFDS dataset.

    Records are random but of the dataset's real feature spec (via ``tfds.testing.mock_data``),
    ``num_examples`` per base split, post-processed like real data (so ``celeb_a`` mock images are
    64x64). ``digits``, ``mnist_8k`` and ``npz:`` sources stay real. For tests of training code::

        with jaxflows.data.mock_datasets(num_examples=32):
            train_and_evaluate(cifar10_config, workdir)
    """
    if num_examples < 1:
        raise ValueError(f"num_examples: expected a positive count, got {num_examples}.")
    previous = _MOCK.num_examples
    _MOCK.num_examples = num_examples
    try:
        yield
    finally:
        _MOCK.num_examples = previous


def _mock_tfds(spec: _TfdsSpec, base_splits: Sequence[str], num_examples: int):
    import tensorflow_datasets as tfds
    out = {}
    with tfds.testing.mock_data(num_examples=num_examples):
        for s in base_splits:
            ds = tfds.data_source(spec.tfds_name, split=spec.split_aliases.get(s, s),
                                  download=False)
            out[s] = _tfds_source(spec, ds, batched_reads=False)
    return out


def _tfds_source(spec: _TfdsSpec, data_source, **kw) -> TfdsSource:
    """The :class:`TfdsSource` of ``spec`` (post-processing, keys, label maps) over a data
    source.
    """
    return TfdsSource(data_source, transform=spec.transform, has_label=spec.has_label,
                      image_shape=spec.info.image_shape, image_key=spec.image_key,
                      label_key=spec.label_key, label_transform=spec.label_transform,
                      label_shape=spec.info.label_shape, **kw)


# --------------------------------------------------------------------------- digits


def _digits_streams(root: str) -> dict[str, TfdsSource]:
    from jaxflows.data import digits as digits_lib  # imports TFDS: only when digits is used
    builder = digits_lib.ensure_prepared(root)
    return {s: TfdsSource(builder.as_data_source(split=s)) for s in _DIGITS_INFO.split_sizes}


@functools.lru_cache(maxsize=8)
def _digits_arrays(root: str) -> dict[str, ArraySource]:
    out = {}
    for s, stream in _digits_streams(root).items():
        out[s] = stream.to_array_source()
        out[s].images.setflags(write=False)
        out[s].labels.setflags(write=False)
    return out


# --------------------------------------------------------------------------- mnist_8k


@functools.lru_cache(maxsize=1)
def _mnist_8k_source() -> ArraySource:
    return ArraySource(*mnist_8k_lib.load())  # read-only arrays, read once per process


def _mnist_8k_splits(full=None) -> dict[str, tuple[ArraySource, int, int]]:
    full = _mnist_8k_source() if full is None else full
    n_train = mnist_8k_lib.NUM_TRAIN
    return {"train": (full, 0, n_train), "test": (full, n_train, len(full))}


@functools.lru_cache(maxsize=1)
def _mnist_8k_seg_source() -> ArraySource:
    """mnist_8k with label maps: ``1 + class`` where the pixel is >= 128, else 0."""
    images, labels = mnist_8k_lib.load()
    maps = np.where(images[..., 0] >= MNIST_8K_SEG_THRESHOLD, 1 + labels[:, None, None], 0)
    source = ArraySource(images, maps.astype(np.int32))
    source.labels.setflags(write=False)
    return source


# --------------------------------------------------------------------------- vector datasets


def _is_vector(name) -> bool:
    from jaxflows.data import tabular
    return tabular.is_vector_dataset(name)


def _vector_info(name: str, data_dir, pad: int) -> DatasetInfo:
    """DatasetInfo of a vector dataset (reads the files of the MAF sets for their sizes)."""
    from jaxflows.data import tabular
    if pad:
        raise ValueError(f"pad={pad}: {name!r} is a vector dataset; padding applies to images "
                         "only (config.dataset.pad must be 0).")
    spec = tabular.VECTOR_DATASETS[name]
    sizes = spec.sizes
    if sizes is None:
        sizes = {k: len(v) for k, v in tabular.vector_splits(name, data_dir).items()}
    return DatasetInfo(name, (spec.dim,), None, spec.num_classes, dict(sizes), 0, "vector")


# --------------------------------------------------------------------------- public API


def _resolve(name: str):
    if not isinstance(name, str):
        raise _unknown_name(name)
    if name.startswith(_NPZ_PREFIX):
        return "npz", None
    if name in _OFFLINE_INFOS:
        return name, None
    if name in _TFDS_SPECS:
        return "tfds", _TFDS_SPECS[name]
    raise _unknown_name(name)


def get_info(name: str, *, data_dir: str | os.PathLike | None = None,
             pad: int = 0) -> DatasetInfo:
    """Static information about dataset ``name`` (see the module docstring for the names).

    For ``npz:`` names the file is read (shape, levels = 256, classes = max label + 1 if it has
    labels). TFDS datasets report their published split sizes unless they are prepared in
    ``data_dir``, whose actual sizes are then used. With ``pad > 0`` the ``image_shape`` is
    that of the images :func:`get_source` serves with the same ``pad``:
    ``(H + 2 pad, W + 2 pad, C)``. Unknown names or a negative / non-int ``pad`` raise
    ``ValueError``.
    """
    pad = _check_pad(pad)
    if _is_vector(name):
        return _vector_info(name, data_dir, pad)
    return _padded_info(_get_info(name, data_dir), pad)


def _get_info(name, data_dir) -> DatasetInfo:
    kind, spec = _resolve(name)
    if kind in _OFFLINE_INFOS:
        return _OFFLINE_INFOS[kind]
    if kind == "npz":
        full, splits = _npz_splits(name)
        with np.load(_parse_npz_name(name)[0]) as f:
            num_classes = int(np.max(f["label"])) + 1 if "label" in f and f["label"].size else None
        return DatasetInfo(name, full.image_shape, 256, num_classes,
                           {k: stop - start for k, (_, start, stop) in splits.items()},
                           label_shape=full.label_shape)
    import tensorflow_datasets as tfds
    try:
        builder = tfds.builder(spec.tfds_name, data_dir=default_data_dir(data_dir))
        if builder.is_prepared():
            sizes = {k: v.num_examples for k, v in builder.info.splits.items()}
            sizes.update({a: sizes[t] for a, t in spec.split_aliases.items() if t in sizes})
            return dataclasses.replace(spec.info, split_sizes=sizes)
    except Exception:  # Metadata only: any failure falls back to the published sizes.
        pass
    return spec.info


def get_source(name: str, split: str = "train", *, data_dir: str | os.PathLike | None = None,
               download: bool = False, in_memory: bool | None = None, mock: bool = False,
               mock_num_examples: int | None = None, pad: int = 0):
    """A random-access source of ``{"image": uint8 [H, W, C], "label": int}`` records.

    ``"label"`` is an int32 label map ``[H, W]`` instead for datasets whose
    ``get_info(name).label_shape`` is ``(H, W)`` (``cityscapes_256``, ``npz:`` files with
    ``[N, H, W]`` labels).

    Args:
      name: a dataset name (see the module docstring), e.g. ``"digits"``, ``"mnist_8k"``
        (8,000 real MNIST digits in the package), ``"mnist"`` (TFDS, the full data),
        ``"cifar10"``, ``"npz:/path/file.npz"``.
      split: ``"train"``, ``"test"`` (``"validation"`` for celeb_a) with optional TFDS slicing such
        as ``"train[:90%]"``, ``"train[1350:]"``, ``"train+test"``.
      data_dir: TFDS data directory (default ``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``).
        ``digits`` is prepared there automatically on first use; ``mnist_8k`` and ``npz:``
        do not use it.
      download: download and prepare a TFDS dataset that is not prepared (checks first, with a 3 s
        timeout, that the network is reachable). Without it a missing dataset raises
        :class:`DatasetNotPreparedError` at once, with instructions. A dataset behind a
        registration (``cityscapes_256``) is prepared from its manually downloaded files in
        ``data_dir/downloads/manual``; missing files raise the same error, naming them.
      in_memory: read the whole split into memory (an :class:`ArraySource`): fast random access for
        small datasets. ``None`` (default) does so when the split's images take at most 16 MiB
        (``digits``, ``mnist_8k``, sliced or mock data), and streams from the array_record files
        otherwise. ``npz:`` sources are always views of the loaded file; for ``mnist_8k``,
        ``in_memory=False`` serves such a view instead of a copy of the split.
      mock: random records of the dataset's spec instead of real data (see :func:`mock_datasets`).
      mock_num_examples: records per base split for mock data (default 64).
      pad: zero pixels added on each side of the height and width of every image
        (``[H, W, C] -> [H + 2 pad, W + 2 pad, C]``, see :func:`pad_images`; label maps
        are padded with class 0, :func:`pad_labels`); 0 (default) serves the images as
        stored. ``get_info(name, pad=pad).image_shape`` is the shape served.

    Raises:
      ValueError: unknown ``name`` (lists the known names), invalid ``split``, or a negative
        or non-int ``pad``.
      DatasetNotPreparedError: a TFDS dataset that is not prepared and was not downloaded.
    """
    pad = _check_pad(pad)
    if _is_vector(name):
        _vector_info(name, data_dir, pad)  # pad must be 0
        from jaxflows.data import tabular
        source = _split_by_spec(split, {k: (v, 0, len(v)) for k, v in
                                        tabular.vector_splits(name, data_dir).items()}, name)
        if len(source) == 0:
            raise ValueError(f"split: {split!r} of {name!r} selects no records.")
        return source
    kind, spec = _resolve(name)
    if kind == "npz":
        _, splits = _npz_splits(name)
        source = _split_by_spec(split, splits, name)
    elif kind == "digits":
        root = os.path.abspath(default_data_dir(data_dir))
        if in_memory is False:
            base = {s: (src, 0, len(src)) for s, src in _digits_streams(root).items()}
        else:  # 200 KB in all: read once per process, then sliced in memory.
            base = {s: (src, 0, len(src)) for s, src in _digits_arrays(root).items()}
        source = _split_by_spec(split, base, name)
    elif kind == "mnist_8k":
        source = _split_by_spec(split, _mnist_8k_splits(), name)
    elif kind == "mnist_8k_seg":
        source = _split_by_spec(split, _mnist_8k_splits(_mnist_8k_seg_source()), name)
    elif kind == "sklearn_patches":
        base = {s: ArraySource(sklearn_images_lib.load(s)) for s in sklearn_images_lib.IMAGE_FILES}
        source = _split_by_spec(split, {s: (a, 0, len(a)) for s, a in base.items()}, name)
    else:
        mock_n = _MOCK.num_examples
        if mock or mock_n is not None:
            n = mock_num_examples or mock_n or 64
            mocked = _mock_tfds(spec, list(spec.info.split_sizes), n)
            source = _split_by_spec(split, {s: (src, 0, n) for s, src in mocked.items()}, name)
        else:
            root = default_data_dir(data_dir)
            builder, sizes = _open_tfds(spec, root, download)
            base = {}
            for tfds_split, n in sizes.items():
                ds = builder.as_data_source(split=tfds_split)
                base[tfds_split] = (_tfds_source(spec, ds), 0, n)
            # Aliases, e.g. imagenet's "test" = "validation".
            for alias, target in spec.split_aliases.items():
                if target in base:
                    base[alias] = base[target]
            source = _split_by_spec(split, base, name)
    if len(source) == 0:
        raise ValueError(f"split: {split!r} of {name!r} selects no records.")
    if kind != "npz":
        info = _OFFLINE_INFOS[kind] if kind in _OFFLINE_INFOS else spec.info
        image_bytes = len(source) * int(np.prod(info.image_shape))
        if info.label_shape:   # int32 label maps count too
            image_bytes += len(source) * 4 * int(np.prod(info.label_shape))
        if in_memory or (in_memory is None and image_bytes <= 16 * 2**20):
            batch = source.get_batch(np.arange(len(source)))
            return _padded(ArraySource(batch["image"], batch["label"]), pad)
    return _padded(source, pad)

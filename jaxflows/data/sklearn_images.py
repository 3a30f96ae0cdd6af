"""The offline ``sklearn_patches`` dataset: 32x32 RGB patches of scikit-learn's two photos.

Provenance: scikit-learn ships two natural photographs inside the package,
``sklearn/datasets/images/china.jpg`` and ``flower.jpg`` (427x640x3 uint8 each, read by
:func:`sklearn.datasets.load_sample_image`, which decodes the JPEGs with Pillow). No network
is used. Their licence, as scikit-learn documents it (``sklearn/datasets/images/README.txt``;
scikit-learn's user guide, "Sample images"): both are "Released under a creative commons
license" -- Creative Commons Attribution 2.0 Generic (CC BY 2.0,
https://creativecommons.org/licenses/by/2.0/) -- retrieved on 21 August 2011 from Flickr by
Robert Layton:

* ``china.jpg``: "Some rights reserved by danielbuechele",
  https://www.flickr.com/photos/danielbuechele/6061409035/
* ``flower.jpg``: https://www.flickr.com/photos/vultilion/6056698931/ (scikit-learn's
  README names "danielbuechele" in the attribution line of this image too, but its link
  points to the Flickr user "vultilion": the README's own inconsistency, reproduced here as
  it stands).

The images are not copied into jaxflows: they are read from the installed scikit-learn
(CC BY 2.0 requires the attribution above wherever figures made from them are shown).

Patch layout: each image is cut into 32x32x3 patches on a fixed grid of **stride 16**
(half-overlapping): top-left corners at rows ``0, 16, ..., 384`` (25 rows, since
``(427 - 32) // 16 + 1 = 25``; the last 11 image rows are never covered) and columns
``0, 16, ..., 608`` (39 columns, ``(640 - 32) // 16 + 1 = 39``, the whole width),
**975 patches per image**, in row-major order of the grid (patch ``i`` has its corner at
row ``16 * (i // 39)``, column ``16 * (i % 39)``). Values are the JPEG's 8-bit pixels
(256 levels); no label (every record's label is 0).

Splits: ``train`` = the 975 patches of ``china.jpg``, ``test`` = the 975 patches of
``flower.jpg`` (train on one photograph, test on the other). With ``train[:90%]`` /
``train[90%:]`` (878 / 97 patches) the validation patches are the bottom ~2.5 grid rows of
the china photo; since neighbouring grid rows overlap by 16 pixels, the first validation
row shares its top half with the last training row -- validation is therefore slightly
optimistic, the test split (a different photograph) is not affected.

The decoded pixels depend on the JPEG decoder (Pillow's libjpeg build): different
installations may differ by a level here and there, so figures are reproducible only up to
that.
"""

from __future__ import annotations

import functools

import numpy as np

__all__ = ["IMAGE_FILES", "IMAGE_SHAPE", "NUM_BINS", "NUM_PER_IMAGE", "PATCH", "STRIDE",
           "grid_corners", "load", "patches"]

PATCH = 32
STRIDE = 16
NUM_BINS = 256
IMAGE_SHAPE = (PATCH, PATCH, 3)
#: The photos of the ``train`` and ``test`` splits, as named in scikit-learn.
IMAGE_FILES = {"train": "china.jpg", "test": "flower.jpg"}
_PHOTO_SHAPE = (427, 640, 3)
NUM_PER_IMAGE = (((_PHOTO_SHAPE[0] - PATCH) // STRIDE + 1)
                 * ((_PHOTO_SHAPE[1] - PATCH) // STRIDE + 1))  # 25 * 39 = 975


def grid_corners(height: int, width: int, patch: int = PATCH,
                 stride: int = STRIDE) -> np.ndarray:
    """Top-left corners ``[N, 2]`` (row, column) of the patch grid, in row-major order."""
    if height < patch or width < patch:
        raise ValueError(f"height, width: expected at least patch={patch}, "
                         f"got {height}x{width}.")
    rows = np.arange(0, height - patch + 1, stride)
    cols = np.arange(0, width - patch + 1, stride)
    r, c = np.meshgrid(rows, cols, indexing="ij")
    return np.stack([r.ravel(), c.ravel()], axis=1)


def patches(image: np.ndarray, patch: int = PATCH, stride: int = STRIDE) -> np.ndarray:
    """The ``patch x patch`` patches of ``image [H, W, C]`` on the stride-``stride`` grid.

    Returns ``[N, patch, patch, C]`` in the row-major order of :func:`grid_corners`.
    """
    image = np.asarray(image)
    if image.ndim != 3:
        raise ValueError(f"image: expected [H, W, C], got shape {image.shape}.")
    corners = grid_corners(image.shape[0], image.shape[1], patch, stride)
    return np.stack([image[r:r + patch, c:c + patch] for r, c in corners])


@functools.lru_cache(maxsize=2)
def load(split: str) -> np.ndarray:
    """The patches of base split ``split`` (``"train"``: china, ``"test"``: flower).

    Returns read-only uint8 ``[975, 32, 32, 3]``, cached per process. Raises ``ValueError``
    for another ``split`` and ``RuntimeError`` if scikit-learn's photo is not the documented
    427x640x3 uint8 image.
    """
    if split not in IMAGE_FILES:
        raise ValueError(f"split: expected one of {sorted(IMAGE_FILES)} (base splits of "
                         f"'sklearn_patches'), got {split!r}.")
    from sklearn.datasets import load_sample_image
    photo = np.asarray(load_sample_image(IMAGE_FILES[split]))
    if photo.shape != _PHOTO_SHAPE or photo.dtype != np.uint8:
        raise RuntimeError(f"scikit-learn's {IMAGE_FILES[split]}: expected uint8 "
                           f"{_PHOTO_SHAPE}, got {photo.dtype} {photo.shape}.")
    out = np.ascontiguousarray(patches(photo))
    out.setflags(write=False)
    return out

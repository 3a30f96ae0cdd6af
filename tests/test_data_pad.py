"""Tests of dataset padding: ``jaxflows.data.get_source(..., pad=p)`` and ``config.dataset.pad``.

Padded images are ``[H + 2p, W + 2p, C]`` uint8 with the original in the centre and zeros
around it, for in-memory (digits, mnist_8k), streamed (digits and mnist_8k with
``in_memory=False``) and TFDS (mock records) sources; the trainer builds the model for the
padded shape, counts bits/dim over the padded dimensions and refuses a work directory trained
with another pad.
"""
import os

import numpy as np
import pytest

import jaxflows.data as jd
from jaxflows import train as jt


def _assert_padded(padded, original, pad):
    padded, original = np.asarray(padded), np.asarray(original)
    n, h, w, c = original.shape
    assert padded.shape == (n, h + 2 * pad, w + 2 * pad, c) and padded.dtype == np.uint8
    np.testing.assert_array_equal(padded[:, pad:pad + h, pad:pad + w], original)
    border = np.ones(padded.shape[1:3], bool)
    border[pad:pad + h, pad:pad + w] = False
    assert not padded[:, border].any()


def test_pad_images():
    images = np.arange(2 * 3 * 2 * 1, dtype=np.uint8).reshape(2, 3, 2, 1) + 1
    _assert_padded(jd.pad_images(images, 2), images, 2)
    assert jd.pad_images(images, 0) is images
    with pytest.raises(ValueError, match="images"):
        jd.pad_images(images[0], 1)


@pytest.mark.parametrize("in_memory", [None, False])
def test_mnist_8k_pad2_gives_32x32_with_zero_border(in_memory):
    name = "mnist_8k"
    info = jd.get_info(name, pad=2)
    assert info.image_shape == (32, 32, 1) and info.pad == 2
    assert jd.get_info(name).image_shape == (28, 28, 1)
    plain = jd.get_source(name, "test[:64]", in_memory=in_memory)
    padded = jd.get_source(name, "test[:64]", in_memory=in_memory, pad=2)
    assert len(padded) == len(plain) == 64
    # In memory: padded once into an ArraySource; a view of the arrays: padded per batch.
    assert isinstance(padded, jd.ArraySource if in_memory is None else jd.PaddedSource)
    indices = np.arange(64)
    a, b = plain.get_batch(indices), padded.get_batch(indices)
    _assert_padded(b["image"], a["image"], 2)
    np.testing.assert_array_equal(b["label"], a["label"])
    assert a["image"].max() > 0                       # real digits, not a blank slice
    record = padded[5]
    _assert_padded(record["image"][None], plain[5]["image"][None], 2)
    # Through the loader (what the trainer feeds the model): 32x32 batches.
    loader = jd.make_loader(padded, global_batch_size=16, seed=0, process_index=0,
                            process_count=1)
    batch = next(loader)
    assert batch["image"].shape == (16, 32, 32, 1) and batch["image"].dtype == np.uint8
    assert not batch["image"][:, :2].any() and not batch["image"][:, :, -2:].any()


@pytest.mark.parametrize("in_memory", [None, False])
def test_digits_pad4_gives_16x16(in_memory):
    plain = jd.get_source("digits", "test[:20]", in_memory=in_memory)
    padded = jd.get_source("digits", "test[:20]", in_memory=in_memory, pad=4)
    if in_memory is None:   # small split: read into memory, padded once
        assert isinstance(padded, jd.ArraySource) and padded.image_shape == (16, 16, 1)
    else:                   # streamed: padded per batch
        assert isinstance(padded, jd.PaddedSource)
    idx = np.arange(20)
    _assert_padded(padded.get_batch(idx)["image"], plain.get_batch(idx)["image"], 4)
    assert jd.get_info("digits", pad=4).image_shape == (16, 16, 1)


def test_tfds_mock_source_is_padded():
    plain = jd.get_source("cifar10", "train", mock=True, mock_num_examples=8, in_memory=False)
    padded = jd.get_source("cifar10", "train", mock=True, mock_num_examples=8,
                           in_memory=False, pad=1)
    assert isinstance(padded, jd.PaddedSource)
    idx = np.arange(8)
    _assert_padded(padded.get_batch(idx)["image"], plain.get_batch(idx)["image"], 1)
    assert jd.get_info("cifar10", pad=1).image_shape == (34, 34, 3)


@pytest.mark.parametrize("pad", [-1, 1.5, True, "2"])
def test_bad_pad_is_a_value_error(pad):
    for fn in (jd.get_source, jd.get_info):
        with pytest.raises(ValueError, match="pad"):
            fn("digits", pad=pad)
    c = jt.default_config()
    with c.unlocked(), c.ignore_type():
        c.dataset.pad = pad
    with pytest.raises(ValueError, match=r"config\.dataset\.pad"):
        jt.validate_config(c)


def _tiny_config(pad):
    return jt.set_fields(
        jt.default_config(),
        dataset=dict(name="digits", train_split="train[:256]", val_split="",
                     test_split="test[:64]", pad=pad),
        model=dict(name="glow", levels=1, steps_per_level=1, hidden_channels=4,
                   preprocessing="logit"),
        batch_size=16, eval_batch_size=64, init_batch_size=32, num_train_steps=2,
        optim=dict(warmup_steps=1), log_every=1, eval_every=2, checkpoint_every=2,
        eval_test_during_training=False, sample_temperatures=(0.7,), num_samples=4,
        progress_bar=False)


def test_training_with_pad_uses_the_padded_shape(tmp_path):
    padded = _tiny_config(4)
    info = jt.validate_config(padded)
    assert info.image_shape == (16, 16, 1)
    assert jt.model_fingerprint(padded, info) != jt.model_fingerprint(
        _tiny_config(0), jt.validate_config(_tiny_config(0)))
    run = jt.prepare_run(padded)
    assert run.num_dims == 16 * 16 and run.flow.event_shape == (16, 16, 1)
    assert run.train_src.get_batch([0])["image"].shape == (1, 16, 16, 1)

    work = str(tmp_path / "w")
    res = jt.train_and_evaluate(padded, work)
    assert res["step"] == 2 and np.isfinite(res["test_bpd"])
    # Samples are saved at the padded size: 4 images of 16x16 in a 2x2 grid (1-pixel gaps).
    from PIL import Image
    grid = 2 * (16 + 1) + 1
    assert Image.open(os.path.join(work, "samples_T0.7.png")).size == (grid * (256 // grid),) * 2
    # The same model on unpadded 8x8 images is another fingerprint: the workdir is refused.
    with pytest.raises(ValueError, match="different model"):
        jt.prepare_run(_tiny_config(0), work)

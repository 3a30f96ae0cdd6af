"""The trainer's context seam (``config.dataset.context``): labels and low-resolution images.

A tiny conditional image flow (two affine checkerboard couplings whose conditioners see
the context: a one-hot label broadcast over the pixels, or the low-resolution image
upsampled to full size) is registered under a test-only model name and trained on the
8x8 digits: a few steps, an exact resume after a crash, evaluation and sampling.
"""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxflows import models
from jaxflows import train as jt
from jaxflows.bijectors.base import Bijector, Chain
from jaxflows.bijectors.coupling import Coupling
from jaxflows.bijectors.preprocessing import ScaleToUnit
from jaxflows.bijectors.transformers import Affine
from jaxflows.distributions.flow import Flow
from jaxflows.train.step import make_context

NAME = "tiny_conditional_test"


class _EmbedContext(Bijector):
    """Turns the trainer's raw context into conditioner features for ``inner``.

    int labels ``[B]`` -> one-hot ``[B, num_classes]``; a low-resolution image
    ``[B, h, w, C]`` -> nearest-neighbour upsampled to the input's size, over num_bins.
    """

    inner: Bijector
    num_classes: int = 10
    num_bins: float = 256

    def _embed(self, x, context):
        if context is None:
            raise ValueError("_EmbedContext: a context is required.")
        if context.ndim == 1:
            return jax.nn.one_hot(context, self.num_classes, dtype=x.dtype)
        f = x.shape[1] // context.shape[1]
        up = jnp.repeat(jnp.repeat(context, f, axis=1), f, axis=2)
        return up.astype(x.dtype) / self.num_bins

    def forward_and_log_det(self, x, *, context=None, train=False):
        return self.inner.forward_and_log_det(x, context=self._embed(x, context), train=train)

    def inverse_and_log_det(self, y, *, context=None, train=False):
        return self.inner.inverse_and_log_det(y, context=self._embed(y, context), train=train)


def tiny_conditional(image_shape, *, num_bins=256, num_classes=10, hidden_channels=8):
    couplings = [Coupling(transformer=Affine("sigmoid"), hidden_channels=hidden_channels,
                          mask="checkerboard", conditioner="glow", num_blocks=1, parity=p)
                 for p in (0, 1)]
    inner = Chain([ScaleToUnit(num_bins=num_bins), *couplings])
    return Flow(_EmbedContext(inner, num_classes=num_classes, num_bins=num_bins),
                event_shape=tuple(image_shape))


@pytest.fixture(scope="module", autouse=True)
def registered():
    """The test model in jaxflows.models.MODELS for this module only."""
    mp = pytest.MonkeyPatch()
    mp.setitem(models.MODELS, NAME, tiny_conditional)
    yield
    mp.undo()


def config(context, **overrides):
    """The tiny run of the test model on digits with ``context``, and ``key=value`` overrides."""
    c = jt.set_fields(
        jt.default_config(),
        dataset=dict(name="digits", train_split="train[:400]", val_split="train[1400:1480]",
                     test_split="test[:80]", context=context),
        model=dict(name=NAME), batch_size=16, eval_batch_size=40, init_batch_size=16,
        num_train_steps=6, optim=dict(learning_rate=3e-3, warmup_steps=0), ema_decay=0.0,
        log_every=3, eval_every=3, checkpoint_every=3, sample_temperatures=(1.0,),
        num_samples=20, progress_bar=False)
    return jt.set_fields(c, overrides)


class _CrashError(Exception):
    pass


@pytest.fixture(scope="module")
def label_runs(tmp_path_factory):
    """An uninterrupted label-conditioned run A, and a run B crashed at step 4, resumed."""
    root = tmp_path_factory.mktemp("ctx")
    a, b = str(root / "a"), str(root / "b")
    res_a = jt.train_and_evaluate(config("label"), a)

    def crash(step, state):
        if step == 4:
            raise _CrashError()
    with pytest.raises(_CrashError):
        jt.train_and_evaluate(config("label"), b, hooks=[crash])
    res_b = jt.train_and_evaluate(config("label"), b)
    return a, b, res_a, res_b


def test_label_context_trains_resumes_exactly_and_samples(label_runs):
    a, b, res_a, res_b = label_runs
    assert np.isfinite(res_a["test_bpd"]) and res_a["step"] == 6
    assert res_a["test_bpd"] == res_b["test_bpd"]
    assert res_a["val_bpd"] == res_b["val_bpd"]
    run = jt.prepare_run(config("label"), a)
    sa = jt.restore_for_eval(a, jt.abstract_state(run), "checkpoints")[0]
    sb = jt.restore_for_eval(b, jt.abstract_state(run), "checkpoints")[0]
    for x, y in zip(jax.tree_util.tree_leaves(sa.params), jax.tree_util.tree_leaves(sb.params)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert os.path.exists(res_a["samples"]["1"])
    # the sample grid's labels: sample i is of class i mod 10
    np.testing.assert_array_equal(run.sample_cond["label"], np.arange(20) % 10)
    # the fingerprint records the context; the description shows it
    with open(os.path.join(a, "config.json")) as f:
        assert json.load(f)["dataset"]["context"] == "label"
    assert jt.describe_model(config("label"))["context"] == "label"
    assert jt.model_fingerprint(config("label")) != jt.model_fingerprint(config(""))
    assert "context" not in jt.describe_model(config(""))


def test_label_context_changes_the_density(label_runs):
    """After training, the flow's density depends on the label it is given."""
    a, _, res_a, _ = label_runs
    run = jt.prepare_run(config("label"), a)
    state = jt.restore_for_eval(a, jt.abstract_state(run), "best")[0]
    x = jnp.asarray(run.val_src.get_batch(np.arange(8))["image"], jnp.float32) + 0.5
    lp0 = run.flow.apply(state.variables(), x, context=jnp.zeros(8, jnp.int32))
    lp1 = run.flow.apply(state.variables(), x, context=jnp.ones(8, jnp.int32))
    assert np.all(np.isfinite(lp0)) and not np.allclose(lp0, lp1)
    # the trainer's evaluation passes the true labels: matches a direct computation
    # up to the dequantisation noise (bounded: u in [0, 1))
    bpd = jt.evaluate_split(run, state, run.val_src, 1)
    assert abs(bpd - res_a["val_bpd"]) < 1e-5


def run_demo(work: str, png: str, capsys) -> dict:
    """experiments/conditional_demo.py on ``work`` (small settings): its JSON's metrics."""
    from experiments import conditional_demo
    capsys.readouterr()
    code = conditional_demo.main(["conditional_demo.py", f"--workdir={work}", f"--out={png}",
                                  "--num_images=3", "--num_eval=6", "--num_draws=2"])
    assert code == 0, capsys.readouterr().err
    with open(os.path.splitext(png)[0] + ".json") as f:
        return json.load(f)


def test_lowres_context_trains_evaluates_samples(tmp_path, capsys):
    c = config("lowres:2", num_train_steps=3)
    res = jt.train_and_evaluate(c, str(tmp_path))
    assert np.isfinite(res["test_bpd"]) and np.isfinite(res["val_bpd"])
    run = jt.prepare_run(c, str(tmp_path))
    # the samples' contexts are the first num_samples validation images
    first = run.val_src.get_batch(np.arange(20))["image"]
    np.testing.assert_array_equal(run.sample_cond["image"], first)
    assert os.path.exists(res["samples"]["1"])
    assert jt.describe_model(c)["context"] == "lowres:2"
    # experiments/conditional_demo.py's super-resolution figure and metrics
    metrics = run_demo(str(tmp_path), str(tmp_path / "sr.png"), capsys)
    assert metrics["columns"] == ["LR (nearest)", "bicubic", "T=0", "T=0.5", "T=0.9", "T=1",
                                  "HR"]
    assert metrics["scale"] == 2 and metrics["num_images"] == 6
    for key in ("bicubic", "T=0", "T=0.5", "T=0.9", "T=1"):
        m = metrics[key]
        # PSNR of images in the pixel range is bounded below by that of the worst image
        assert all(-5.0 < m[k] < 200.0 for k in ("psnr", "lr_psnr")), (key, m)
        assert -1.0 <= m["ssim"] <= 1.0, (key, m)
    assert metrics["T=0"]["diversity"] == 0.0 and metrics["T=1"]["diversity"] > 0.0
    assert all(0 <= metrics[f"T={t}"]["nonfinite_samples"] <= 6 for t in ("0", "0.5", "0.9", "1"))


def test_make_context_lowres_is_the_box_mean():
    images = np.arange(2 * 4 * 6 * 3, dtype=np.uint8).reshape(2, 4, 6, 3)
    got = np.asarray(make_context("lowres:2")(jnp.asarray(images), None))
    want = images.astype(np.float32).reshape(2, 2, 2, 3, 2, 3).mean(axis=(2, 4))
    assert got.dtype == np.float32 and got.shape == (2, 2, 3, 3)
    np.testing.assert_allclose(got, want)
    labels = np.asarray(make_context("label")(None, jnp.asarray([3, 1], jnp.int8)))
    assert labels.dtype == np.int32 and labels.tolist() == [3, 1]
    assert make_context("")(images, None) is None


@pytest.mark.parametrize("value, match", [
    ("labels", "config.dataset.context must be"),
    ("lowres:0", "config.dataset.context must be"),
    ("lowres:x", "config.dataset.context must be"),
    ("lowres:3", r"config.dataset.context='lowres:3'.*divisible by 3"),
    ("mask:0", "config.dataset.context must be"),
    ("mask:", "config.dataset.context must be"),
    ("mask:17", r"config.dataset.context='mask:17'.*below the dataset's 17 pixel levels"),
])
def test_bad_context_values(value, match):
    with pytest.raises(ValueError, match=match):
        jt.prepare_run(config(value))


def test_label_context_needs_labels():
    c = config("label")
    c.dataset.name = "two_moons"
    c.dataset.train_split, c.dataset.val_split, c.dataset.test_split = (
        "train", "validation", "test")
    c.model.name = "maf"
    with pytest.raises(ValueError, match="config.dataset.context='label'.*no class labels"):
        jt.prepare_run(c)


# ------------------------------------------------------------ segmentation-mask context
def test_make_context_mask_is_the_thresholded_image():
    images = np.array([[[[0, 10], [8, 8]], [[7, 9], [16, 0]]]], np.uint8)   # [1, 2, 2, 2]
    got = np.asarray(make_context("mask:8")(jnp.asarray(images), None))
    assert got.dtype == np.int32 and got.shape == (1, 2, 2)
    # channel means 5, 8 / 8, 8: at least 8 is foreground
    assert got.tolist() == [[[0, 1], [1, 1]]]


def test_mask_context_trains_cattnflow_and_the_demo_draws_from_masks(tmp_path, capsys):
    """Segmentation to image through the trainer: cAttnFlow with a two-class map of each
    digit, a few steps, samples, and experiments/conditional_demo.py's mask figure.
    """
    from experiments import conditional_demo
    c = config("mask:8", num_train_steps=3, sample_temperatures=(0.7,), num_samples=4)
    c.model = jt.default_config().model
    jt.set_fields(c, model=dict(name="cattnflow", num_classes=2, context_shape=(8, 8),
                                levels=1, steps_per_level=1, hidden_channels=4,
                                seg_features=4, seg_layers=1, attention="imap",
                                position=4))
    work = str(tmp_path / "seg")
    res = jt.train_and_evaluate(c, work)
    assert np.isfinite(res["test_bpd"]) and os.path.exists(res["samples"]["0.7"])
    assert jt.describe_model(c)["context"] == "mask:8"
    png = str(tmp_path / "seg.png")
    metrics = run_demo(work, png, capsys)
    assert metrics["columns"][0] == "mask" and metrics["columns"][-1] == "image"
    for t in ("0", "0.5", "0.9", "1"):
        m = metrics[f"T={t}"]
        assert 0.0 <= m["mask_agreement"] <= 1.0 and np.isfinite(m["psnr"]), m
        assert 0 <= m["nonfinite_samples"] < 6, m
    assert 0.0 <= metrics["mask_agreement_other_image"] <= 1.0
    assert metrics["T=0"]["diversity"] == 0.0 and metrics["T=1"]["diversity"] > 0.0
    # the demo's metrics skip samples that the inverse sent to inf / NaN, and count them
    px = np.zeros((3, 2, 2, 1))
    px[1, 0, 0, 0] = np.nan
    assert conditional_demo._finite_rows(px).tolist() == [True, False, True]
    draws = np.zeros((2, 3, 2, 2, 1))
    draws[1, 2, 1, 1, 0] = np.inf
    assert conditional_demo._finite_rows(draws).tolist() == [True, True, False]
    assert conditional_demo._uint8(px, 17.0)[1, 0, 0, 0] == 0
    # +-inf must not be clipped into the pixel range (it would count as a finite sample)
    pix = conditional_demo._to_pixels(np.array([-np.inf, 3.7, np.inf, np.nan, 99.0, -2.0]), 17.0)
    np.testing.assert_array_equal(pix, [np.nan, 3.0, np.nan, np.nan, 16.0, 0.0])
    assert conditional_demo._finite_rows(
        conditional_demo._to_pixels(draws, 17.0)).tolist() == [True, True, False]
    from PIL import Image
    w, h = Image.open(png).size
    assert w > h > 0   # 3 rows of 6 columns

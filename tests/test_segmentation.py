"""Segmentation to image through the trainer: ``config.dataset.context = "segmentation"``.

A tiny ``npz:`` dataset whose records carry a label *map* (the 8x8 scikit-learn digits
scaled to 0..240, each with the map ``1 + digit class`` on the stroke, 0 elsewhere: 11
classes) trains a tiny cAttnFlow (one level, one step, iMap) for a few steps through
``jaxflows.train.train_and_evaluate``; the run evaluates, samples from the first
validation maps, resumes exactly after a crash, and ``experiments/conditional_demo.py``
draws its figure. Bad configurations fail before any compute with errors naming
``config.dataset.context``.
"""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxflows import data as jd
from jaxflows import train as jt
from jaxflows.train.step import make_context

NUM_CLASSES = 11


@pytest.fixture(scope="module")
def seg_npz(tmp_path_factory):
    """160 digits (the last 40 the test split) with [N, 8, 8] label maps."""
    from sklearn.datasets import load_digits
    digits = load_digits()
    images = (digits.images[:160] * 15).astype(np.uint8)        # 0..240
    maps = np.where(images >= 128, 1 + digits.target[:160, None, None], 0)
    path = str(tmp_path_factory.mktemp("seg") / "seg.npz")
    np.savez(path, image=images, label=maps.astype(np.int16))
    return path, images, maps


def config(path, **overrides):
    c = jt.set_fields(
        jt.default_config(),
        dataset=dict(name=f"npz:{path}?test=40", train_split="train[:100]",
                     val_split="train[100:]", test_split="test", context="segmentation"),
        batch_size=16, eval_batch_size=40, init_batch_size=16, num_train_steps=4,
        optim=dict(learning_rate=3e-3, warmup_steps=0), ema_decay=0.0, log_every=2,
        eval_every=4, checkpoint_every=2, sample_temperatures=(0.7,), num_samples=4,
        progress_bar=False)
    jt.set_fields(c, model=dict(name="cattnflow", num_classes=NUM_CLASSES,
                                context_shape=(8, 8), levels=1, steps_per_level=1,
                                hidden_channels=4, seg_features=4, seg_layers=1,
                                attention="imap", position=4))
    return jt.set_fields(c, overrides)


class _CrashError(Exception):
    pass


@pytest.fixture(scope="module")
def runs(seg_npz, tmp_path_factory):
    """An uninterrupted run A, and a run B crashed after step 3 and resumed."""
    path = seg_npz[0]
    root = tmp_path_factory.mktemp("segruns")
    a, b = str(root / "a"), str(root / "b")
    res_a = jt.train_and_evaluate(config(path), a)

    def crash(step, state):
        if step == 3:
            raise _CrashError()
    with pytest.raises(_CrashError):
        jt.train_and_evaluate(config(path), b, hooks=[crash])
    res_b = jt.train_and_evaluate(config(path), b)
    return a, b, res_a, res_b


def test_segmentation_trains_evaluates_samples_and_resumes_exactly(seg_npz, runs):
    path, _, maps = seg_npz
    a, b, res_a, res_b = runs
    assert res_a["step"] == 4 and np.isfinite(res_a["test_bpd"]) and np.isfinite(
        res_a["val_bpd"])
    assert (res_a["test_bpd"], res_a["val_bpd"]) == (res_b["test_bpd"], res_b["val_bpd"])
    run = jt.prepare_run(config(path), a)
    assert run.info.label_shape == (8, 8) and run.info.num_classes == NUM_CLASSES
    sa = jt.restore_for_eval(a, jt.abstract_state(run), "checkpoints")[0]
    sb = jt.restore_for_eval(b, jt.abstract_state(run), "checkpoints")[0]
    for x, y in zip(jax.tree_util.tree_leaves(sa.params), jax.tree_util.tree_leaves(sb.params)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    # the samples' contexts: the first num_samples validation records' own maps
    np.testing.assert_array_equal(run.sample_cond["label"], maps[100:104])
    assert run.sample_cond["label"].dtype == np.int32
    assert os.path.exists(res_a["samples"]["0.7"])
    assert jt.describe_model(config(path))["context"] == "segmentation"
    # the evaluation's label buffers are maps: evaluating the val split again reproduces
    # the run's figure (same dequantisation noise)
    state = jt.restore_for_eval(a, jt.abstract_state(run), "best")[0]
    assert abs(jt.evaluate_split(run, state, run.val_src, 1) - res_a["val_bpd"]) < 1e-5


def test_the_density_depends_on_the_map(seg_npz, runs):
    """The run's compiled evaluation step scores the validation images differently under
    their own maps and under other images' maps (same noise): the map reaches the flow.
    """
    path, images, maps = seg_npz
    a = runs[0]
    run = jt.prepare_run(config(path), a)
    state = jt.restore_for_eval(a, jt.abstract_state(run), "best")[0]
    x = np.zeros((40, 8, 8, 1), np.uint8)
    x[:20] = images[100:120, ..., None]
    mask = np.zeros(40, np.float32)
    mask[:20] = 1

    def total(m):
        labels = np.zeros((40, 8, 8), np.int32)
        labels[:20] = m
        batch = jt.device_batch(run, {"image": x, "label": labels})
        out = run.steps.evaluate(state, batch, mask, np.array([0, 1, 2, 3], np.int32))
        return float(out[0]) / float(out[1])

    own, other = total(maps[100:120]), total(np.roll(maps[100:120], 1, axis=0))
    assert np.isfinite(own) and np.isfinite(other) and own != other


def test_conditional_demo_draws_segmentation_maps(seg_npz, runs, tmp_path, capsys,
                                                 monkeypatch):
    from experiments import conditional_demo

    def demo(out):
        capsys.readouterr()
        code = conditional_demo.main(["conditional_demo.py", f"--workdir={runs[0]}",
                                      f"--out={out}", "--num_images=3", "--num_eval=6",
                                      "--num_draws=2"])
        assert code == 0, capsys.readouterr().err
        return json.load(open(os.path.splitext(out)[0] + ".json"))

    png = str(tmp_path / "seg.png")
    metrics = demo(png)
    assert metrics["columns"][0] == "map" and metrics["columns"][-1] == "image"
    assert metrics["num_classes"] == NUM_CLASSES and metrics["classes_present"][0] == 0
    # an npz map is not a known function of the image: no agreement figure
    assert metrics["agreement"].startswith("not reported")
    for t in ("0", "0.5", "0.9", "1"):
        m = metrics[f"T={t}"]
        assert np.isfinite(m["psnr"]) and "foreground_agreement" not in m, m
    assert metrics["T=0"]["diversity"] == 0.0 and metrics["T=1"]["diversity"] > 0.0
    from PIL import Image
    with Image.open(png) as im:
        assert im.mode == "RGB" and im.size[0] > im.size[1] > 0    # 3 rows of 6 columns
    # these maps are class 0 exactly below 128 (mnist_8k_seg's rule): the agreement
    monkeypatch.setitem(conditional_demo.FOREGROUND_RULES, f"npz:{seg_npz[0]}?test=40", 128)
    metrics = demo(str(tmp_path / "rule.png"))
    assert metrics["agreement"].startswith("foreground: sample channel mean >= 128")
    assert 0.0 < metrics["foreground_agreement_other_image"] < 1.0
    for t in ("0", "0.5", "0.9", "1"):
        assert 0.0 <= metrics[f"T={t}"]["foreground_agreement"] <= 1.0


def test_demo_palette_is_fixed():
    from experiments.conditional_demo import CITYSCAPES_COLOURS, palette
    city = palette(34, "cityscapes_256")
    assert city.shape == (34, 3) and city.dtype == np.uint8
    assert tuple(city[7]) == (128, 64, 128) and tuple(city[26]) == (0, 0, 142)  # road, car
    assert len(CITYSCAPES_COLOURS) == 34
    other = palette(11, "mnist_8k_seg")
    assert tuple(other[0]) == (0, 0, 0) and len({tuple(c) for c in other}) == 11
    np.testing.assert_array_equal(other, palette(11, "mnist_8k_seg"))


def test_make_context_segmentation_is_the_label_map():
    images = jnp.zeros((2, 3, 4, 1), jnp.uint8)
    maps = jnp.arange(24, dtype=jnp.int16).reshape(2, 3, 4)
    got = make_context("segmentation")(images, maps)
    assert got.dtype == jnp.int32 and got.shape == (2, 3, 4)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(maps))
    with pytest.raises(ValueError, match="needs the batch's label maps"):
        make_context("segmentation")(images, None)
    with pytest.raises(ValueError, match=r"label maps \[B, H, W\].*\(2,\)"):
        make_context("segmentation")(images, jnp.zeros((2,), jnp.int32))


def test_scalar_label_dataset_is_refused(seg_npz):
    c = config(seg_npz[0])
    c.dataset.name = "digits"
    with pytest.raises(ValueError, match=r"config.dataset.context='segmentation'.*dataset "
                                         r"'digits'.*has a class per record"):
        jt.prepare_run(c)


@pytest.mark.parametrize("classes, match", [
    (5, r"config.model.num_classes=5 does not cover the 11 classes"),
    (None, r"needs config.model.num_classes"),
])
def test_model_classes_must_cover_the_dataset(seg_npz, classes, match):
    c = config(seg_npz[0])
    if classes is None:
        del c.model["num_classes"]
    else:
        c.model.num_classes = classes
    with pytest.raises(ValueError, match=r"config.dataset.context='segmentation'.*" + match):
        jt.prepare_run(c)


def test_label_maps_with_other_contexts_and_hybrids(seg_npz):
    c = config(seg_npz[0])
    c.dataset.context = "label"
    with pytest.raises(ValueError, match=r"context='label'.*label map \(8, 8\) per record"):
        jt.prepare_run(c)
    import ml_collections
    c = config(seg_npz[0], dataset=dict(context=""))
    c.model = jt.default_config().model
    jt.set_fields(c, model=dict(name="glow", levels=1, steps_per_level=1, hidden_channels=4))
    c.hybrid = ml_collections.ConfigDict({"lam": 1.0, "features": "final", "hidden": 0})
    with pytest.raises(ValueError, match=r"config.hybrid:.*label map \(8, 8\) per image"):
        jt.prepare_run(c)


def test_padding_pads_maps_with_class_zero(seg_npz):
    """config.dataset.pad pads the label maps alike (class 0), and the model sees it."""
    path, _, maps = seg_npz
    info = jd.get_info(f"npz:{path}?test=40", pad=2)
    assert info.image_shape == (12, 12, 1) and info.label_shape == (12, 12)
    source = jd.get_source(f"npz:{path}?test=40", "test", pad=2)
    got = source.get_batch(np.arange(3))["label"]
    assert got.shape == (3, 12, 12)
    np.testing.assert_array_equal(got[:, 2:10, 2:10], maps[120:123])
    assert not got[:, :2].any() and not got[:, :, 10:].any()
    # the map must then be the padded size: a model built for 8x8 is refused
    with pytest.raises(ValueError, match=r"context_shape"):
        jt.prepare_run(config(path, dataset=dict(pad=2)))


def test_cityscapes_config_follows_the_source():
    """cattnflow_cityscapes.py at the AttnFlow source's settings (supplement Sec. 3-4);
    tests/test_configs.py builds every variant's model.
    """
    from experiments.configs import cattnflow_cityscapes
    c = cattnflow_cityscapes.get_config("")
    settings = jt.read_settings(c)
    kw = settings.model.kwargs
    assert (settings.model.name, kw["levels"], kw["steps_per_level"]) == ("cattnflow", 2, 8)
    assert (kw["attention"], kw["position"], kw["num_classes"]) == ("imap", 4, 34)
    assert tuple(kw["context_shape"]) == (256, 256)
    assert (settings.batch_size, settings.num_train_steps) == (1, 200_000)
    assert (settings.optim.name, settings.optim.learning_rate) == ("adam", 8e-4)
    ds = settings.dataset
    assert (ds.name, ds.context, ds.train_split, ds.val_split, ds.test_split) == (
        "cityscapes_256", "segmentation", "train", "", "validation")
    info = jd.get_info(ds.name)
    assert info.image_shape == (256, 256, 3) and info.num_classes == kw["num_classes"]
    assert cattnflow_cityscapes.get_config("itrans").model.attention == "itrans"
    assert cattnflow_cityscapes.get_config("noattn").model.attention is None
    small = cattnflow_cityscapes.get_config("small")
    assert (small.dataset.name, small.dataset.context) == ("mnist_8k_seg", "segmentation")
    twin = cattnflow_cityscapes.get_config("small_twin")
    assert (twin.model.name, twin.dataset.context) == ("attnflow", "")
    with pytest.raises(ValueError, match="unknown config variant"):
        cattnflow_cityscapes.get_config("tiny")

"""Hybrid models (jaxflows.models.hybrid): latent layout, heads, loss, errors, one fit.

The layout is read from real factories (Glow, Residual Flow); the model that is compiled
and trained is a cheap 2-level multi-scale flow of ActNorms on 32 real ``digits``
images (the head and loss do not depend on what the levels hold).
"""
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxflows import data, models
from jaxflows.bijectors import ActNorm, Chain, Identity
from jaxflows.bijectors.reshape import squeeze2d
from jaxflows.distributions import Flow
from jaxflows.models import hybrid as hy
from jaxflows.models.multiscale import MultiScale


@pytest.fixture(scope="module")
def batch():
    src = data.get_source("digits", "train[:32]")
    images = np.stack([np.asarray(src[i]["image"]) for i in range(32)]).astype(np.float32)
    labels = np.asarray([int(src[i]["label"]) for i in range(32)], np.int32)
    x = images + np.random.default_rng(0).uniform(size=images.shape).astype(np.float32)
    return x, labels


@pytest.fixture(scope="module")
def flow():
    """ActNorm, then 2 levels (squeeze, ActNorm, factor out half): a multi-scale flow."""
    body = MultiScale(levels=2, make_level=lambda l: ActNorm(),
                      make_split=lambda l: Identity())
    return Flow(bijector=Chain([ActNorm(), body]), event_shape=(8, 8, 1))


def test_layout_of_the_factories():
    glow = models.glow((8, 8, 1), levels=2, steps_per_level=1, hidden_channels=4,
                       num_bins=17)
    assert hy.multiscale_layout(glow) == (2, True)
    res = models.resflow((8, 8, 1), levels=2, blocks_per_level=1, fc_blocks=0,
                         factor_out=True)
    assert hy.multiscale_layout(res) == (2, False)
    assert hy.multiscale_layout(models.resflow((8, 8, 1), levels=2, blocks_per_level=1,
                                               fc_blocks=0)) == (1, False)
    acf = models.acf((8, 8, 1), attention="l2", heads=1, levels=2, blocks_per_level=1,
                     hidden_channels=4, fc_blocks=0, squeeze_first=True, factor_out=True)
    assert hy.multiscale_layout(acf) == (2, True)


def test_acf_hybrid_variants_of_the_robustness_study():
    """hybrid_mnist.py:acf_<attention>_<lam>: the three models differ in the attention only."""
    from experiments.configs import common, hybrid_mnist
    from jaxflows import train as jt
    base = common.acf_small_mnist().model.to_dict()
    for attention in ("none", "l2", "lipnorm"):
        c = hybrid_mnist.get_config(f"acf_{attention}_invd")
        assert c.model.to_dict() == {**base, "attention": attention}
        assert (c.hybrid.lam, c.hybrid.features) == ("1/D", "pooled")
        assert (c.dataset.train_split, c.dataset.val_split) == ("train", "")
        assert c.num_train_steps == c.eval_every == hybrid_mnist.ACF_STEPS
        assert jt.read_settings(c).hybrid.lam == "1/D"     # resolved to 1/784 at run time
    assert hybrid_mnist.get_config("acf_l2_0").hybrid.lam == 0.0
    with pytest.raises(ValueError, match="variant"):
        hybrid_mnist.get_config("acf_dot_invd")


def test_level_latents_follow_the_multiscale_layout():
    # a MultiScale without steps and with plain factor-out is a pure permutation, so each
    # level's part is known: level 0 factors out channels [2:4] of squeeze(x), level 1
    # keeps squeeze(squeeze(x)[..., :2])
    body = MultiScale(levels=2, make_level=lambda l: None, make_split=lambda l: Identity())
    x = jnp.arange(2 * 8 * 8, dtype=jnp.float32).reshape(2, 8, 8, 1)
    z, _ = body.apply(body.init(jax.random.PRNGKey(0), x), x)
    eps0, final = hy.level_latents(z, 2, squeeze_last=True)
    np.testing.assert_array_equal(eps0, squeeze2d(x)[..., 2:])
    np.testing.assert_array_equal(final, squeeze2d(squeeze2d(x)[..., :2]))
    assert hy.level_latents(z, 1, squeeze_last=False)[0] is z
    with pytest.raises(ValueError, match="even H"):
        hy.level_latents(jnp.zeros((1, 3, 3, 1)), 2)


@pytest.fixture(scope="module")
def pooled(flow, batch):
    """A pooled-feature hybrid model (heads of width 8) and its initial variables."""
    model = hy.hybrid(flow, 10, features="pooled", hidden=8)
    return model, jax.jit(model.init)(jax.random.PRNGKey(0), batch[0])


def test_hybrid_heads_and_density(flow, batch, pooled):
    x, _ = batch
    assert hy.multiscale_layout(flow) == (2, True)
    model, v = pooled
    log_px, logits = jax.jit(model.apply)(v, x)
    assert logits.shape == (32, 10)
    # log p(x) is the flow's own density with the flow's variables
    flow_vars = {k: v[k]["flow"] for k in v if "flow" in v[k]}
    np.testing.assert_allclose(log_px, jax.jit(flow.apply)(flow_vars, x), rtol=1e-5,
                               atol=1e-3)
    # pooled: level 0's factored-out part (4x4x2) and the final part (2x2x8), 8 each
    assert v["params"]["head_0"]["kernel"].shape == (3, 3, 2, 8)
    assert v["params"]["head_1"]["kernel"].shape == (3, 3, 8, 8)
    assert v["params"]["logits"]["kernel"].shape == (16, 10)
    # final, no hidden layer: a linear classifier on the pooled final part (8 channels)
    final = hy.hybrid(flow, 10, features="final")
    vf = jax.eval_shape(final.init, jax.random.PRNGKey(0), x)
    assert set(vf["params"]) == {"flow", "logits"}
    assert vf["params"]["logits"]["kernel"].shape == (8, 10)


def test_hybrid_loss_formula():
    rng = np.random.default_rng(1)
    log_px = jnp.asarray(rng.normal(size=6) * 50 - 100, jnp.float32)
    logits = jnp.asarray(rng.normal(size=(6, 3)), jnp.float32)
    labels = jnp.asarray([0, 1, 2, 2, 1, 0], jnp.int32)
    mask = jnp.asarray([1, 1, 1, 1, 0, 0], jnp.float32)
    lp = np.asarray(jax.nn.log_softmax(logits))[np.arange(6), np.asarray(labels)]
    for lam in (0.0, 1 / 64, 1.0):
        loss, m = hy.hybrid_loss(log_px, logits, labels, lam, mask=mask)
        want = -(lam * np.mean(np.asarray(log_px)[:4]) + np.mean(lp[:4]))
        assert math.isclose(float(loss), want, rel_tol=1e-5)
        acc = np.mean(np.argmax(np.asarray(logits), -1)[:4] == np.asarray(labels)[:4])
        assert math.isclose(float(m["accuracy"]), acc)


@pytest.mark.parametrize("kwargs, match", [
    (dict(lam=-0.5), "lam .* >= 0"),
    (dict(lam=float("nan")), "lam .* finite"),
    (dict(labels=None), "needs class labels"),
    (dict(labels=np.zeros((3,), np.int32)), "labels must have shape"),
    (dict(labels=np.full((4,), 5, np.int32)), r"labels must lie in \[0, 3\)"),
    (dict(labels=np.zeros((4,), np.float32)), "integer class ids"),
])
def test_hybrid_loss_bad_input(kwargs, match):
    args = dict(log_px=jnp.zeros(4), logits=jnp.zeros((4, 3)),
                labels=np.zeros((4,), np.int32), lam=1.0)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        hy.hybrid_loss(**args)


def test_hybrid_bad_settings(flow, batch):
    x, _ = batch
    for kw, match in ((dict(features="mean"), "features must be one of"),
                      (dict(num_classes=1), "num_classes must be an int >= 2"),
                      (dict(hidden=-1), "hidden must be an int >= 0")):
        model = hy.HybridFlow(flow=flow, **{"num_classes": 10, **kw})
        with pytest.raises(ValueError, match=match):
            jax.eval_shape(model.init, jax.random.PRNGKey(0), x)


def test_classifier_trains_the_flow(batch, pooled):
    """With lambda = 0 the labels alone train flow and head: the loss falls on a batch."""
    x, labels = batch
    model, v = pooled
    tx = optax.adam(3e-3)

    @jax.jit
    def step(params, opt):
        def loss_fn(p):
            log_px, logits = model.apply({**v, "params": p}, x)
            return hy.hybrid_loss(log_px, logits, labels, 0.0)[0]
        loss, g = jax.value_and_grad(loss_fn)(params)
        updates, opt = tx.update(g, opt, params)
        return optax.apply_updates(params, updates), opt, loss, g

    params, opt = v["params"], tx.init(v["params"])
    losses = []
    for i in range(8):
        params, opt, loss, g = step(params, opt)
        losses.append(float(loss))
        if i == 0:   # the classifier's gradient reaches the flow's parameters
            flow_grads = jax.tree_util.tree_leaves(g["flow"])
            assert max(float(jnp.max(jnp.abs(a))) for a in flow_grads) > 0
    assert losses[-1] < losses[0] - 0.1, losses


# --------------------------------------------------------------------------------------
# The trainer's hybrid objective (config.hybrid) through the launcher
# --------------------------------------------------------------------------------------
TINY_FLAGS = ["--config.model.steps_per_level=1", "--config.model.hidden_channels=4",
              "--config.model.levels=1", "--config.hybrid.hidden=0",
              "--config.dataset.train_split=train[:256]",
              "--config.dataset.test_split=test[:100]", "--config.num_train_steps=3",
              "--config.eval_every=3", "--config.checkpoint_every=3", "--config.log_every=1",
              "--config.batch_size=16", "--config.init_batch_size=32",
              "--config.eval_batch_size=64", "--config.num_samples=4",
              "--config.progress_bar=False"]


def test_launcher_trains_a_hybrid_and_reports_accuracy(tmp_path):
    """experiments/train.py on hybrid_digits.py:glow_invd, shrunk by flags to 3 steps."""
    import json

    from experiments import train as launcher
    work = tmp_path / "run"
    code = launcher.main(["train.py", "--config=experiments/configs/hybrid_digits.py:glow_invd",
                          f"--workdir={work}"] + TINY_FLAGS)
    assert code == 0
    res = json.loads((work / "results.json").read_text())
    assert res["hybrid_lam"] == 1 / 64      # "1/D" with D = 8 * 8
    assert 0.0 <= res["test_accuracy"] <= 1.0 and math.isfinite(res["test_bpd"])
    lines = [json.loads(x) for x in (work / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in lines if "train_objective" in r]
    assert len(train) == 3
    for r in train:     # the objective is -(lam log p(x) + log p(y|x)) per example (nats)
        nll_x = r["train_bpd"] * 64 * math.log(2)
        assert math.isclose(r["train_objective"], nll_x / 64 + r["train_nll_y"], rel_tol=1e-4)
        assert 0.0 <= r["train_accuracy"] <= 1.0
    assert "test_accuracy" in lines[-1] and "test_bpd" in lines[-1]
    # the same config and work directory without the head is another model: refused
    code = launcher.main(["train.py", "--config=experiments/configs/glow_digits.py:small",
                          f"--workdir={work}"] + TINY_FLAGS[:3])
    assert code != 0


def _settings_error(**hybrid):
    import ml_collections

    from experiments.configs import hybrid_digits
    from jaxflows import train as jt
    c = hybrid_digits.get_config("glow_1")
    c.hybrid = ml_collections.ConfigDict({**c.hybrid.to_dict(), **hybrid})
    return jt.read_settings(c)


@pytest.mark.parametrize("hybrid, match", [
    (dict(lam=-0.5), r"config.hybrid.lam .* >= 0"),
    (dict(lam="1/d"), r"config.hybrid.lam .*'1/D'"),
    (dict(features="mean"), r"config.hybrid.features must be one of"),
    (dict(hiden=3), r"Unknown config key config.hybrid.hiden"),
    (dict(lam=None), r"config.hybrid.features is set but config.hybrid.lam is None"),
])
def test_bad_hybrid_settings_are_refused(hybrid, match):
    with pytest.raises(ValueError, match=match):
        _settings_error(**hybrid)


def test_hybrid_config_without_labels_is_refused(tmp_path):
    from experiments.configs import hybrid_digits
    from jaxflows import train as jt
    path = tmp_path / "nolabels.npz"
    np.savez(path, image=np.zeros((20, 8, 8, 1), np.uint8))
    c = hybrid_digits.get_config("glow_0")
    c.dataset.name = f"npz:{path}"
    with pytest.raises(ValueError, match="config.hybrid: .* needs class labels"):
        jt.validate_config(c)
    plain = hybrid_digits.get_config("glow_0")
    assert jt.read_settings(plain).hybrid.lam == 0.0
    del plain["hybrid"]
    assert jt.read_settings(plain).hybrid is None     # no section: a plain flow

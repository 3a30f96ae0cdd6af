"""Tests of jaxflows.train: exact resume, non-finite steps, outputs, bad input.

Every test shares one tiny Glow on ``digits`` (1 level, 1 step, 8 hidden channels), so
the compiled functions are built once per process (``jaxflows.train.run`` caches them).
"""
import dataclasses
import json
import os
import signal

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxflows import train as jt
from tests.test_baselines import digits_baselines


def tiny_config(**overrides):
    """The shared tiny Glow run on digits, with ``{"section.key": value}`` overrides."""
    c = jt.set_fields(
        jt.default_config(),
        dataset=dict(name="digits", train_split="train[:1200]", val_split="train[1200:1300]",
                     test_split="test"),
        model=dict(name="glow", levels=1, steps_per_level=1, hidden_channels=8,
                   preprocessing="logit", dropout=0.1),
        batch_size=16, eval_batch_size=200, init_batch_size=64, num_train_steps=10,
        optim=dict(warmup_steps=2), ema_decay=0.9, log_every=1, eval_every=4,
        checkpoint_every=4, keep_checkpoints=2, sample_temperatures=(0.7,), num_samples=4,
        progress_bar=False)
    return jt.set_fields(c, overrides)


def leaves_equal(a, b):
    """Whether two pytrees have bitwise equal leaves."""
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    return len(la) == len(lb) and all(
        np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(la, lb))


def restore_last(config, workdir):
    """The TrainState of the latest regular checkpoint of ``workdir``."""
    run = jt.prepare_run(config, workdir)
    return jt.restore_for_eval(workdir, jt.abstract_state(run), "checkpoints")[0]


class _CrashError(Exception):
    pass


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """An uninterrupted run A, and a run B interrupted twice then resumed.

    B is stopped by a real SIGTERM at step 3 (checkpoint written at step 3), resumed,
    then crashes at step 7 without checkpointing (as after ``kill -9``: metrics lines
    of steps 5-7 are already written, the last checkpoint is step 4), and resumed to
    the end.
    """
    config = tiny_config()
    a = str(tmp_path_factory.mktemp("A"))
    b = str(tmp_path_factory.mktemp("B"))
    res_a = jt.train_and_evaluate(config, a)

    def sigterm_at_3(step, state):
        if step == 3:
            os.kill(os.getpid(), signal.SIGTERM)

    first = jt.train_and_evaluate(config, b, hooks=[sigterm_at_3])
    steps_after_sigterm = sorted(int(s) for s in os.listdir(os.path.join(b, "checkpoints"))
                                 if s.isdigit())

    def crash_at_7(step, state):
        if step == 7:
            raise _CrashError()

    with pytest.raises(_CrashError):
        jt.train_and_evaluate(config, b, hooks=[crash_at_7])
    lines_at_crash = open(os.path.join(b, "metrics.jsonl")).read().splitlines()
    res_b = jt.train_and_evaluate(config, b)
    return dict(config=config, a=a, b=b, res_a=res_a, res_b=res_b, first=first,
                steps_after_sigterm=steps_after_sigterm, lines_at_crash=lines_at_crash)


def test_sigterm_writes_checkpoint_and_returns(runs):
    assert runs["first"] == {"interrupted": True, "step": 3, "signal": "SIGTERM"}
    assert runs["steps_after_sigterm"][-1] == 3
    # the crashed attempt (at step 7) had written metrics of steps 5 and 6, beyond its
    # last checkpoint (step 4); the resumed run replaced them
    assert max(json.loads(line)["step"] for line in runs["lines_at_crash"]) == 6


def test_resume_is_exact(runs):
    ma = open(os.path.join(runs["a"], "metrics.jsonl")).read()
    mb = open(os.path.join(runs["b"], "metrics.jsonl")).read()
    assert ma == mb
    steps = [json.loads(line)["step"] for line in ma.splitlines()]
    assert steps == list(range(1, 11))
    sa = restore_last(runs["config"], runs["a"])
    sb = restore_last(runs["config"], runs["b"])
    assert int(sa.step) == int(sb.step) == 10
    assert leaves_equal(sa, sb)
    for k in ("test_bpd", "val_bpd", "best_step", "best_val_bpd"):
        assert runs["res_a"][k] == runs["res_b"][k]


def test_outputs_written(runs):
    a, res = runs["a"], runs["res_a"]
    for name in ("config.json", "metrics.jsonl", "curves.png", "results.json",
                 "samples_T0.7.png"):
        assert os.path.getsize(os.path.join(a, name)) > 0, name
    assert json.load(open(os.path.join(a, "config.json")))["model"]["hidden_channels"] == 8
    recs = [json.loads(line) for line in open(os.path.join(a, "metrics.jsonl"))]
    evals = [r for r in recs if "val_bpd" in r]
    assert [r["step"] for r in evals] == [4, 8, 10]
    # the best checkpoint is the evaluation with the lowest validation bits/dim
    best = min(evals, key=lambda r: r["val_bpd"])
    assert res["best_step"] == best["step"] and res["best_val_bpd"] == best["val_bpd"]
    assert os.listdir(os.path.join(a, "best")) == [str(best["step"])]
    kept = sorted(int(s) for s in os.listdir(os.path.join(a, "checkpoints")) if s.isdigit())
    assert kept == [8, 10]          # keep_checkpoints = 2
    # better than the uniform distribution over the 17 grey levels, computed from the data
    assert np.isfinite(res["test_bpd"]) and res["test_bpd"] < digits_baselines()["uniform"]
    # the final test figure is the best checkpoint's, over the whole test split
    assert res["test_bpd"] == pytest.approx(best["test_bpd"], rel=1e-6)


def test_nonfinite_batch_is_skipped_and_counted(runs):
    config = runs["config"]
    run = jt.prepare_run(config, None)
    state = jax.device_get(restore_last(config, runs["a"]))
    before = jax.device_get(state)
    # Out-of-range pixels (255 on a 17-level dataset) put the logit preprocessing
    # outside (0, 1): the loss is NaN, as for a corrupt batch.
    images = np.zeros((config.batch_size, 8, 8, 1), np.uint8)
    images[0, 0, 0, 0] = 255
    batch = jt.global_batch(images, run.mesh)
    new, metrics = run.steps.train(jax.device_put(state, jt.replicated(run.mesh)), batch)
    new = jax.device_get(new)
    assert not bool(metrics["finite"])
    assert leaves_equal(new.params, before.params)
    assert leaves_equal(new.ema_params, before.ema_params)
    assert leaves_equal(new.opt_state, before.opt_state)      # Adam's moments and count
    assert leaves_equal(new.model_state, before.model_state)
    assert int(new.num_skipped) == int(before.num_skipped) + 1
    assert int(new.step) == int(before.step) + 1
    # a finite batch afterwards trains normally
    good = jt.global_batch(np.full((config.batch_size, 8, 8, 1), 3, np.uint8), run.mesh)
    newer, metrics = run.steps.train(jax.device_put(new, jt.replicated(run.mesh)), good)
    assert bool(metrics["finite"])
    assert not leaves_equal(jax.device_get(newer).params, before.params)
    assert not leaves_equal(jax.device_get(newer).opt_state, before.opt_state)


def test_dequantize_is_uniform_on_device():
    k = jnp.arange(5, dtype=jnp.uint8).reshape(5, 1, 1, 1).repeat(200, axis=1)
    x = jt.dequantize(jax.random.PRNGKey(0), k)
    frac = np.asarray(x - k.astype(jnp.float32))
    assert x.dtype == jnp.float32
    assert frac.min() >= 0.0 and frac.max() < 1.0
    assert abs(frac.mean() - 0.5) < 0.05


def test_ema_update_formula():
    ema, p = {"w": jnp.ones(3)}, {"w": jnp.zeros(3)}
    out = jt.ema_update(ema, p, 0.99, jnp.asarray(1000))
    np.testing.assert_allclose(out["w"], 0.99, rtol=1e-6)
    early = jt.ema_update(ema, p, 0.99, jnp.asarray(0))   # capped at (1+0)/(10+0)
    np.testing.assert_allclose(early["w"], 0.1, rtol=1e-6)


def test_schedule_warmup_and_cosine():
    c = tiny_config(**{"optim.warmup_steps": 10, "optim.schedule": "cosine",
                       "optim.final_lr_fraction": 0.1, "optim.learning_rate": 1e-2})
    s = jt.make_schedule(c.optim, 110)
    assert float(s(0)) == 0.0
    assert float(s(5)) == pytest.approx(5e-3)
    assert float(s(10)) == pytest.approx(1e-2)
    assert float(s(110)) == pytest.approx(1e-3)


# ------------------------------------------------------------------ bad input


def _snapshot(d):
    out = {}
    for root, _, files in os.walk(d):
        for f in files:
            p = os.path.join(root, f)
            out[p] = open(p, "rb").read()
    return out


@pytest.mark.parametrize("overrides, match", [
    ({"dataset.name": "no_such_dataset"}, "no_such_dataset"),
    ({"model.name": "no_such_model"}, "no_such_model"),
    ({"model.hidden_chanels": 8}, r"config\.model\.hidden_chanels"),   # TypeError of glow()
    ({"model.levels": 0}, r"config\.model\.levels"),                   # ValueError of glow()
    ({"model.num_bins": 4}, r"config\.model\.num_bins"),               # from the dataset
    ({"optim.name": "sgd"}, "optim.name"),
    ({"batch_size": 0}, "batch_size"),
])
def test_bad_config_fails_before_writing(tmp_path, overrides, match):
    c = tiny_config()
    c.unlock()
    for k, v in overrides.items():
        section = c
        *path, last = k.split(".")
        for p in path:
            section = section[p]
        section[last] = v
    with pytest.raises(ValueError, match=match):
        jt.train_and_evaluate(c, str(tmp_path / "w"))
    assert not (tmp_path / "w").exists()


def test_unknown_top_level_key(tmp_path):
    c = tiny_config()
    c.unlock()
    c.learning_rate = 1e-3     # belongs in config.optim
    with pytest.raises(ValueError, match="learning_rate"):
        jt.train_and_evaluate(c, str(tmp_path / "w"))
    assert not (tmp_path / "w").exists()


def test_batch_not_divisible_by_devices():
    c = tiny_config(batch_size=15)
    with pytest.raises(ValueError, match="divisible by the number of devices"):
        jt.validate_config(c, num_devices=2)


def test_workdir_of_other_model_is_refused(runs):
    before = _snapshot(runs["a"])
    other = tiny_config(**{"model.hidden_channels": 16})
    with pytest.raises(ValueError, match="different model"):
        jt.train_and_evaluate(other, runs["a"])
    assert _snapshot(runs["a"]) == before


def test_fixed_point_summary_of_sampling_diagnostics():
    fixed_point_summary = jt.fixed_point_summary
    sown = {"intermediates": {"block_0": {"fixed_point": (
        {"iterations": np.array([3, 50]), "residual": np.array([1e-6, 0.2]),
         "not_converged": np.array([False, True])},)}}}
    rep = fixed_point_summary(sown)
    assert rep["num_solves"] == 1 and rep["num_not_converged"] == 1
    assert rep["max_iterations"] == 50 and rep["max_residual"] == pytest.approx(0.2)
    assert fixed_point_summary({})["num_solves"] == 0   # closed-form inverses sow nothing


# ------------------------------------------------------------------ run settings


def test_settings_are_typed_frozen_and_complete():
    c = tiny_config(**{"optim.schedule": "cosine"})
    s = jt.read_settings(c)
    assert isinstance(s, jt.RunSettings) and isinstance(s.optim, jt.OptimSettings)
    assert isinstance(s.dataset, jt.DatasetSettings) and isinstance(s.model, jt.ModelSettings)
    assert (s.batch_size, s.optim.schedule, s.dataset.val_split) == (16, "cosine",
                                                                     "train[1200:1300]")
    assert s.model.name == "glow" and s.model.kwargs["hidden_channels"] == 8
    assert s.sample_temperatures == (0.7,) and s.use_ema
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.batch_size = 32
    # every field of the schema, and nothing else, is a settings field
    def fields(cls):
        return {f.name for f in dataclasses.fields(cls)}

    ref = jt.default_config()
    assert fields(jt.RunSettings) == set(ref.keys())
    assert fields(jt.DatasetSettings) == set(ref.dataset.keys())
    assert fields(jt.OptimSettings) == set(ref.optim.keys())
    # the boundaries of the loop: logging, evaluation (+ the last step), checkpoints
    assert [t for t in range(1, 11) if s.evaluates_at(t)] == [4, 8, 10]
    assert [t for t in range(1, 11) if s.checkpoints_at(t)] == [4, 8, 10]


def test_settings_of_an_older_config_take_defaults():
    """A run's config.json written before a field existed (e.g. dataset.pad) still reads."""
    c = jt.config_to_dict(tiny_config())
    del c["dataset"]["pad"], c["optim"]["max_consecutive_nonfinite"], c["progress_bar"]
    s = jt.read_settings(ml_collections.ConfigDict(c))
    assert s.dataset.pad == 0 and s.optim.max_consecutive_nonfinite == 100
    assert s.progress_bar is True


@pytest.mark.parametrize("key, value, match", [
    ("optim.learning_rate", 0.0, r"config\.optim\.learning_rate must be a number > 0"),
    ("optim.b2", 1.0, r"config\.optim\.b2"),
    ("ema_decay", 1.0, r"config\.ema_decay"),
    ("eval_use_ema", 1, r"config\.eval_use_ema must be True or False"),
    ("num_train_steps", 2.5, r"config\.num_train_steps must be an int"),
    ("optim.schedule", "linear", r"config\.optim\.schedule must be one of"),
    ("dataset.train_split", "", r"config\.dataset\.train_split"),
    ("sample_temperatures", (0.5, -1.0), r"config\.sample_temperatures"),
])
def test_bad_setting_values_name_the_field(key, value, match):
    c = tiny_config()
    with c.ignore_type():
        section = c
        *path, last = key.split(".")
        for p in path:
            section = section[p]
        section[last] = value
    with pytest.raises(ValueError, match=match):
        jt.read_settings(c)


def test_misplaced_key_suggests_its_section():
    c = tiny_config()
    c.optim.unlock()
    c.optim.ema_decay = 0.9
    hint = r"config\.optim\.ema_decay.*did you mean config\.ema_decay"
    with pytest.raises(ValueError, match=hint):
        jt.read_settings(c)


def test_model_kwargs_pass_through_unchanged(monkeypatch):
    """Settings written as dicts (e.g. a residual flow's estimator) reach the factory as dicts."""
    from jaxflows import models
    seen = {}

    def factory(image_shape, *, num_bins, **kwargs):
        seen.update(kwargs, image_shape=image_shape, num_bins=num_bins)
        return models.glow(image_shape, num_bins=num_bins, levels=1, steps_per_level=1,
                           hidden_channels=4)

    monkeypatch.setitem(models.MODELS, "recording", factory)
    c = tiny_config(**{"model.name": "recording"})
    c.model.unlock()
    c.model = {"name": "recording", "estimator": {"kind": "roulette", "n_terms": 3},
               "kernels": (3, 1, 3)}
    info = jt.validate_config(c)
    assert seen["estimator"] == {"kind": "roulette", "n_terms": 3}
    assert isinstance(seen["estimator"], dict) and seen["kernels"] == (3, 1, 3)
    assert (seen["image_shape"], seen["num_bins"]) == ((8, 8, 1), 17) == (
        info.image_shape, info.num_bins)


def test_model_validation_builds_the_flow(monkeypatch):
    """Errors of the factory and of the flow's (abstract) initialisation name config.model.<key>."""
    import flax.linen as nn

    from jaxflows import models

    class Picky(nn.Module):
        width: int

        @nn.compact
        def __call__(self, x, train=False):
            if self.width % 2:
                raise ValueError(f"Picky: width={self.width} must be even")
            return nn.Dense(self.width)(x.reshape(x.shape[0], -1)).sum(-1)

    monkeypatch.setitem(models.MODELS, "picky",
                        lambda image_shape, *, num_bins, width=2: Picky(width))
    c = tiny_config()
    c.model.unlock()
    c.model = {"name": "picky", "width": 3}
    with pytest.raises(ValueError, match=r"^config\.model\.width: Picky: width=3 must be even"):
        jt.validate_config(c)         # raised at init time (under jax.eval_shape)
    c.model = {"name": "picky", "width": 4}
    jt.validate_config(c)
    c.model = {"name": "picky", "depth": 4}
    with pytest.raises(ValueError, match=r"^config\.model\.depth: .*unexpected keyword"):
        jt.validate_config(c)
    # acf forwards its other arguments to the base factory: errors still name the key
    c = tiny_config()
    c.model.unlock()
    c.model = {"name": "acf", "levels": 2, "blocks_per_level": 1, "hidden_channels": 8,
               "fc_blocks": 1, "fc_hidden": 8, "hiden": 3}
    with pytest.raises(ValueError, match=r"^config\.model\.hiden: "):
        jt.validate_config(c)
    c.model = {"name": "acf", "levels": 2, "blocks_per_level": 1, "hidden_channels": 8,
               "fc_blocks": 1, "fc_hidden": 8, "heads": 0}
    with pytest.raises(ValueError, match=r"^config\.model\.heads: "):
        jt.validate_config(c)


def test_run_and_progress_are_immutable():
    run = jt.prepare_run(tiny_config(), None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        run.flow = None
    progress = jt.Progress()
    assert progress.step == 0 and progress.running.count == 0
    with pytest.raises(dataclasses.FrozenInstanceError):
        progress.step = 1
    m = jt.RunningMean().add({"train_bpd": 2.0})
    # a non-finite value is not averaged: it counts as a skipped step of the interval
    assert m.add({"train_bpd": float("nan")}) == m.skip() and m.skip().result() == m.result()
    assert m.add({"train_bpd": 4.0}).result() == {"train_bpd": 3.0}
    assert jt.RunningMean.from_state(m.add({"train_bpd": 4.0}).state()).count == 2

"""End-to-end runs of the experiment configs' small variants and of the launchers.

Each config's ``small`` variant trains for two steps with tiny overrides (one step per
level, a few hidden channels) on its real data source: ``digits``, the offline MNIST
sample (``mnist_8k``, or an ``.npz`` file when present on this machine) or mock TFDS
records for CIFAR-10 (``jaxflows.data.mock_datasets``). Configs are imported as modules
of the installed ``experiments`` package. The launchers run as subprocesses:
``train.py`` (with ``--config.*`` overrides), then ``evaluate.py`` and ``sample.py`` on
the checkpoint it wrote; bad input fails with a clear message and exit code 2.
"""
import importlib
import inspect
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from jaxflows import data as jdata
from jaxflows import models
from jaxflows import train as jt

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def config_module(name):
    """The module ``experiments.configs.<name>``."""
    return importlib.import_module(f"experiments.configs.{name}")


def load_config(name, arg="small"):
    """``get_config(arg)`` of ``experiments/configs/<name>.py``."""
    return config_module(name).get_config(arg)


def variants(name):
    """The variants config ``name`` accepts (its ``VARIANTS``)."""
    return getattr(config_module(name), "VARIANTS", ("", "small"))


def model_setting(c, key):
    """``config.model.<key>``, or the factory's default when the config does not state it.

    Configs state only what differs from the factories' defaults (the papers' settings).
    """
    if key in c.model:
        return c.model[key]
    return inspect.signature(models.MODELS[c.model.name]).parameters[key].default


def shrink(c):
    """Tiny overrides so that a config compiles and runs in seconds."""
    if c.model.name == "glow":
        jt.set_fields(c, model=dict(steps_per_level=1, hidden_channels=8))
    elif c.model.name == "realnvp":
        jt.set_fields(c, model=dict(hidden_channels=4, num_blocks=1, couplings_per_stage=1,
                                    final_couplings=1))
    # sampling is covered by test_train.py and the launcher test
    return jt.set_fields(
        c, sample_temperatures=(), batch_size=8, eval_batch_size=32, init_batch_size=16,
        num_train_steps=2, log_every=1, eval_every=2, checkpoint_every=2,
        eval_test_during_training=False, progress_bar=False)


# The shipped mnist_8k digits, and TFDS's cifar10 pipeline on mock data (the realnvp model is
# built by the configs and models tests).
@pytest.mark.parametrize("name", ["glow_mnist", "glow_cifar10"])
def test_small_variant_end_to_end(tmp_path, name):
    c = shrink(load_config(name))
    if name == "glow_mnist":
        assert c.dataset.name == "mnist_8k"
        # a small slice of the data keeps evaluation short
        c.dataset.val_split = "train[:32]"
        c.dataset.test_split = "test[:40]"
        ctx = None
    else:
        ctx = jdata.mock_datasets(num_examples=48)
    if ctx is None:
        res = jt.train_and_evaluate(c, str(tmp_path))
    else:
        with ctx:
            res = jt.train_and_evaluate(c, str(tmp_path))
    assert res["step"] == 2 and np.isfinite(res["test_bpd"]) and np.isfinite(res["val_bpd"])
    assert json.load(open(tmp_path / "config.json"))["model"]["name"] == c.model.name


def test_config_defaults_follow_papers():
    g = load_config("glow_cifar10", "")
    assert tuple(model_setting(g, k) for k in ("levels", "steps_per_level",
                                               "hidden_channels")) == (3, 32, 512)
    assert g.optim.name == "adamax" and g.optim.learning_rate == 1e-3 and g.optim.warmup_steps > 0
    r = load_config("realnvp_cifar10", "")
    assert r.model.name == "realnvp"
    assert (model_setting(r, "num_blocks"), model_setting(r, "hidden_channels")) == (8, 64)
    for name in ("glow_digits", "glow_mnist", "glow_cifar10", "realnvp_cifar10"):
        for arg in variants(name):
            jt.validate_config(load_config(name, arg))     # builds every variant's model
        with pytest.raises(ValueError, match="variant"):
            load_config(name, "tiny")


def _run(args, cache_dir, timeout=600):
    # evaluate.py and sample.py recompile what train.py compiled: share it through
    # JAX's persistent compilation cache.
    env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_COMPILATION_CACHE_DIR=str(cache_dir),
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
               JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
    return subprocess.run([sys.executable] + args, cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


TINY_FLAGS = ["--config.model.steps_per_level=1", "--config.model.hidden_channels=8",
              "--config.num_train_steps=3", "--config.eval_every=3",
              "--config.checkpoint_every=3", "--config.log_every=1",
              "--config.sample_temperatures=(0.7,)", "--config.num_samples=4",
              "--config.batch_size=16", "--config.progress_bar=False",
              "--config.dataset.train_split=train[:400]"]


def test_launchers_train_evaluate_sample(tmp_path, capsys):
    work = str(tmp_path / "run")
    cache = tmp_path / "jax_cache"
    cfg = "--config=experiments/configs/glow_digits.py:small"
    p = _run(["experiments/train.py", cfg, f"--workdir={work}"] + TINY_FLAGS, cache)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "test bits/dim" in p.stdout
    results = json.load(open(os.path.join(work, "results.json")))
    assert json.load(open(os.path.join(work, "config.json")))["batch_size"] == 16

    p = _run(["experiments/evaluate.py", f"--workdir={work}"], cache)
    assert p.returncode == 0, p.stderr[-3000:]
    out = json.loads(p.stdout.splitlines()[0])
    assert out["split"] == "test" and out["num_examples"] == 297
    assert out["bits_per_dim"] == pytest.approx(results["test_bpd"], rel=1e-5)
    _check_bits_per_dim_independently(work, out["bits_per_dim"])

    png = str(tmp_path / "grid.png")
    p = _run(["experiments/sample.py", f"--workdir={work}", "--temperature=0.5",
              "--num_samples=4", f"--out={png}"], cache)
    assert p.returncode == 0, p.stderr[-3000:]
    from PIL import Image
    assert Image.open(png).size[0] > 0

    # Bad input through the launchers' main(argv), in this process (each refuses before
    # any compute, so a subprocess would only add interpreter start-up): an unknown
    # override key is refused by the flag parser, another model's config in this workdir
    # by train_and_evaluate; exit code != 0, the workdir untouched.
    from experiments import evaluate as evaluate_launcher
    from experiments import sample as sample_launcher
    from experiments import train as train_launcher
    before = open(os.path.join(work, "metrics.jsonl")).read()
    capsys.readouterr()
    code = train_launcher.main(["train.py", cfg, f"--workdir={work}", "--config.batch_sise=8"])
    assert code != 0 and "batch_sise" in capsys.readouterr().err
    code = train_launcher.main(["train.py", cfg, f"--workdir={work}"] + TINY_FLAGS +
                               ["--config.model.hidden_channels=16"])
    assert code == 2 and "different model" in capsys.readouterr().err
    assert open(os.path.join(work, "metrics.jsonl")).read() == before
    # evaluate.py and sample.py on a directory that holds no run: one error line, code 2
    missing = str(tmp_path / "no_run")
    for name, launcher in (("evaluate.py", evaluate_launcher), ("sample.py", sample_launcher)):
        code = launcher.main([name, f"--workdir={missing}"])
        err = capsys.readouterr().err
        errors = [line for line in err.splitlines() if line.startswith("error: ")]
        assert code == 2 and len(errors) == 1 and "config.json" in errors[0], err


def _check_bits_per_dim_independently(work, reported, draws=4):
    """The launchers' test bits/dim against ``Flow.log_prob`` called directly on the test
    images with numpy dequantisation noise (no loader, masks, padding or key streams of the
    evaluation code): equal within 4 standard errors of the noise.
    """
    import jax
    config = jt.load_run_config(work)
    run = jt.prepare_run(config, work)
    state = jt.restore_for_eval(work, jt.abstract_state(run), "best")[0]
    variables = state.variables(run.settings.use_ema)
    source = jt.get_split_source(run.settings.dataset, run.settings.dataset.test_split)
    images = np.stack([np.asarray(source[i]["image"], np.float32) for i in range(len(source))])
    rng = np.random.default_rng(0)
    log_prob = jax.jit(lambda v, x: run.flow.apply(v, x, train=False))
    bpd = np.stack([-np.asarray(log_prob(variables, images + rng.uniform(size=images.shape)),
                                np.float64) / (run.num_dims * np.log(2)) for _ in range(draws)])
    noise_var = np.mean(np.var(bpd, axis=0, ddof=1)) / len(source)   # of one draw's mean
    tol = 4 * np.sqrt(noise_var * (1 + 1 / draws))
    assert abs(bpd.mean() - reported) <= tol, (bpd.mean(), reported, tol)


ATTENTION_CONFIGS = ("attnflow_mnist", "attnflow_cifar10", "acf_mnist", "acf_cifar10")


def test_attention_configs_validate_and_follow_papers():
    # tests/test_configs.py builds every variant's model (and reads its settings).
    for name in ATTENTION_CONFIGS:
        for arg in variants(name):
            jt.read_settings(load_config(name, arg))
        with pytest.raises(ValueError, match="variant"):
            load_config(name, "tiny")
    # AttnFlow (Sukthanker et al. 2022): MNIST padded to 32x32, L=3, K=2; CIFAR-10 L=3,
    # K=4; Adam 8e-4; iMap by default, iTrans as a variant.
    m = load_config("attnflow_mnist", "")
    assert (m.dataset.name, m.dataset.pad) == ("mnist", 2)
    assert tuple(model_setting(m, k) for k in ("levels", "steps_per_level", "attention")) == (
        3, 2, "imap")
    assert m.optim.name == "adam" and m.optim.learning_rate == 8e-4
    assert load_config("attnflow_mnist", "itrans").model.attention == "itrans"
    assert load_config("attnflow_mnist", "imap").to_dict() == m.to_dict()
    c = load_config("attnflow_cifar10", "")
    assert (model_setting(c, "levels"), model_setting(c, "steps_per_level"),
            c.optim.learning_rate) == (3, 4, 8e-4)
    assert c.dataset.pad == 0
    # ACF = the Residual Flow config of the same data set + attention.
    for acf_name, base_name in (("acf_mnist", "resflow_mnist"), ("acf_cifar10", "resflow_cifar10")):
        a, r = load_config(acf_name, ""), load_config(base_name, "")
        assert (a.model.name, a.model.base) == ("acf", "resflow")
        model = a.model.to_dict()
        assert model.pop("placement", "between") == "between"   # ACF: between the convs
        for k in ("name", "base", "attention", "heads"):
            model.pop(k)
        assert model == {k: v for k, v in r.model.to_dict().items() if k != "name"}
        assert a.optim.to_dict() == r.optim.to_dict()



"""experiments/tarflow_samples.py: guided and denoised TarFlow samples from a trained run.

A tiny class-conditional TarFlow trained with noise augmentation on the 8x8 digits for
two steps, then the launcher end to end (PNG and JSON), and its refusals.
"""
import json
import os

import numpy as np
import pytest

from experiments import tarflow_samples
from jaxflows import train as jt


def tiny_config(**model):
    c = jt.set_fields(
        jt.default_config(),
        dataset=dict(name="digits", train_split="train[:200]", val_split="train[1400:1440]",
                     test_split="test[:40]", context="label"),
        batch_size=16, eval_batch_size=40, init_batch_size=16, num_train_steps=2,
        optim=dict(learning_rate=1e-3, warmup_steps=0), ema_decay=0.0, log_every=1,
        eval_every=2, checkpoint_every=2, sample_temperatures=(1.0,), num_samples=10,
        progress_bar=False)
    c.model = jt.default_config().model
    jt.set_fields(c, model=dict(name="tarflow", patch_size=2, channels=16, blocks=2,
                                layers_per_block=1, heads=1, num_classes=10, **model))
    return c


@pytest.fixture(scope="module")
def noisy_run(tmp_path_factory):
    work = str(tmp_path_factory.mktemp("tarflow") / "run")
    res = jt.train_and_evaluate(tiny_config(noise_std=0.05, label_drop=0.1), work)
    assert np.isfinite(res["test_bpd"])
    return work


def test_guided_and_denoised_samples(noisy_run, tmp_path, capsys):
    out = str(tmp_path / "s.png")
    code = tarflow_samples.main(["tarflow_samples.py", f"--workdir={noisy_run}", f"--out={out}",
                                 "--guidance=0,2", "--per_class=1"])
    assert code == 0, capsys.readouterr().err
    meta = json.load(open(str(tmp_path / "s.json")))
    assert meta["denoise_sigma_pixels"] == pytest.approx(0.05 * 17 / 2)
    for w in ("w=0", "w=2"):
        m = meta[w]
        assert np.isfinite(m["model_bpd_raw"]) and np.isfinite(m["model_bpd_denoised"])
        assert m["mean_abs_change_pixels"] > 0.0       # the denoiser moved the samples
    # guidance changes the samples (same latent noise): different densities
    assert meta["w=0"]["model_bpd_raw"] != meta["w=2"]["model_bpd_raw"]
    from PIL import Image
    w, h = Image.open(out).size
    assert w > 0 and h > 0 and os.path.getsize(out) > 0


@pytest.mark.parametrize("args, message", [
    (["--guidance=-1"], "--guidance must be numbers >= 0"),
    (["--guidance=a"], "--guidance must be numbers >= 0"),
    (["--temperature=0"], "--temperature must be a finite number > 0"),
    (["--per_class=0"], "--per_class must be >= 1"),
])
def test_bad_flags_are_refused(noisy_run, capsys, args, message):
    assert tarflow_samples.main(["tarflow_samples.py", f"--workdir={noisy_run}"] + args) == 2
    assert message in capsys.readouterr().err


def test_runs_it_cannot_denoise_are_refused(tmp_path, capsys):
    for name, model in (("quiet", dict(name="tarflow", num_classes=10, noise_std=0.0)),
                        ("glow", dict(name="glow"))):
        work = tmp_path / name
        work.mkdir()
        c = tiny_config()
        c.model = jt.default_config().model
        jt.set_fields(c, model=model)
        (work / "config.json").write_text(c.to_json())
        assert tarflow_samples.main(["tarflow_samples.py", f"--workdir={work}"]) == 2
        err = capsys.readouterr().err
        assert ("trained without noise" in err) if name == "quiet" else (
            "not a run of a class-conditional TarFlow" in err), err

"""experiments/robustness.py: bits/dim and accuracy of a trained run under additive noise.

One tiny hybrid Glow (tests/test_train.py's ``tiny_config`` with a classifier head) is
trained once; the launcher evaluates it at sigma 0 and 8 (digits: 17 levels) and must
reproduce ``experiments/evaluate.py`` at sigma 0 exactly, find the noisy images less
likely, write its JSON and PNG, and refuse bad input with exit code 2.
"""
import json
import math
import os

import ml_collections
import numpy as np
import pytest

from experiments import evaluate as evaluate_launcher
from experiments import robustness
from jaxflows import data as jdata
from jaxflows import train as jt
from tests.test_train import tiny_config


@pytest.fixture(scope="module")
def hybrid_run(tmp_path_factory):
    """A tiny hybrid Glow on digits (classifier head on the pooled latents)."""
    c = tiny_config(num_train_steps=8, sample_temperatures=())
    c.hybrid = ml_collections.ConfigDict(dict(lam="1/D", features="pooled", hidden=0))
    work = str(tmp_path_factory.mktemp("hybrid"))
    jt.train_and_evaluate(c, work)
    return work


@pytest.fixture(scope="module")
def noisy_outputs(hybrid_run, tmp_path_factory):
    """The launcher on the run twice (two labels) at sigma 0 and 8; its JSON, PNG, stdout."""
    out = str(tmp_path_factory.mktemp("robust") / "curves.png")
    import contextlib
    import io
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = robustness.main(["robustness.py", f"--workdirs={hybrid_run},{hybrid_run}",
                                "--labels=A,B", "--sigmas=8,0", f"--out={out}"])
    return dict(code=code, png=out, json=os.path.splitext(out)[0] + ".json",
                stdout=buf.getvalue())


def test_sigma_zero_reproduces_evaluate_and_noise_costs_bits(hybrid_run, noisy_outputs,
                                                             capsys):
    assert noisy_outputs["code"] == 0
    out = json.load(open(noisy_outputs["json"]))
    assert out["sigmas"] == [0.0, 8.0] and out["num_bins"] == 17
    a, b = out["runs"]
    assert a["bits_per_dim"] == b["bits_per_dim"] and a["accuracy"] == b["accuracy"]
    capsys.readouterr()
    assert evaluate_launcher.main(["evaluate.py", f"--workdir={hybrid_run}"]) == 0
    ev = json.loads(capsys.readouterr().out.splitlines()[0])
    assert a["bits_per_dim"][0] == ev["bits_per_dim"]       # same images, same key: exact
    assert a["checkpoint_step"] == ev["checkpoint_step"]
    results = json.load(open(os.path.join(hybrid_run, "results.json")))
    assert a["accuracy"][0] == pytest.approx(results["test_accuracy"], abs=1e-6)
    assert a["bits_per_dim"][1] > a["bits_per_dim"][0] + 0.1
    assert all(0.0 <= v <= 1.0 for v in a["accuracy"])
    assert a["hybrid_lam"] == pytest.approx(1 / 64)
    # the printed markdown tables: bits/dim and accuracy, one row per run
    text = noisy_outputs["stdout"]
    assert "| run | sigma=0 | sigma=8 |" in text and "accuracy" in text
    assert f"| A | {a['bits_per_dim'][0]:.4f} | {a['bits_per_dim'][1]:.4f} |" in text
    # the paired increase over the clean images
    assert "| run | sigma=8 |" in text
    assert f"| B | {a['bits_per_dim'][1] - a['bits_per_dim'][0]:+.4f} |" in text
    assert robustness.increase([2.0, 2.5, None]) == [0.5, None]
    from PIL import Image
    w, h = Image.open(noisy_outputs["png"]).size
    assert w > h > 0      # two panels side by side (a hybrid run)


def test_replot_redraws_from_the_json(noisy_outputs, tmp_path, capsys):
    """--replot: the same tables from the JSON alone, a new PNG, nothing evaluated."""
    png = str(tmp_path / "new_dir" / "again.png")        # a directory that does not exist
    capsys.readouterr()
    code = robustness.main(["robustness.py", "--replot", f"--json={noisy_outputs['json']}",
                            f"--out={png}"])
    text = capsys.readouterr().out
    assert code == 0 and os.path.getsize(png) > 0
    tables = noisy_outputs["stdout"].split("\nwrote ")[0]   # after the progress lines
    assert text.split("\nwrote ")[0] == tables[tables.index("test bits/dim"):]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"runs": []}))
    assert robustness.main(["robustness.py", "--replot", f"--json={bad}",
                            f"--out={png}"]) == 2
    assert "not this command's JSON" in capsys.readouterr().err


def test_noisy_source():
    x = np.full((200, 4, 4, 1), 128, np.uint8)
    x[:, 0, 0, 0] = 0                       # clipped at black
    base = jdata.ArraySource(x, np.arange(200) % 10)
    src = robustness.NoisySource(base, 4.0, 256, seed=3)
    batch = src.get_batch(np.arange(200))
    assert batch["image"].dtype == np.uint8 and np.array_equal(batch["label"], base.labels)
    d = batch["image"][:, 1:, 1:].astype(np.float64) - 128
    assert abs(d.mean()) < 0.2 and abs(d.std() - math.sqrt(16 + 1 / 12)) < 0.2
    assert batch["image"][:, 0, 0, 0].min() == 0 and np.mean(batch["image"][:, 0, 0, 0] == 0) > .4
    # the same record has the same noise read alone, in another batch, or by another source
    assert np.array_equal(src[7]["image"], batch["image"][7])
    assert np.array_equal(src.get_batch([150, 7])["image"][1], batch["image"][7])
    again = robustness.NoisySource(base, 8.0, 256, seed=3).get_batch(np.arange(200))["image"]
    eps = np.random.default_rng([3, 7]).standard_normal((4, 4, 1))
    assert np.array_equal(again[7][1:, 1:], np.rint(128 + 8 * eps)[1:, 1:].astype(np.uint8))
    assert not np.array_equal(robustness.NoisySource(base, 4.0, 256, seed=4)[7]["image"],
                              src[7]["image"])
    assert np.array_equal(robustness.NoisySource(base, 0.0, 256).get_batch([1, 2])["image"],
                          x[[1, 2]])
    digits = robustness.NoisySource(base, 50.0, 17).get_batch(np.arange(5))["image"]
    assert digits.max() <= 16
    for kwargs, match in ((dict(sigma=-1.0), "sigma"), (dict(sigma=float("nan")), "sigma"),
                          (dict(num_bins=300), "num_bins"), (dict(seed=-1), "seed")):
        args = dict(sigma=1.0, num_bins=256, seed=0) | kwargs
        with pytest.raises(ValueError, match=match):
            robustness.NoisySource(base, **args)


def _fake_run(hybrid_run, tmp_path, name, dataset):
    """A work directory whose config.json is the run's with another dataset (and an empty
    checkpoint step: refused before anything is restored).
    """
    d = tmp_path / name
    (d / "checkpoints" / "8").mkdir(parents=True)
    cfg = json.load(open(os.path.join(hybrid_run, "config.json")))
    cfg["dataset"]["name"] = dataset
    (d / "config.json").write_text(json.dumps(cfg))
    return str(d)


def test_bad_input_is_refused(hybrid_run, tmp_path, capsys):
    vector = _fake_run(hybrid_run, tmp_path, "vector", "two_moons")
    other = _fake_run(hybrid_run, tmp_path, "other", "mnist_8k")
    missing = str(tmp_path / "no_run")
    untrained = tmp_path / "untrained"       # config.json but no checkpoint
    untrained.mkdir()
    (untrained / "config.json").write_text(open(os.path.join(hybrid_run, "config.json")).read())
    out = str(tmp_path / "x.png")
    cases = [
        ([f"--workdirs={hybrid_run},{hybrid_run}", "--labels=A"], "--labels"),
        ([f"--workdirs={hybrid_run}", "--sigmas=0,-2"], "--sigmas"),
        ([f"--workdirs={hybrid_run}", "--sigmas=0,two"], "--sigmas"),
        ([f"--workdirs={hybrid_run},{missing}"], "config.json"),
        ([f"--workdirs={hybrid_run},{untrained}"], "no checkpoint"),
        ([f"--workdirs={vector}"], "vector data"),
        ([f"--workdirs={hybrid_run},{other}"], "same data"),
        ([], "--workdirs is required"),
        (["--replot"], "--replot: cannot read"),
    ]
    capsys.readouterr()
    for args, match in cases:
        code = robustness.main(["robustness.py", f"--out={out}"] + args)
        err = capsys.readouterr().err
        errors = [line for line in err.splitlines() if line.startswith("error: ")]
        assert code == 2 and len(errors) == 1 and match in errors[0], (args, err)
    assert not os.path.exists(out)


def test_plot_and_table_without_hybrids(tmp_path):
    runs = [{"label": "flow", "bits_per_dim": [1.0, 1.5, None], "accuracy": None},
            {"label": "acf", "bits_per_dim": [1.1, 1.2, 1.4], "accuracy": None}]
    path = str(tmp_path / "p.png")
    robustness.plot(path, runs, [0.0, 2.0, 4.0], "t")
    from PIL import Image
    w, h = Image.open(path).size
    assert w < 2 * h                    # one panel: no hybrid run
    table = robustness.markdown_table(["flow", "acf"], [0.0, 2.0, 4.0],
                                      [r["bits_per_dim"] for r in runs])
    assert table.splitlines()[2] == "| flow | 1.0000 | 1.5000 | -- |"
    assert robustness.parse_sigmas(["4", "0", "2", "4"]) == [0.0, 2.0, 4.0]

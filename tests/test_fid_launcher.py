"""experiments/fid.py: the offline FID table of trained MNIST runs at several temperatures.

One tiny Glow is trained on the shipped MNIST digits (``mnist_8k``) for 2 steps and a
feature classifier for 5 (cached in a file, as the launcher caches its own); the launcher
scores the run twice under two labels, with two sampling seeds, and must give both rows
the same figures, different figures per seed, their mean, the markdown table and the
JSON; bad input is refused with exit code 2 before anything is sampled.
"""
import contextlib
import io
import json
import os

import numpy as np
import pytest
from flax import serialization

from experiments import fid as fid_launcher
from jaxflows import fid
from jaxflows import train as jt
from jaxflows.data import mnist_8k


def _main(args):
    """``(exit code, stdout)`` of the launcher."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = fid_launcher.main(["fid.py"] + args)
    return code, buf.getvalue()


@pytest.fixture(scope="module")
def mnist_run(tmp_path_factory):
    """``(workdir, classifier path)``: a 2-step Glow on mnist_8k and a 5-step classifier."""
    from experiments.configs import glow_mnist
    c = glow_mnist.get_config("small")
    jt.set_fields(c, model=dict(levels=1, steps_per_level=1, hidden_channels=4, dropout=0.0),
                  dataset=dict(val_split="", test_split="test[:40]"),
                  batch_size=8, eval_batch_size=40, init_batch_size=16, num_train_steps=2,
                  log_every=1, eval_every=2, checkpoint_every=2,
                  eval_test_during_training=False, sample_temperatures=(),
                  progress_bar=False)
    work = str(tmp_path_factory.mktemp("fid_run"))
    jt.train_and_evaluate(c, work)
    images, labels = mnist_8k.load()
    params = fid.train_feature_net(images[:64], labels[:64], steps=5, batch_size=16)
    classifier = str(tmp_path_factory.mktemp("fid_net") / "net.msgpack")
    with open(classifier, "wb") as f:
        f.write(serialization.to_bytes(params))
    return work, classifier


def test_table_of_runs_seeds_and_temperatures(mnist_run, tmp_path):
    work, classifier = mnist_run
    out = tmp_path / "table" / "fid.json"
    code, text = _main([f"--workdir={work},{work}", "--labels=A,B", "--seeds=0,1",
                        "--temperatures=0.7,1", "--num_samples=16", "--batch=8",
                        f"--classifier={classifier}", f"--out={out}"])
    assert code == 0
    table = json.loads(out.read_text())
    assert table["seeds"] == [0, 1] and table["temperatures"] == [0.7, 1.0]
    assert "NOT Inception-FID" in table["metric"] and table["real_train_vs_test"] > 0
    a, b = table["runs"]
    assert (a["label"], b["label"]) == ("A", "B")
    assert a["fid_per_seed"] == b["fid_per_seed"]        # same run, same seeds: same draws
    for t in ("0.7", "1"):
        per_seed = a["fid_per_seed"][t]
        assert len(per_seed) == 2 and per_seed[0] != per_seed[1] and min(per_seed) > 0
        assert a["fid"][t] == pytest.approx(np.mean(per_seed))
    results = json.load(open(os.path.join(work, "results.json")))
    assert a["test_bpd"] == results["test_bpd"] and a["step"] == 2
    md = (tmp_path / "table" / "fid.md").read_text()
    assert md in text                                   # printed as well
    spread = (max(a["fid_per_seed"]["1"]) - min(a["fid_per_seed"]["1"])) / 2
    assert f"| A | 2 | {a['test_bpd']:.3f} | " in md
    assert f"{a['fid']['1']:.1f} ± {spread:.1f} |" in md
    assert f"| real `train` digits (floor) | - | - | {table['real_train_vs_test']:.1f} |" in md
    # the run's own fid.json, and seed 0 alone reproduces seed 0's figure
    own = json.load(open(os.path.join(work, "fid.json")))
    assert own["fid_per_seed"] == a["fid_per_seed"]
    code, _ = _main([f"--workdir={work}", "--seeds=0", "--temperatures=1", "--num_samples=16",
                     "--batch=8", f"--classifier={classifier}"])
    assert code == 0
    again = json.load(open(os.path.join(work, "fid.json")))
    assert again["fid"]["1"] == a["fid_per_seed"]["1"][0]


@pytest.mark.parametrize("bad, message", [
    (["--seeds=0,0"], "--seeds"),
    (["--seeds=a"], "--seeds"),
    (["--temperatures=0"], "--temperatures"),
    (["--num_samples=1"], "--num_samples"),
    (["--labels=A,B"], "--labels"),
])
def test_bad_input_is_refused(mnist_run, capsys, bad, message):
    work, classifier = mnist_run
    code = fid_launcher.main(["fid.py", f"--workdir={work}", f"--classifier={classifier}"]
                             + bad)
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.startswith("error:")


def test_a_run_on_other_images_is_refused(mnist_run, tmp_path, capsys):
    """A run on ``digits`` (8x8): refused by name, before the classifier is even loaded."""
    work, _ = mnist_run
    config = json.load(open(os.path.join(work, "config.json")))
    config["dataset"].update(name="digits", test_split="test")
    other = tmp_path / "digits_run"
    other.mkdir()
    (other / "config.json").write_text(json.dumps(config))
    code = fid_launcher.main(["fid.py", f"--workdir={work},{other}",
                              f"--classifier={tmp_path / 'absent.msgpack'}"])
    err = capsys.readouterr().err
    assert code == 2 and "28x28 grey digits" in err and "digits_run" in err
    assert not (tmp_path / "absent.msgpack").exists()     # nothing trained

"""Offline FID of a trained MNIST run's samples at several temperatures (NOT Inception-FID).

    python experiments/fid.py --workdir=runs/glow_mnist_small [--temperatures=0.7,1.0] \
        [--num_samples=800] [--classifier=runs/fid_mnist_classifier.msgpack] [--which=best]

Draws ``--num_samples`` samples at each temperature from the run's checkpoint (EMA
parameters if the run uses them), turns them into 8-bit pixels like the sample grids,
and scores them with :func:`jaxflows.fid.mnist_fid` against the 800 real digits of
``mnist_8k``'s ``test`` split: the Fréchet distance of the penultimate features (128)
of a small conv classifier trained here on ``mnist_8k``'s 7,200 ``train`` digits.
The classifier is trained on the first call (``--classifier_steps``, a minute or two
on a CPU) and cached in ``--classifier``; FIDs are comparable only when computed with
the same cached file. This is NOT Inception-FID (other network and features): compare
models with each other, not with published FIDs. As a floor, the FID of 800 real
``train`` digits against the ``test`` digits is printed too, and the classifier's test
accuracy. Results go to ``WORKDIR/fid.json``.

The run must model 28x28 grey digits (``mnist_8k`` or ``mnist``; with
``config.dataset.pad = 2`` the 32x32 samples are cropped back to 28x28). Exit code 2
with one ``error:`` line on bad input (``--debug`` adds the traceback).
"""
from __future__ import annotations

import json
import math
import os
import sys
from typing import Optional, Sequence

from absl import flags

from experiments import cli
from jaxflows.perf import configure_cpu

configure_cpu()

FLAGS = flags.FlagValues()
flags.DEFINE_string("workdir", None, "Work directory of a training run.", flag_values=FLAGS)
flags.DEFINE_list("temperatures", ["0.7", "1.0"], "Sampling temperatures T > 0.",
                  flag_values=FLAGS)
flags.DEFINE_integer("num_samples", 800, "Samples per temperature (>= 2).", flag_values=FLAGS)
flags.DEFINE_integer("batch", 200, "Samples drawn per compiled call.", flag_values=FLAGS)
flags.DEFINE_string("classifier", os.path.join("runs", "fid_mnist_classifier.msgpack"),
                    "Cache of the feature classifier (trained there when missing).",
                    flag_values=FLAGS)
flags.DEFINE_integer("classifier_steps", 1500, "Training steps of a new feature classifier.",
                     flag_values=FLAGS)
flags.DEFINE_enum("which", "best", ["best", "last"], "Which checkpoint to sample from.",
                  flag_values=FLAGS)
flags.DEFINE_integer("seed", 0, "Sampling seed.", flag_values=FLAGS)
flags.DEFINE_bool("debug", False, "Show the traceback of an error.", flag_values=FLAGS)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Score a run's samples with the offline FID; returns the exit code (2: bad input)."""
    return cli.run(_fid, argv, FLAGS, module=__name__, doc=__doc__, required=("workdir",))


def _temperatures():
    temps = []
    for t in FLAGS.temperatures:
        try:
            value = float(t)
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and value > 0):
            raise cli.RefusalError(f"--temperatures must be finite numbers > 0, got {t!r}.")
        temps.append(value)
    return temps


def _digits(images, pad: int):
    """``[N, 28, 28, 1]`` uint8 of a run's pixel images (the padding cropped)."""
    if pad:
        images = images[:, pad:-pad, pad:-pad]
    if images.shape[1:] != (28, 28, 1):
        raise cli.RefusalError(f"the offline FID scores 28x28 grey digits; this run's images "
                               f"are {tuple(images.shape[1:])} (an MNIST run: dataset "
                               "mnist_8k or mnist).")
    return images


def _fid() -> int:
    temps = _temperatures()
    if FLAGS.num_samples < 2 or FLAGS.batch < 1:
        raise cli.RefusalError(f"--num_samples must be >= 2 and --batch >= 1, got "
                               f"{FLAGS.num_samples} and {FLAGS.batch}.")
    import jax
    import numpy as np

    from jaxflows import fid
    from jaxflows.data import mnist_8k
    from jaxflows.train import (
        abstract_state,
        evaluation_variables,
        load_run_config,
        prepare_run,
        restore_for_eval,
    )
    from jaxflows.train.plots import to_pixels

    config = load_run_config(FLAGS.workdir)
    batch = min(FLAGS.batch, FLAGS.num_samples)
    config.num_samples = batch
    run = prepare_run(config, FLAGS.workdir)
    info_shape = tuple(run.info.image_shape)
    pad = run.settings.dataset.pad
    if run.score != "bpd" or len(info_shape) != 3 or info_shape[-1] != 1 or (
            info_shape[0] - 2 * pad, info_shape[1] - 2 * pad) != (28, 28):
        raise cli.RefusalError(f"the offline FID scores 28x28 grey digits; run "
                               f"{FLAGS.workdir!r} models {run.info.name!r} of shape "
                               f"{info_shape} (an MNIST run: dataset mnist_8k or mnist).")
    which = "best" if FLAGS.which == "best" else "checkpoints"
    state, _, step = restore_for_eval(FLAGS.workdir, abstract_state(run), which)
    variables = evaluation_variables(run, state, run.settings.use_ema)

    params = fid.load_or_train_feature_net(FLAGS.classifier, steps=FLAGS.classifier_steps,
                                           log=lambda m: print(m, flush=True))
    images, labels = mnist_8k.load()
    real_train, real_test = images[:mnist_8k.NUM_TRAIN], images[mnist_8k.NUM_TRAIN:]
    test_labels = labels[mnist_8k.NUM_TRAIN:]
    results = {
        "metric": "offline FID: Frechet distance of the penultimate features (128) of a "
                  "small MNIST classifier trained on mnist_8k train; NOT Inception-FID",
        "classifier": os.path.abspath(FLAGS.classifier),
        "classifier_test_accuracy": fid.classifier_accuracy(params, real_test, test_labels),
        "reference": "mnist_8k test (800 real digits)",
        "real_train_vs_test": fid.mnist_fid(params, real_train[:len(real_test)], real_test),
        "step": int(step), "num_samples": FLAGS.num_samples, "fid": {},
    }
    for i, t in enumerate(temps):
        drawn = []
        for j in range(math.ceil(FLAGS.num_samples / batch)):
            ids = np.array([run.settings.seed, 15485863, FLAGS.seed, i * 100003 + j], np.int32)
            if run.sample_cond is None:
                out, _ = run.steps.sample(variables, ids, np.float32(t))
            else:
                out, _ = run.steps.sample(variables, ids, np.float32(t), run.sample_cond)
            drawn.append(np.asarray(jax.device_get(out)))
        samples = np.concatenate(drawn)[:FLAGS.num_samples]
        nonfinite = int(np.sum(~np.all(np.isfinite(samples.reshape(len(samples), -1)), -1)))
        pixels = _digits(to_pixels(samples, run.info.num_bins), pad)
        results["fid"][f"{t:g}"] = fid.mnist_fid(params, pixels, real_test)
        if nonfinite:
            results.setdefault("nonfinite_samples", {})[f"{t:g}"] = nonfinite
    print(f"offline FID (NOT Inception-FID) of {FLAGS.num_samples} samples, step {step}, "
          f"against {results['reference']}:")
    for t, v in results["fid"].items():
        print(f"  T={t}: {v:.3f}")
    print(f"  real train digits: {results['real_train_vs_test']:.3f} (floor); classifier "
          f"test accuracy {results['classifier_test_accuracy']:.4f}")
    if jax.process_index() == 0:
        with open(os.path.join(FLAGS.workdir, "fid.json"), "w") as f:
            json.dump(results, f, indent=2, sort_keys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Offline FID of trained MNIST runs' samples at several temperatures (NOT Inception-FID).

    python experiments/fid.py --workdir=runs/glow_mnist_small [--temperatures=0.7,1.0] \
        [--num_samples=800] [--seeds=0] [--classifier=runs/fid_mnist_classifier.msgpack]
    python experiments/fid.py --workdir=runs/a,runs/b --labels="Glow,mAR-SCF" \
        --seeds=0,1,2 --out=fid_table.json          # a table of several runs

Draws ``--num_samples`` samples at each temperature from each run's checkpoint
(``--which``; EMA parameters if the run uses them), turns them into 8-bit pixels like
the sample grids, and scores them with :func:`jaxflows.fid.mnist_fid` against the 800
real digits of ``mnist_8k``'s ``test`` split: the Fréchet distance of the penultimate
features (128) of a small conv classifier trained here on ``mnist_8k``'s 7,200
``train`` digits. The classifier is trained on the first call (``--classifier_steps``,
a minute or two on a CPU) and cached in ``--classifier``; FIDs are comparable only when
computed with the same cached file. This is NOT Inception-FID (other network and
features): compare models with each other, not with published FIDs. As a floor, the
FID of 800 real ``train`` digits against the ``test`` digits is printed too, and the
classifier's test accuracy.

A seed draws the same random numbers at every temperature (the sampler scales them),
so a temperature's figure does not depend on the other temperatures asked for. With
several ``--seeds`` every temperature is scored on one sample set per seed; the
figure is their mean and the table gives it with half the range over the seeds (FID
of 800 samples is biased upwards and varies with the draw). Each run's figures go to
``WORKDIR/fid.json``; ``--out`` writes the table of every run as JSON and markdown
(``.md`` beside it). The table is printed either way.

Every run must model 28x28 grey digits (``mnist_8k`` or ``mnist``; with
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
flags.DEFINE_list("workdir", None, "Work directories of training runs (comma-separated).",
                  flag_values=FLAGS)
flags.DEFINE_list("labels", None, "Names of the runs in the table (default: the work "
                  "directories' names).", flag_values=FLAGS)
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
flags.DEFINE_string("seeds", "0", "Sampling seeds (comma-separated, distinct): one sample "
                    "set per seed and temperature.", flag_values=FLAGS)
flags.DEFINE_string("out", None, "JSON of the table of every run (a .md beside it).",
                    flag_values=FLAGS)
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


def _seeds():
    def refuse(message):
        raise cli.RefusalError(message)
    return cli.parse_seeds(FLAGS.seeds, refuse)


def _spread(values) -> float:
    """Half the range of ``values`` (0 for one value)."""
    return (max(values) - min(values)) / 2


def markdown_table(rows, temps, floor: float, seeds) -> str:
    """The table of :func:`_fid`'s rows (one per run)."""
    heads = " | ".join(f"FID T={t:g}" for t in temps)
    pm = " (mean ± half-range)" if len(seeds) > 1 else ""
    lines = [f"| run | step | test bits/dim | {heads} |",
             "|---|---:|---:|" + "---:|" * len(temps)]
    for r in rows:
        cells = []
        for t in temps:
            values = r["fid_per_seed"][f"{t:g}"]
            cell = f"{r['fid'][f'{t:g}']:.1f}"
            if len(values) > 1:
                cell += f" ± {_spread(values):.1f}"
            bad = r.get("nonfinite_samples", {}).get(f"{t:g}")
            cells.append(cell + (f" ({bad} non-finite)" if bad else ""))
        bpd = "-" if r["test_bpd"] is None else f"{r['test_bpd']:.3f}"
        lines.append(f"| {r['label']} | {r['step']} | {bpd} | " + " | ".join(cells) + " |")
    lines.append("| real `train` digits (floor) | - | - | "
                 + " | ".join(f"{floor:.1f}" for _ in temps) + " |")
    return (f"Offline FID (NOT Inception-FID) of {rows[0]['num_samples']} samples per "
            f"temperature and seed, seeds {', '.join(map(str, seeds))}{pm}, against "
            f"mnist_8k test (800 real digits):\n\n" + "\n".join(lines) + "\n")


def _check_run(workdir: str):
    """``(run, pad)`` of the run in ``workdir``; refused unless it models 28x28 digits."""
    from jaxflows.train import load_run_config, prepare_run
    config = load_run_config(workdir)
    config.num_samples = min(FLAGS.batch, FLAGS.num_samples)
    run = prepare_run(config, workdir)
    info_shape = tuple(run.info.image_shape)
    pad = run.settings.dataset.pad
    if run.score != "bpd" or len(info_shape) != 3 or info_shape[-1] != 1 or (
            info_shape[0] - 2 * pad, info_shape[1] - 2 * pad) != (28, 28):
        raise cli.RefusalError(f"the offline FID scores 28x28 grey digits; run "
                               f"{workdir!r} models {run.info.name!r} of shape "
                               f"{info_shape} (an MNIST run: dataset mnist_8k or mnist).")
    return run, pad


def _score_run(workdir: str, label: str, run, pad: int, params, reference, temps, seeds,
               common: dict) -> dict:
    """Samples of the run in ``workdir`` at every temperature and seed, scored against the
    features ``reference`` of the real test digits.
    """
    import jax
    import numpy as np

    from jaxflows import fid
    from jaxflows.train import abstract_state, evaluation_variables, restore_for_eval
    from jaxflows.train.plots import to_pixels

    batch = min(FLAGS.batch, FLAGS.num_samples)
    which = "best" if FLAGS.which == "best" else "checkpoints"
    state, _, step = restore_for_eval(workdir, abstract_state(run), which)
    variables = evaluation_variables(run, state, run.settings.use_ema)
    test_bpd = None
    results_path = os.path.join(workdir, "results.json")
    if os.path.exists(results_path):
        with open(results_path) as f:
            test_bpd = json.load(f).get("test_bpd")
    result = dict(common, label=label, workdir=os.path.abspath(workdir), step=int(step),
                  test_bpd=test_bpd, num_samples=FLAGS.num_samples, seeds=list(seeds),
                  fid={}, fid_per_seed={})
    for t in temps:
        per_seed = []
        for seed in seeds:
            drawn = []
            for j in range(math.ceil(FLAGS.num_samples / batch)):
                ids = np.array([run.settings.seed, 15485863, seed, j], np.int32)
                if run.sample_cond is None:
                    out, _ = run.steps.sample(variables, ids, np.float32(t))
                else:
                    out, _ = run.steps.sample(variables, ids, np.float32(t), run.sample_cond)
                drawn.append(np.asarray(jax.device_get(out)))
            samples = np.concatenate(drawn)[:FLAGS.num_samples]
            nonfinite = int(np.sum(~np.all(np.isfinite(samples.reshape(len(samples), -1)),
                                           -1)))
            if nonfinite:
                counts = result.setdefault("nonfinite_samples", {})
                counts[f"{t:g}"] = counts.get(f"{t:g}", 0) + nonfinite
            pixels = _digits(to_pixels(samples, run.info.num_bins), pad)
            per_seed.append(fid.fid_from_features(fid.mnist_features(params, pixels),
                                                  reference))
        result["fid_per_seed"][f"{t:g}"] = per_seed
        result["fid"][f"{t:g}"] = float(np.mean(per_seed))
    if jax.process_index() == 0:
        cli.write_text_atomic(os.path.join(workdir, "fid.json"),
                              json.dumps(result, indent=2, sort_keys=True) + "\n")
    return result


def _fid() -> int:
    temps = _temperatures()
    seeds = _seeds()
    if FLAGS.num_samples < 2 or FLAGS.batch < 1:
        raise cli.RefusalError(f"--num_samples must be >= 2 and --batch >= 1, got "
                               f"{FLAGS.num_samples} and {FLAGS.batch}.")
    workdirs = list(FLAGS.workdir)
    labels = cli.run_labels(workdirs, FLAGS.labels, flag="--workdir")
    runs = [_check_run(w) for w in workdirs]     # refuse a bad run before any sampling
    import jax

    from jaxflows import fid
    from jaxflows.data import mnist_8k

    params = fid.load_or_train_feature_net(FLAGS.classifier, steps=FLAGS.classifier_steps,
                                           log=lambda m: print(m, flush=True))
    images, labels_all = mnist_8k.load()
    real_train, real_test = images[:mnist_8k.NUM_TRAIN], images[mnist_8k.NUM_TRAIN:]
    reference = fid.mnist_features(params, real_test)       # once for every sample set
    common = {
        "metric": "offline FID: Frechet distance of the penultimate features (128) of a "
                  "small MNIST classifier trained on mnist_8k train; NOT Inception-FID",
        "classifier": os.path.abspath(FLAGS.classifier),
        "classifier_test_accuracy": fid.classifier_accuracy(
            params, real_test, labels_all[mnist_8k.NUM_TRAIN:]),
        "reference": "mnist_8k test (800 real digits)",
        "real_train_vs_test": fid.fid_from_features(
            fid.mnist_features(params, real_train[:len(real_test)]), reference),
    }
    rows = []
    for workdir, label, (run, pad) in zip(workdirs, labels, runs):
        rows.append(_score_run(workdir, label, run, pad, params, reference, temps, seeds,
                               common))
    table = markdown_table(rows, temps, common["real_train_vs_test"], seeds)
    print(table + f"\nclassifier test accuracy {common['classifier_test_accuracy']:.4f}",
          flush=True)
    if FLAGS.out and jax.process_index() == 0:
        payload = dict(common, temperatures=[float(t) for t in temps], seeds=list(seeds),
                       num_samples=FLAGS.num_samples, which=FLAGS.which,
                       runs=[{k: v for k, v in r.items() if k not in common} for r in rows])
        cli.write_text_atomic(FLAGS.out, json.dumps(payload, indent=2, sort_keys=True) + "\n")
        cli.write_text_atomic(os.path.splitext(FLAGS.out)[0] + ".md", table)
    return 0


if __name__ == "__main__":
    sys.exit(main())

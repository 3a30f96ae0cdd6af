r"""Bits/dim (and a hybrid's accuracy) of trained runs on test images with additive noise.

    python experiments/robustness.py --workdirs=runs/a,runs/b,runs/c \
        --labels="ResFlow,ACF L2,ACF LipNorm" --sigmas=0,2,4,8,16 --out=robustness.png \
        [--which=best] [--split=test] [--json=robustness.json] [--noise_seed=0]
    python experiments/robustness.py --replot --out=robustness.png   # redraw from the JSON

ACF (attentive contractive flows) claims that contractive attention, "especially the
dot-product variant", makes a flow more resilient to additive noise. This launcher
measures it: for every run (``--workdirs``, each made by ``experiments/train.py``) and
every ``sigma`` of ``--sigmas`` it evaluates the restored checkpoint (as
``experiments/evaluate.py`` does: ``--which``, EMA parameters unless
``--use_ema=false``) on the split's images corrupted by additive white Gaussian noise,

.. math::

    \tilde x = \operatorname{clip}\big(\operatorname{round}(x + \sigma \varepsilon),
        0, B - 1\big), \qquad \varepsilon \sim \mathcal N(0, I),

and reports the mean bits/dim of ``log p(x~)`` and, for hybrid runs (``config.hybrid``),
the test accuracy of the classifier head on ``x~``.

* ``sigma`` is in **pixel levels of the dataset's own scale** (``B`` levels
  ``0 .. B - 1``: ``B = 17`` for ``digits``, 256 for 8-bit data such as MNIST or
  CIFAR-10): ``sigma = 8`` is about half the range of ``digits`` but 3% of an 8-bit
  range. Runs on datasets with different ``B`` are refused (the same sigma would mean
  different corruptions).
* The noisy image is rounded to the nearest integer (half to even) and clipped to the
  valid levels, so it is again an integer image: the models' dequantisation (uniform or
  variational) and the discrete bits/dim stay well defined, exactly as on clean data.
  Clipping makes the corruption slightly less than Gaussian near black and white.
* One fixed noise draw: ``eps`` of record ``i`` comes from ``numpy``'s PCG64 seeded by
  ``(--noise_seed, i)``, and the image at ``sigma`` is ``x + sigma * eps``. Every run sees
  the same noisy images at a given sigma (a paired comparison across runs) and the same
  ``eps`` is scaled for every sigma (the curves are paired across sigmas as well); the
  dequantisation noise of the evaluation is that of ``evaluate.py`` (same split id), so
  ``sigma = 0`` reproduces ``evaluate.py``'s figure exactly.
* The noise is added to the images as stored and a run's zero padding
  (``config.dataset.pad``) is applied afterwards: the constant border stays zero.
* A run whose context is computed from the image (``config.dataset.context =
  "lowres:F"``) is conditioned on the noisy image's low-resolution version; a
  label-conditional run on the true label.

Outputs: markdown tables on stdout: bits/dim per run x sigma, their increase over the
clean images (when ``0`` is among the sigmas: the claim is about how much a model
degrades, and the increase is paired, the same images for every run) and, for hybrid
runs, accuracy; ``--json`` (default: ``--out`` with ``.json``) with every figure;
``--out``, a PNG with one line per run of bits/dim against sigma (on a log scale when
the largest figure is over 10 times the smallest), and a second panel of accuracy
against sigma when any run is a hybrid. ``--replot`` redraws the PNG and reprints the
tables from the JSON of an earlier call, evaluating nothing.

Exit codes (``experiments/cli.py``): 0 done, 1 a figure is not finite (after writing the
outputs), 2 refused (one ``error:`` line; ``--debug`` adds the traceback): no run in a
work directory, ``--labels`` not matching ``--workdirs``, a negative or non-numeric sigma,
a run on vector (tabular) data, runs on different data.
"""
from __future__ import annotations

import json
import math
import os
import sys
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
from absl import flags

from experiments import cli
from jaxflows.data.sources import stack_labels
from jaxflows.perf import configure_cpu

# Before JAX's first computation (see experiments/evaluate.py).
configure_cpu()

FLAGS = flags.FlagValues()
flags.DEFINE_list("workdirs", None, "Comma-separated work directories of training runs.",
                  flag_values=FLAGS)
flags.DEFINE_list("labels", None, "Comma-separated names of the runs in the table and plot "
                  "(one per work directory; default: the directories' base names).",
                  flag_values=FLAGS)
flags.DEFINE_list("sigmas", ["0", "2", "4", "8", "16"], "Noise standard deviations, in pixel "
                  "levels of the dataset (0 .. num_bins - 1).", flag_values=FLAGS)
flags.DEFINE_string("out", "robustness.png", "The PNG of the curves.", flag_values=FLAGS)
flags.DEFINE_string("json", None, "The JSON of the figures (default: --out with .json).",
                    flag_values=FLAGS)
flags.DEFINE_enum("which", "best", ["best", "last"], "Which checkpoint to evaluate.",
                  flag_values=FLAGS)
flags.DEFINE_string("split", None, "Split to evaluate (default: the runs' test split).",
                    flag_values=FLAGS)
flags.DEFINE_bool("use_ema", True, "Evaluate the EMA parameters (if the run kept an EMA).",
                  flag_values=FLAGS)
flags.DEFINE_integer("eval_batch_size", None, "Override the global evaluation batch size.",
                     flag_values=FLAGS)
flags.DEFINE_integer("noise_seed", 0, "Seed of the Gaussian noise (shared by all runs and "
                     "sigmas).", flag_values=FLAGS)
flags.DEFINE_bool("replot", False, "Redraw --out and reprint the tables from the JSON of an "
                  "earlier run of this command (--json, default --out with .json), "
                  "evaluating nothing; --workdirs is not needed.", flag_values=FLAGS)
flags.DEFINE_bool("debug", False, "Show the traceback of an error.", flag_values=FLAGS)


class NoisySource:
    r"""A random-access source of ``source``'s images with additive Gaussian noise.

    Record ``i`` is ``{"image": clip(rint(x_i + sigma * eps_i), 0, num_bins - 1) as uint8,
    "label": y_i}`` with ``eps_i ~ N(0, I)`` drawn by ``numpy``'s PCG64 seeded by
    ``(seed, i)``: the same record gets the same ``eps`` whatever the batch it is read in,
    the sigma or the process, so two sources of equal ``seed`` differ only by ``sigma``.
    Same interface as :mod:`jaxflows.data.sources`: ``len``, ``source[i]`` and
    ``get_batch(indices)``.

    Args:
      source: a source of ``{"image": uint8 [H, W, C], "label": int}`` records.
      sigma: noise standard deviation in pixel levels, ``>= 0`` (0: the images as they are).
      num_bins: the number of pixel levels ``B`` of the data.
      seed: the noise seed (a non-negative int).
    """

    def __init__(self, source, sigma: float, num_bins: int, seed: int = 0):
        sigma = float(sigma)
        if not math.isfinite(sigma) or sigma < 0:
            raise ValueError(f"sigma: expected a finite noise level >= 0 (pixel levels), got "
                             f"{sigma!r}.")
        if isinstance(num_bins, bool) or not isinstance(num_bins, int) or not (
                2 <= num_bins <= 256):
            raise ValueError(f"num_bins: expected an int in 2..256 (uint8 images), got "
                             f"{num_bins!r}.")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed: expected an int >= 0, got {seed!r}.")
        self.source, self.sigma, self.num_bins, self.seed = source, sigma, num_bins, seed

    def __len__(self) -> int:
        return len(self.source)

    def _noisy(self, images: np.ndarray, indices: np.ndarray) -> np.ndarray:
        if self.sigma == 0:
            return images
        eps = np.stack([np.random.default_rng([self.seed, int(i)]).standard_normal(
            images.shape[1:]) for i in indices])
        noisy = np.rint(images.astype(np.float64) + self.sigma * eps)
        return np.clip(noisy, 0, self.num_bins - 1).astype(np.uint8)

    def __getitem__(self, index: int) -> Dict[str, Any]:
        n = len(self)
        index = int(index) + (n if int(index) < 0 else 0)
        if not 0 <= index < n:
            raise IndexError(f"index {index} out of range for a source of {n} records.")
        record = dict(self.source[index])
        image = np.asarray(record["image"], np.uint8)
        record["image"] = self._noisy(image[None], np.array([index]))[0]
        return record

    def get_batch(self, indices) -> Dict[str, np.ndarray]:
        """Records ``indices`` stacked: ``{"image": uint8 [n, H, W, C], "label": int32 [n]}``."""
        indices = np.asarray(indices, np.int64)
        if hasattr(self.source, "get_batch"):
            batch = self.source.get_batch(indices)
            images, labels = np.asarray(batch["image"], np.uint8), np.asarray(batch["label"])
        else:
            records = [self.source[int(i)] for i in indices]
            images = np.stack([np.asarray(r["image"], np.uint8) for r in records])
            labels = stack_labels([r.get("label", 0) for r in records])
        return {"image": self._noisy(images, indices), "label": labels.astype(np.int32)}

    def __repr__(self) -> str:
        return (f"NoisySource({self.source!r}, sigma={self.sigma:g}, num_bins={self.num_bins}, "
                f"seed={self.seed})")


def parse_sigmas(values: Sequence[str]) -> List[float]:
    """``--sigmas`` as floats, sorted and without repeats.

    Raises:
      cli.RefusalError: an empty list, a value that is not a number, negative or not finite.
    """
    sigmas = []
    for v in values:
        try:
            s = float(v)
        except ValueError:
            raise cli.RefusalError(f"--sigmas: {v!r} is not a number (expected noise levels "
                                   "in pixel levels, e.g. --sigmas=0,2,4,8).") from None
        if not math.isfinite(s) or s < 0:
            raise cli.RefusalError(f"--sigmas: every sigma must be a finite number >= 0 "
                                   f"(pixel levels), got {v}.")
        sigmas.append(s)
    if not sigmas:
        raise cli.RefusalError("--sigmas: expected at least one noise level, e.g. "
                               "--sigmas=0,2,4,8.")
    return sorted(set(sigmas))


def _load(workdir: str):
    """``(config, dataset settings, DatasetInfo)`` of the run in ``workdir``.

    Refuses (before anything is computed) a directory without ``config.json`` or without
    any checkpoint, and a run on vector data.
    """
    from jaxflows import data as jdata
    from jaxflows.train import load_run_config, read_settings
    config = load_run_config(workdir)   # FileNotFoundError naming config.json: no run
    raw = config.get("dataset", {})
    name = raw.get("name")
    if name is not None and jdata.tabular.is_vector_dataset(name):   # before the model
        raise cli.RefusalError(f"--workdirs: the run in {workdir!r} is on vector data "
                               f"({name!r}): additive pixel noise applies to image runs "
                               "only.")
    looked = [os.path.join(workdir, d) for d in ("best", "checkpoints")]
    if not any(os.path.isdir(d) and any(e.isdigit() for e in os.listdir(d)) for d in looked):
        raise FileNotFoundError(f"no checkpoint in {workdir!r} (looked in best/ and "
                                "checkpoints/): train the run first.")
    dataset = read_settings(config).dataset
    info = jdata.get_info(dataset.name, data_dir=dataset.data_dir)
    if info.is_vector:
        raise cli.RefusalError(f"--workdirs: the run in {workdir!r} is on vector data "
                               f"({dataset.name!r}): additive pixel noise applies to image "
                               "runs only.")
    return config, dataset, info


def markdown_table(labels: Sequence[str], sigmas: Sequence[float],
                   rows: Sequence[Sequence[Optional[float]]], fmt: str = "{:.4f}") -> str:
    """A markdown table: one row per run, one column per sigma."""
    head = "| run | " + " | ".join(f"sigma={s:g}" for s in sigmas) + " |"
    rule = "|---|" + "---:|" * len(sigmas)
    lines = [head, rule]
    for label, row in zip(labels, rows):
        cells = ["--" if v is None else fmt.format(v) for v in row]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def increase(row: Sequence[Optional[float]]) -> List[Optional[float]]:
    """``row[k] - row[0]`` for ``k >= 1`` (None where either is missing)."""
    return [None if v is None or row[0] is None else v - row[0] for v in row[1:]]


def plot(path: str, results: Sequence[Dict[str, Any]], sigmas: Sequence[float], title: str):
    """The PNG: bits/dim against sigma per run, and accuracy against sigma for hybrids."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from jaxflows.train.plots import save_figure
    hybrids = [r for r in results if r["accuracy"] is not None]
    fig, axes = plt.subplots(1, 2 if hybrids else 1, figsize=(11 if hybrids else 6, 4),
                             squeeze=False)
    ax = axes[0, 0]
    for r in results:
        ax.plot(sigmas, [np.nan if v is None else v for v in r["bits_per_dim"]],
                marker="o", label=r["label"])
    ax.set_xlabel("noise sigma (pixel levels)")
    finite = [v for r in results for v in r["bits_per_dim"] if v is not None and v > 0]
    if finite and max(finite) > 10 * min(finite):     # one run far above the others
        ax.set_yscale("log")
        ax.set_ylabel("bits/dim (log scale)")
    else:
        ax.set_ylabel("bits/dim")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    if hybrids:
        ax = axes[0, 1]
        for r in hybrids:
            ax.plot(sigmas, r["accuracy"], marker="o", label=r["label"])
        ax.set_xlabel("noise sigma (pixel levels)")
        ax.set_ylabel("test accuracy")
        ax.set_ylim(0, 1.02)
        ax.set_title("hybrid runs: accuracy")
        ax.grid(alpha=0.3)
        ax.legend()
    save_figure(fig, path)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Evaluate the runs on noisy images, print and write the figures; returns the exit code."""
    return cli.run(_robustness, argv, FLAGS, module=__name__, doc=__doc__)


def report(out: Dict[str, Any], png: str, json_path: str) -> None:
    """Draws ``png`` and prints the tables of ``out`` (the JSON this command writes)."""
    name, split, num_bins = out["dataset"], out["split"], out["num_bins"]
    sigmas, results = out["sigmas"], out["runs"]
    labels = [r["label"] for r in results]
    os.makedirs(os.path.dirname(os.path.abspath(png)), exist_ok=True)
    plot(png, results, sigmas,
         f"{name} {split}: additive Gaussian noise (levels 0..{num_bins - 1})")
    print(f"{split} bits/dim of {name} under additive Gaussian noise (sigma in pixel "
          f"levels 0..{num_bins - 1}, noise seed {out['noise_seed']}):\n")
    print(markdown_table(labels, sigmas, [r["bits_per_dim"] for r in results]))
    if sigmas[0] == 0 and len(sigmas) > 1:
        print("\nincrease over the clean images (sigma = 0), the paired cost of the "
              "noise:\n")
        print(markdown_table(labels, sigmas[1:],
                             [increase(r["bits_per_dim"]) for r in results],
                             fmt="{:+.4f}"))
    hybrids = [r for r in results if r["accuracy"] is not None]
    if hybrids:
        print(f"\n{split} accuracy of the hybrid runs:\n")
        print(markdown_table([r["label"] for r in hybrids], sigmas,
                             [r["accuracy"] for r in hybrids], fmt="{:.3f}"))
    print(f"\nwrote {png} and {json_path}")


def _robustness() -> int:
    import jax

    from jaxflows import data as jdata
    from jaxflows.train import abstract_state, prepare_run, restore_for_eval
    from jaxflows.train.evaluation import evaluate_split_metrics

    json_path = FLAGS.json or os.path.splitext(FLAGS.out)[0] + ".json"
    if FLAGS.replot:
        try:
            with open(json_path) as f:
                out = json.load(f)
            keys = ("dataset", "split", "num_bins", "sigmas", "noise_seed", "runs")
            missing = [k for k in keys if k not in out]
        except (OSError, ValueError) as e:
            raise cli.RefusalError(f"--replot: cannot read {json_path} ({e}).") from None
        if missing:
            raise cli.RefusalError(f"--replot: {json_path} is not this command's JSON "
                                   f"(no {missing}).")
        report(out, FLAGS.out, json_path)
        return 0
    if not FLAGS.workdirs:
        raise cli.RefusalError("--workdirs is required (see --help).")
    workdirs = list(FLAGS.workdirs)
    labels = cli.run_labels(workdirs, FLAGS.labels)
    sigmas = parse_sigmas(FLAGS.sigmas)
    if FLAGS.noise_seed < 0:
        raise cli.RefusalError(f"--noise_seed: expected an int >= 0, got {FLAGS.noise_seed}.")
    # Every run is read and checked before anything is computed.
    loaded = [_load(w) for w in workdirs]
    splits = {FLAGS.split or ds.test_split for _, ds, _ in loaded}
    if "" in splits:
        raise cli.RefusalError("a run has no test split (config.dataset.test_split is "
                               "empty): pass --split.")
    names = {(ds.name, info.num_bins) for _, ds, info in loaded}
    if len(names) > 1 or len(splits) > 1:
        raise cli.RefusalError(
            "--workdirs: the runs must be on the same data for a paired comparison; got "
            f"datasets {sorted(n for n, _ in names)} and splits {sorted(splits)}.")
    split = splits.pop()
    name, num_bins = names.pop()

    results = []
    for workdir, label, (config, _, _) in zip(workdirs, labels, loaded):
        config.eval_use_ema = bool(FLAGS.use_ema)
        if FLAGS.eval_batch_size:
            config.eval_batch_size = FLAGS.eval_batch_size
        run = prepare_run(config, workdir)
        dataset = run.settings.dataset
        which = "best" if FLAGS.which == "best" else "checkpoints"
        state, _, step = restore_for_eval(workdir, abstract_state(run), which)
        # noise on the images as stored; the run's zero padding afterwards
        clean = jdata.get_source(dataset.name, split, data_dir=dataset.data_dir,
                                 download=dataset.download)
        split_id = 2 if split == dataset.test_split else 3   # as experiments/evaluate.py
        bpd, acc = [], []
        for sigma in sigmas:
            source = NoisySource(clean, sigma, num_bins, FLAGS.noise_seed)
            if dataset.pad:
                source = jdata.PaddedSource(source, dataset.pad)
            m = evaluate_split_metrics(run, state, source, split_id)
            bpd.append(float(m[run.score]))
            acc.append(float(m["accuracy"]) if "accuracy" in m else None)
            print(f"[{label}] sigma={sigma:g}: {bpd[-1]:.4f} bits/dim"
                  + ("" if acc[-1] is None else f", accuracy {acc[-1]:.3f}"), flush=True)
        hybrid = run.hybrid_lam is not None
        results.append({"workdir": workdir, "label": label, "checkpoint_step": int(step),
                        "use_ema": run.settings.use_ema, "hybrid_lam": run.hybrid_lam,
                        "bits_per_dim": bpd, "accuracy": acc if hybrid else None,
                        "num_examples": len(clean)})

    bad = [(r["label"], s) for r in results for s, v in zip(sigmas, r["bits_per_dim"])
           if not math.isfinite(v)]
    for r in results:   # JSON has no NaN / inf: null
        r["bits_per_dim"] = [v if math.isfinite(v) else None for v in r["bits_per_dim"]]
    out = {"dataset": name, "split": split, "num_bins": num_bins, "sigmas": sigmas,
           "sigma_unit": f"pixel levels (0..{num_bins - 1})", "noise_seed": FLAGS.noise_seed,
           "which": FLAGS.which, "runs": results}
    if jax.process_index() == 0:
        cli.write_text_atomic(json_path, json.dumps(out, indent=1, sort_keys=True))
        report(out, FLAGS.out, json_path)
    if bad:
        raise FloatingPointError(f"bits/dim not finite for (run, sigma) {bad}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())

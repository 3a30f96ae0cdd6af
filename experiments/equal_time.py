r"""Flows on the real MNIST digits at equal wall time: Glow, mAR-SCF, TarFlow, Jet.

    python experiments/equal_time.py --workdir=runs/equal_time --budget=480 \
        --output=docs/images/equal_time.json [--models=glow,glow_48,mar_scf,tarflow,jet]

The comparison the mAR-SCF issue (item 6) and the transformer-flows issue (item 6) ask
for: every model trains on ``mnist_8k`` (6,480 digits; 720 validate, 800 test; 28x28x1,
``D = 784``, uniformly dequantised 8-bit pixels) for the **same optimiser wall time** on
this machine, then is scored on the same 800 held-out digits.

How "equal wall time" is made (the trainer has no clock; its runs are exactly
resumable, which a wall-clock stop would break):

1. **Pilot**: the model's compiled train step is timed on its own config (batch,
   optimiser) for ``--pilot_steps`` steps after 3 warm-up steps; ``s/step`` is the
   median.
2. **Schedule**: ``num_train_steps = floor(budget / (s/step))``, so each model's
   learning-rate schedule (warm-up capped at a tenth of the steps, then its config's
   decay) runs to its end inside the budget. Evaluation (4 times), checkpoints and
   compilation are not counted in the budget; the table gives the whole run's wall time
   beside it.
3. **Training**: :func:`jaxflows.train.train_and_evaluate` (best-on-validation EMA
   parameters, test bits/dim over the whole test split, sample grids at T = 0.7, 1.0).
4. **Sampling time** per image of the trained model (batch ``--sample_batch``, median of
   3 after compilation). TarFlow is timed with its sequential (``lax.scan``, the exact
   inverse) and its Jacobi inverse (``inverse_method="jacobi"``, tolerance 4 eps, the
   same parameters), with the largest pixel difference between the two sample sets.

Models (each its config's ``small``-type variant on ``mnist_8k``; their own choices of
preprocessing, batch and optimiser are kept):

* ``glow``: ``glow_mnist.py:small`` (L = 2, K = 4, logit preprocessing, dropout 0.1) at
  120 hidden channels: 197,756 parameters, the size of the mAR-SCF model (199,064);
* ``glow_48``: the same Glow at 48 hidden channels without dropout, the mAR-SCF model's
  flow without its priors (Glow's learned Gaussian split priors instead);
* ``mar_scf``: ``mar_scf_mnist.py:small_mnist`` (the same L = 2, K = 4 affine flow at 48
  channels, with the mAR ConvLSTM prior on both factored-out halves and on the top);
* ``tarflow``: ``tarflow_mnist.py:small`` (4-128-4-4) made **unconditional**
  (``num_classes=None``, no context) and without noise augmentation (``noise_std=0``),
  so that its bits/dim are ``-log2 p(x) / D`` like the others';
* ``jet``: ``jet_mnist.py:small`` (8 couplings of width 64, patch 2).

Every run trains in ``<workdir>/<model>``; a finished one (``results.json``) is reused
and its recorded pilot and wall time read back, an interrupted one resumes. ``--output``
gets the JSON of every figure (read from the runs, never typed in), a markdown table
beside it (``.md``) and a PNG of each model's samples at T = 0.7 and 1.0 (``.png``).
Exit code 2 with one ``error:`` line on bad input.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from typing import Dict, List, Optional

# name: (config module, variant, overrides applied with set_fields)
MODELS: Dict[str, tuple] = {
    "glow": ("glow_mnist", "small", dict(model=dict(hidden_channels=120))),
    "glow_48": ("glow_mnist", "small", dict(model=dict(hidden_channels=48, dropout=0.0))),
    "mar_scf": ("mar_scf_mnist", "small_mnist", {}),
    "tarflow": ("tarflow_mnist", "small",
                dict(dataset=dict(context=""),
                     model=dict(num_classes=None, noise_std=0.0, label_drop=0.0))),
    "jet": ("jet_mnist", "small", {}),
}
EVALS = 4


def base_config(name: str):
    """The config of model ``name`` before its schedule is fitted to the budget."""
    import importlib

    from jaxflows.train import set_fields
    module, variant, overrides = MODELS[name]
    config = importlib.import_module(f"experiments.configs.{module}").get_config(variant)
    if overrides:
        set_fields(config, **overrides)
    config.progress_bar = False
    return config


def pilot_seconds_per_step(config, steps: int) -> float:
    """Median wall seconds of one compiled train step of ``config`` (after 3 warm-ups)."""
    import jax

    from jaxflows import data as jdata
    from jaxflows.train import device_batch, init_state, prepare_run
    run = prepare_run(config)
    state = init_state(run)
    loader = jdata.make_loader(run.train_src, global_batch_size=config.batch_size,
                               seed=config.seed, shuffle=True)
    batches = iter(loader)
    times = []
    for i in range(3 + steps):
        batch = device_batch(run, next(batches))
        t0 = time.perf_counter()
        state, metrics = run.steps.train(state, batch)
        jax.block_until_ready((state, metrics))
        if i >= 3:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def fit_schedule(config, budget: float, seconds_per_step: float) -> int:
    """Sets ``num_train_steps`` (and the evaluation/checkpoint cadence, the warm-up cap)
    so the optimiser steps take ``budget`` seconds; returns the step count.
    """
    steps = max(EVALS, int(budget // seconds_per_step))
    every = max(1, steps // EVALS)
    config.num_train_steps = steps
    config.eval_every = every
    config.checkpoint_every = every
    config.log_every = min(int(config.log_every), every)
    config.optim.warmup_steps = min(int(config.optim.warmup_steps), max(1, steps // 10))
    return steps


def num_params(params) -> int:
    import jax
    return int(sum(x.size for x in jax.tree_util.tree_leaves(params)))


def restore_best(config, workdir: str, *, check_workdir: bool = True):
    """``(run, state, variables)``: the run of ``config`` restored from the best checkpoint of
    ``workdir``, with its EMA evaluation variables.
    """
    from jaxflows.train import abstract_state, evaluation_variables, prepare_run
    from jaxflows.train.checkpoint import restore_for_eval
    run = prepare_run(config, workdir, check_workdir=check_workdir)
    state, _, _ = restore_for_eval(workdir, abstract_state(run), "best")
    return run, state, evaluation_variables(run, state, True)


def sampling_seconds(config, workdir: str, batch: int, *, inverse_method: Optional[str] = None):
    """``(seconds per image, samples)`` of the trained run at T = 1 (median of 3 calls)."""
    import jax
    import numpy as np

    config = config.copy_and_resolve_references()
    config.num_samples = batch
    if inverse_method is not None:
        config.model.inverse_method = inverse_method
    # the Jacobi flow has the trained flow's parameters, not its fingerprint
    run, _, variables = restore_best(config, workdir, check_workdir=inverse_method is None)
    ids = np.array([config.seed, 7, 0, 0], np.int32)

    def draw():
        return run.steps.sample(variables, ids, np.float32(1.0))[0]

    samples = jax.block_until_ready(draw())
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        jax.block_until_ready(draw())
        times.append(time.perf_counter() - t0)
    return statistics.median(times) / batch, np.asarray(samples)


def per_image_test_bpd(config, workdir: str, batch: int = 200):
    """Bits/dim of every test image under the run's best EMA parameters (uniform
    dequantisation, one draw): the trainer reports their mean, which one image the model
    finds very unlikely can dominate; the median and the count of outliers show it.
    """
    import jax
    import jax.numpy as jnp
    import numpy as np

    from jaxflows.train.step import dequantized_log_prob
    run, _, variables = restore_best(config, workdir)
    log_prob = jax.jit(lambda v, x, k: dequantized_log_prob(run.flow, v, x, k, train=False)[0])
    src = run.test_src
    out = []
    for start in range(0, len(src), batch):
        images = src.get_batch(np.arange(start, min(start + batch, len(src))))["image"]
        key = jax.random.fold_in(jax.random.PRNGKey(config.seed), start)
        out.append(np.asarray(log_prob(variables, jnp.asarray(images), key)))
    return -np.concatenate(out) / (run.num_dims * np.log(2.0))


def run_model(name: str, workdir: str, budget: float, pilot_steps: int,
              sample_batch: int) -> dict:
    """Pilot, train (or reuse) and time the sampling of model ``name``; its record."""
    import numpy as np

    from jaxflows import train as jt
    wd = os.path.join(workdir, name)
    record_path = os.path.join(wd, "equal_time.json")
    config = base_config(name)
    record: dict = {}
    if os.path.exists(record_path):
        with open(record_path) as f:
            record = json.load(f)
    if "seconds_per_step" not in record:
        print(f"[{name}] pilot: timing {pilot_steps} train steps", flush=True)
        record = {"model": name, "budget_s": budget,
                  "seconds_per_step": pilot_seconds_per_step(config, pilot_steps)}
    if record["budget_s"] != budget:
        raise ValueError(f"{wd} was trained for a budget of {record['budget_s']} s, not "
                         f"{budget} s: use another --workdir.")
    record["steps"] = fit_schedule(config, budget, record["seconds_per_step"])
    os.makedirs(wd, exist_ok=True)
    with open(record_path, "w") as f:
        json.dump(record, f, indent=1)
    if not os.path.exists(os.path.join(wd, "results.json")):
        print(f"[{name}] training {record['steps']} steps "
              f"({record['seconds_per_step']:.3f} s/step) in {wd}", flush=True)
        t0 = time.perf_counter()
        results = jt.train_and_evaluate(config, wd)
        if results.get("interrupted"):
            raise KeyboardInterrupt(f"{name} interrupted at step {results['step']}")
        record["run_wall_s"] = record.get("run_wall_s", 0.0) + time.perf_counter() - t0
        with open(record_path, "w") as f:
            json.dump(record, f, indent=1)
    with open(os.path.join(wd, "results.json")) as f:
        results = json.load(f)
    record.update(test_bpd=results["test_bpd"], best_val_bpd=results.get("best_val_bpd"),
                  best_step=results.get("best_step"))
    if "test_bpd_median" not in record:
        bpd = per_image_test_bpd(config, wd)
        record.update(test_bpd_median=float(np.median(bpd)),
                      test_bpd_mean_recomputed=float(np.mean(bpd)),
                      test_images_over_8_bpd=int(np.sum(bpd > 8.0)),
                      test_bpd_max=float(np.max(bpd)), test_bpd_argmax=int(np.argmax(bpd)),
                      test_images=int(bpd.size))
    if "sample_s_per_image" not in record:
        record["params"] = num_params(restore_best(config, wd)[1].params)
        per_image, seq = sampling_seconds(config, wd, sample_batch)
        record["sample_s_per_image"] = per_image
        record["sample_finite_fraction"] = float(np.isfinite(seq).all(
            axis=tuple(range(1, seq.ndim))).mean())
        if name == "tarflow":
            per_image, jac = sampling_seconds(config, wd, sample_batch,
                                              inverse_method="jacobi")
            record["sample_s_per_image_jacobi"] = per_image
            record["jacobi_max_abs_diff"] = float(np.max(np.abs(jac - seq)))
    with open(record_path, "w") as f:
        json.dump(record, f, indent=1)
    return record


def write_outputs(output: str, records: List[dict], workdir: str, budget: float,
                  command: str) -> None:
    """``output`` (JSON), ``.md`` (table) and ``.png`` (samples) of the records."""
    payload = {"command": command, "budget_s": budget, "dataset": "mnist_8k", "D": 784,
               "runs": records}
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    with open(output, "w") as f:
        json.dump(payload, f, indent=1)
    stem = os.path.splitext(output)[0]
    lines = [f"Equal optimiser wall time ({budget:g} s each) on `mnist_8k`, D = 784; "
             f"`{command}`", "",
             "| model | parameters | s/step | steps | run wall (s) | test bits/dim (mean) | "
             "test median | test digits > 8 bits/dim (max) | best val bits/dim | "
             "sampling ms/image (T=1) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        sample = f"{1e3 * r['sample_s_per_image']:.2f}"
        if "sample_s_per_image_jacobi" in r:
            sample += (f" scan / {1e3 * r['sample_s_per_image_jacobi']:.2f} Jacobi "
                       f"(max diff {r['jacobi_max_abs_diff']:.1e})")
        wall = f"{r['run_wall_s']:.0f}" if "run_wall_s" in r else "-"
        lines.append(f"| {r['model']} | {r['params']:,} | {r['seconds_per_step']:.3f} | "
                     f"{r['steps']} | {wall} | {r['test_bpd']:.3f} | "
                     f"{r['test_bpd_median']:.3f} | {r['test_images_over_8_bpd']} "
                     f"({r['test_bpd_max']:.1f}) | {r['best_val_bpd']:.3f} | {sample} |")
    with open(stem + ".md", "w") as f:
        f.write("\n".join(lines) + "\n")
    _samples_figure(stem + ".png", records, workdir)


def _samples_figure(path: str, records: List[dict], workdir: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.image as mpimg
    import matplotlib.pyplot as plt
    temps = ("0.7", "1")
    fig, axes = plt.subplots(len(records), len(temps), squeeze=False,
                             figsize=(3.2 * len(temps), 3.3 * len(records)))
    for i, r in enumerate(records):
        for j, t in enumerate(temps):
            ax = axes[i][j]
            png = os.path.join(workdir, r["model"], f"samples_T{t}.png")
            if os.path.exists(png):
                ax.imshow(mpimg.imread(png), cmap="gray")
            ax.set_title(f"{r['model']}  T={t}  (test bpd mean {r['test_bpd']:.2f}, median "
                         f"{r['test_bpd_median']:.2f})", fontsize=8)
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", required=True)
    p.add_argument("--output", required=True, help="JSON path (.md and .png beside it)")
    p.add_argument("--budget", type=float, default=480.0,
                   help="optimiser wall seconds per model")
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--pilot_steps", type=int, default=10)
    p.add_argument("--sample_batch", type=int, default=16)
    args = p.parse_args(argv)
    names = [m for m in args.models.split(",") if m]
    unknown = [m for m in names if m not in MODELS]
    if unknown or not names:
        p.error(f"--models: unknown {unknown}; expected a comma-separated subset of "
                f"{sorted(MODELS)}")
    if not (math.isfinite(args.budget) and args.budget > 0):
        p.error(f"--budget must be a positive number of seconds, got {args.budget}")
    if args.pilot_steps < 1 or args.sample_batch < 1:
        p.error("--pilot_steps and --sample_batch must be >= 1")
    args.models = names
    return args


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    from jaxflows.perf import configure_cpu
    configure_cpu()
    command = "python experiments/equal_time.py " + " ".join(argv)
    records = []
    try:
        for name in args.models:
            records.append(run_model(name, args.workdir, args.budget, args.pilot_steps,
                                     args.sample_batch))
            write_outputs(args.output, records, args.workdir, args.budget, command)
    except ValueError as e:          # a bad config or work directory: one line, exit 2
        print(f"error: {e}", file=sys.stderr)
        return 2
    with open(os.path.splitext(args.output)[0] + ".md") as f:
        print(f.read())
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A PNG strip of linear and optimised interpolations of a trained mAR-SCF run.

    python experiments/interpolate.py --workdir=runs/mar_scf_mnist_small \
        [--num_pairs=4] [--num_points=8] [--lambda1=0.3] [--lambda2=0.3] \
        [--num_steps=100] [--learning_rate=0.05] [--split=test] [--seed=0] \
        [--which=best|last] [--use_ema=true] [--out=interpolation.png]

Restores the run's checkpoint (best on validation by default, as ``evaluate.py`` and
``sample.py``; EMA parameters unless ``--use_ema=false``), picks ``--num_pairs`` random
pairs of images of ``--split`` (default: the run's test split; the pair indices follow
from ``--seed``) and writes one image: for every pair, a row of the linear interpolation
in the mAR latent space and below it the row of mAR-SCF's optimised interpolation
(``jaxflows.interpolation.optimized_latent_interpolation``: Adamax on
``-log p_mAR(l) + lambda1 (1-t) ||l - l_A||^2 + lambda2 t ||l - l_B||^2``, our reading of
the paper's Eq. 11). The ends of both rows are the two test images (pixel values at the
centres of their bins). A JSON file next to the PNG records the pairs, the settings, the
objective before and after the optimisation and the mean ``log p_mAR`` (nats) of the
interior points of both paths.

Trains nothing. Exit code 2 with one ``error:`` line on bad input (``--debug`` adds the
traceback): no run in ``--workdir``, a run whose model is not ``mar_scf``, bad settings.
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

# Before JAX's first computation (see experiments/sample.py).
configure_cpu()

FLAGS = flags.FlagValues()
flags.DEFINE_string("workdir", None, "Work directory of an mAR-SCF training run.",
                    flag_values=FLAGS)
flags.DEFINE_integer("num_pairs", 4, "Number of image pairs (two rows each).", flag_values=FLAGS)
flags.DEFINE_integer("num_points", 8, "Images per row, both ends included (>= 3).",
                     flag_values=FLAGS)
flags.DEFINE_float("lambda1", 0.3, "Weight of the distance to the first image's latent "
                   "(the paper: 0.2 to 0.5).", flag_values=FLAGS)
flags.DEFINE_float("lambda2", None, "Weight of the distance to the second image's latent "
                   "(default: --lambda1).", flag_values=FLAGS)
flags.DEFINE_integer("num_steps", 100, "Adamax iterations (the paper: about 100).",
                     flag_values=FLAGS)
flags.DEFINE_float("learning_rate", 5e-2, "Adamax learning rate (the paper: 5e-2).",
                   flag_values=FLAGS)
flags.DEFINE_string("split", None, "Split to take the pairs from (default: the run's test "
                    "split).", flag_values=FLAGS)
flags.DEFINE_integer("seed", 0, "Seed of the choice of pairs.", flag_values=FLAGS)
flags.DEFINE_enum("which", "best", ["best", "last"], "Which checkpoint to use.",
                  flag_values=FLAGS)
flags.DEFINE_bool("use_ema", True, "Use the EMA parameters.", flag_values=FLAGS)
flags.DEFINE_string("out", None, "Output PNG (default: WORKDIR/interpolation.png).",
                    flag_values=FLAGS)
flags.DEFINE_bool("debug", False, "Show the traceback of an error.", flag_values=FLAGS)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Write the interpolation strip of a run's checkpoint; returns the exit code."""
    return cli.run(_interpolate, argv, FLAGS, module=__name__, doc=__doc__,
                   required=("workdir",))


def _check_flags() -> None:
    if FLAGS.num_pairs < 1:
        raise cli.RefusalError(f"--num_pairs must be >= 1, got {FLAGS.num_pairs}.")
    if FLAGS.num_points < 3:
        raise cli.RefusalError(f"--num_points must be >= 3 (two ends and at least one "
                               f"interpolant), got {FLAGS.num_points}.")
    lam2 = FLAGS.lambda1 if FLAGS.lambda2 is None else FLAGS.lambda2
    for name, v in (("--lambda1", FLAGS.lambda1), ("--lambda2", lam2)):
        if not (math.isfinite(v) and v >= 0):
            raise cli.RefusalError(f"{name} must be a finite number >= 0, got {v}.")
    if FLAGS.num_steps < 0:
        raise cli.RefusalError(f"--num_steps must be >= 0, got {FLAGS.num_steps}.")
    if not (math.isfinite(FLAGS.learning_rate) and FLAGS.learning_rate > 0):
        raise cli.RefusalError(f"--learning_rate must be a finite number > 0, got "
                               f"{FLAGS.learning_rate}.")


def _interpolate() -> int:
    _check_flags()
    # After configure_cpu(): these import jax.
    import jax
    import jax.numpy as jnp
    import numpy as np

    from jaxflows.interpolation import optimized_latent_interpolation
    from jaxflows.train import (
        abstract_state,
        evaluation_variables,
        get_split_source,
        load_run_config,
        prepare_run,
        restore_for_eval,
    )
    from jaxflows.train.plots import image_grid, to_pixels
    from jaxflows.train.step import make_context

    config = load_run_config(FLAGS.workdir)
    name = config.model.name
    if name != "mar_scf":
        raise cli.RefusalError(f"the run in {FLAGS.workdir} trained model {name!r}; the "
                               "interpolation in the mAR latent space needs an mAR-SCF run "
                               "(config.model.name = 'mar_scf').")
    config.eval_use_ema = bool(FLAGS.use_ema)
    run = prepare_run(config, FLAGS.workdir)
    dataset = run.settings.dataset
    split = FLAGS.split or dataset.test_split
    if not split:
        raise cli.RefusalError("the run has no test split (config.dataset.test_split is "
                               "empty): pass --split.")
    source = get_split_source(dataset, split)
    if len(source) < 2:
        raise cli.RefusalError(f"split {split!r} has {len(source)} images; pairs need >= 2.")
    which = "best" if FLAGS.which == "best" else "checkpoints"
    state, _, step = restore_for_eval(FLAGS.workdir, abstract_state(run), which)
    variables = evaluation_variables(run, state, FLAGS.use_ema)
    variables = jax.device_get(variables)

    rng = np.random.default_rng(FLAGS.seed)
    pairs = [tuple(int(i) for i in rng.choice(len(source), 2, replace=False))
             for _ in range(FLAGS.num_pairs)]
    recs = [[source[i] for i in pair] for pair in pairs]
    images = np.stack([[np.asarray(r["image"]) for r in pair] for pair in recs])  # [P,2,H,W,C]
    labels = None
    if all("label" in r for pair in recs for r in pair):
        labels = np.stack([[np.asarray(r["label"]) for r in pair] for pair in recs])
    x = images.astype(np.float32) + 0.5                 # bin centres
    context_fn = make_context(dataset.context)
    ctx_a = context_fn(jnp.asarray(images[:, 0]), None if labels is None
                       else jnp.asarray(labels[:, 0]))
    ctx_b = context_fn(jnp.asarray(images[:, 1]), None if labels is None
                       else jnp.asarray(labels[:, 1]))
    if ctx_a is not None and not bool(jnp.all(ctx_a == ctx_b)):
        # One context per path: a conditional run interpolates within the first image's
        # condition (the second image is encoded under it too).
        print("note: conditional run; both ends are encoded with the first image's context")
    flow, n = run.flow, FLAGS.num_points
    lam2 = FLAGS.lambda1 if FLAGS.lambda2 is None else FLAGS.lambda2

    # One compiled function: the optimiser also returns its start, the linear path.
    opt, info = optimized_latent_interpolation(
        flow, variables, x[:, 0], x[:, 1], n, lambda1=FLAGS.lambda1, lambda2=lam2,
        num_steps=FLAGS.num_steps, learning_rate=FLAGS.learning_rate, context=ctx_a,
        return_info=True)
    lin = info["linear"]
    lp_lin = np.asarray(info["linear_log_prior"])
    lp_opt = np.asarray(info["log_prior"])
    obj = np.asarray(info["objective"])

    num_bins = run.info.num_bins
    rows = np.stack([np.asarray(lin), np.asarray(opt)], axis=1)          # [P, 2, n, H, W, C]
    pixels = to_pixels(rows.reshape((-1,) + rows.shape[3:]), num_bins)
    grid = image_grid(pixels, ncols=n)
    out = FLAGS.out or os.path.join(FLAGS.workdir, "interpolation.png")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    _save_png(out, grid)
    summary = {
        "workdir": FLAGS.workdir, "checkpoint_step": step, "split": split,
        "pairs": pairs, "num_points": n, "lambda1": FLAGS.lambda1, "lambda2": lam2,
        "num_steps": FLAGS.num_steps, "learning_rate": FLAGS.learning_rate,
        "objective_start": obj[0].tolist(), "objective_end": obj[-1].tolist(),
        "mean_interior_log_prior_linear": float(lp_lin[:, 1:-1].mean()),
        "mean_interior_log_prior_optimized": float(lp_opt[:, 1:-1].mean()),
        "rows": "per pair: linear (top), optimised (bottom)",
    }
    with open(os.path.splitext(out)[0] + ".json", "w") as f:
        json.dump(summary, f, indent=1)
    print(json.dumps(summary))
    print(f"wrote {out} ({FLAGS.num_pairs} pairs x {n} points; rows: linear, optimised; "
          f"checkpoint step {step}); mean interior log p_mAR: linear "
          f"{summary['mean_interior_log_prior_linear']:.1f}, optimised "
          f"{summary['mean_interior_log_prior_optimized']:.1f} nats")
    return 0


def _save_png(path: str, grid) -> None:
    """Save a uint8 grid ``[H, W, C]``, upscaled to about 512 pixels on its long side."""
    from PIL import Image
    up = max(1, 512 // max(grid.shape[:2]))
    if up > 1:
        grid = grid.repeat(up, 0).repeat(up, 1)
    img = Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid[..., :3])
    tmp = path + ".tmp.png"
    img.save(tmp)
    os.replace(tmp, path)


if __name__ == "__main__":
    sys.exit(main())

r"""TarFlow samples with classifier-free guidance and the one-step denoiser, before and after.

    python experiments/tarflow_samples.py --workdir=runs/tarflow_small \
        [--guidance=0,2] [--temperature=1.0] [--per_class=4] [--out=tarflow_samples.png]

For a run of a class-conditional TarFlow trained with Gaussian noise augmentation
(``config.model.noise_std > 0``, e.g. ``experiments/configs/tarflow_mnist.py:small``):
draws ``--per_class`` samples of every class at temperature ``--temperature`` for each
guidance weight ``w`` of ``--guidance`` (``0``: no guidance; TarFlow Sec. 3.4:
``p_c + w (p_c - p_u)``), and denoises each with one score step
``x + sigma^2 grad log p(x)`` (TarFlow Sec. 3.3; ``sigma`` the training noise in pixel
units, :func:`jaxflows.models.transformer_flows.noise_std_in_pixels`), with
:func:`jaxflows.models.transformer_flows.generate`. All draws use the same latent noise,
so the rows of one column differ only by guidance and denoising.

Writes a PNG (default ``WORKDIR/tarflow_samples.png``): for each ``w`` a block of two row
groups, raw samples then denoised, one column per class; and a JSON beside it with the
settings and, per ``w``, the mean model bits/dim of the raw and of the denoised samples
(``-log2 p(x | y) / D`` of the unguided model; denoising is a step up the model's density,
so it should fall) and the mean absolute change per pixel. EMA parameters of the best
checkpoint. Exit code 2 with one ``error:`` line on bad input (a run that is not a
class-conditional TarFlow trained with noise, a negative guidance weight, a non-positive
temperature); ``--debug`` adds the traceback.
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
flags.DEFINE_string("workdir", None, "Work directory of a TarFlow training run.",
                    flag_values=FLAGS)
flags.DEFINE_list("guidance", ["0", "2"], "Guidance weights w >= 0 (0: none).",
                  flag_values=FLAGS)
flags.DEFINE_float("temperature", 1.0, "Sampling temperature T > 0.", flag_values=FLAGS)
flags.DEFINE_integer("per_class", 4, "Samples per class (rows of each block).",
                     flag_values=FLAGS)
flags.DEFINE_string("out", None, "Output PNG (default: WORKDIR/tarflow_samples.png).",
                    flag_values=FLAGS)
flags.DEFINE_integer("seed", 0, "Sampling seed.", flag_values=FLAGS)
flags.DEFINE_bool("debug", False, "Show the traceback of an error.", flag_values=FLAGS)


def main(argv: Optional[Sequence[str]] = None) -> int:
    return cli.run(_samples, argv, FLAGS, module=__name__, doc=__doc__, required=("workdir",))


def _weights() -> list:
    try:
        weights = [float(w) for w in FLAGS.guidance]
    except ValueError:
        raise cli.RefusalError(f"--guidance must be numbers >= 0, got "
                               f"{','.join(FLAGS.guidance)}.") from None
    if not weights or any(not (math.isfinite(w) and w >= 0) for w in weights):
        raise cli.RefusalError(f"--guidance must be numbers >= 0, got "
                               f"{','.join(FLAGS.guidance)}.")
    return weights


def _samples() -> int:
    weights = _weights()
    if not (math.isfinite(FLAGS.temperature) and FLAGS.temperature > 0):
        raise cli.RefusalError(f"--temperature must be a finite number > 0, got "
                               f"{FLAGS.temperature}.")
    if FLAGS.per_class < 1:
        raise cli.RefusalError(f"--per_class must be >= 1, got {FLAGS.per_class}.")
    import jax
    import jax.numpy as jnp
    import numpy as np

    from jaxflows.models.transformer_flows import generate, noise_std_in_pixels
    from jaxflows.train import (
        abstract_state,
        evaluation_variables,
        load_run_config,
        prepare_run,
        restore_for_eval,
    )
    from jaxflows.train.plots import save_image_grid
    config = load_run_config(FLAGS.workdir)
    model = config.model
    if model.get("name") != "tarflow" or not model.get("num_classes"):
        raise cli.RefusalError(f"{FLAGS.workdir} is not a run of a class-conditional TarFlow "
                               f"(config.model.name={model.get('name')!r}, num_classes="
                               f"{model.get('num_classes')!r}).")
    if not model.get("noise_std"):
        raise cli.RefusalError(f"{FLAGS.workdir}: the model was trained without noise "
                               f"(config.model.noise_std={model.get('noise_std')!r}), so "
                               f"there is nothing for the denoiser to remove.")
    run = prepare_run(config, FLAGS.workdir)
    state, _, step = restore_for_eval(FLAGS.workdir, abstract_state(run), "best")
    variables = evaluation_variables(run, state, True)
    flow, bins = run.flow, float(run.info.num_bins)
    classes = int(model.num_classes)
    sigma = noise_std_in_pixels(float(model.noise_std), bins)
    labels = jnp.tile(jnp.arange(classes), FLAGS.per_class)     # row r, column c: class c
    key = jax.random.PRNGKey(FLAGS.seed)
    bits = jax.jit(lambda v, x, y: -flow.apply(v, x, context=y)
                   / (run.num_dims * jnp.log(2.0)))

    blocks, report = [], {}
    for w in weights:
        raw, clean = generate(flow, variables, key, labels.shape[0], context=labels,
                              temperature=FLAGS.temperature, guidance=w or None,
                              denoise_sigma=sigma, num_bins=bins)
        raw_px = np.clip(np.asarray(raw), 0, bins - 1)
        clean_px = np.asarray(clean)
        report[f"w={w:g}"] = {
            "model_bpd_raw": float(np.mean(bits(variables, jnp.asarray(raw_px), labels))),
            "model_bpd_denoised": float(np.mean(bits(variables, jnp.asarray(clean_px),
                                                     labels))),
            "mean_abs_change_pixels": float(np.mean(np.abs(clean_px - raw_px)))}
        blocks += [raw_px, clean_px]
    out = FLAGS.out or os.path.join(FLAGS.workdir, "tarflow_samples.png")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    grid = np.concatenate(blocks)
    save_image_grid(out, np.round(grid * 255.0 / (bins - 1)).astype(np.uint8), ncols=classes)
    meta = {"png": out, "checkpoint_step": int(step), "temperature": FLAGS.temperature,
            "per_class": FLAGS.per_class, "denoise_sigma_pixels": sigma,
            "rows": "per guidance weight: per_class rows raw, then per_class rows denoised; "
                    "column c is class c", **report}
    with open(os.path.splitext(out)[0] + ".json", "w") as f:
        json.dump(meta, f, indent=1)
    print(json.dumps(meta, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

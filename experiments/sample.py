"""A PNG grid of samples at temperature T from a trained checkpoint.

    python experiments/sample.py --workdir=runs/glow_digits --temperature=0.7 \
        [--num_samples=64] [--out=samples.png] [--which=best|last] [--seed=0]

Samples ``z ~ N(0, T^2 I)`` and maps them through the inverse of the flow (EMA
parameters unless ``--use_ema=false``). Models whose inverse is a fixed-point
iteration (residual flows) report non-convergence; any such report is logged.
"""
from __future__ import annotations

import logging
import os
import sys

from absl import app, flags
from absl import logging as absl_logging

from jaxflows.perf import configure_cpu

# Before JAX's first computation: glibc allocator + AVX-512 vector width on CPU hosts
# (jaxflows.perf; JAXFLOWS_NO_CPU_TUNING=1 disables it).
configure_cpu()

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Work directory of a training run.")
flags.DEFINE_float("temperature", 0.7, "Sampling temperature T > 0.")
flags.DEFINE_integer("num_samples", 64, "Number of images in the grid.")
flags.DEFINE_string("out", None, "Output PNG (default: WORKDIR/samples_T{T}_cli.png).")
flags.DEFINE_enum("which", "best", ["best", "last"], "Which checkpoint to sample from.")
flags.DEFINE_bool("use_ema", True, "Sample with the EMA parameters.")
flags.DEFINE_integer("seed", 0, "Sampling seed.")
flags.mark_flags_as_required(["workdir"])


def main(argv):
    """Write a sample grid of a run's checkpoint (exit code 2 on bad input)."""
    del argv
    absl_logging.set_verbosity(absl_logging.WARNING)
    logging.getLogger("jaxflows.train").setLevel(logging.INFO)
    if FLAGS.temperature <= 0:
        print(f"error: --temperature must be > 0, got {FLAGS.temperature}", file=sys.stderr)
        sys.exit(2)
    if FLAGS.num_samples < 1:
        print(f"error: --num_samples must be >= 1, got {FLAGS.num_samples}", file=sys.stderr)
        sys.exit(2)
    # After configure_cpu(): jaxflows.train imports jax.
    from jaxflows.train import (
        abstract_state,
        load_run_config,
        prepare_run,
        restore_for_eval,
        save_samples,
    )
    try:
        config = load_run_config(FLAGS.workdir)
        config.num_samples = FLAGS.num_samples
        config.eval_use_ema = bool(FLAGS.use_ema)
        run = prepare_run(config, FLAGS.workdir)
        which = "best" if FLAGS.which == "best" else "checkpoints"
        state, _, step = restore_for_eval(FLAGS.workdir, abstract_state(run), which)
    except (ValueError, FileNotFoundError) as e:   # bad input, data not prepared, no run
        print(f"error: {e}", file=sys.stderr, flush=True)
        sys.exit(2)
    out = FLAGS.out or os.path.join(FLAGS.workdir, f"samples_T{FLAGS.temperature:g}_cli.png")
    save_samples(run, state, os.path.dirname(os.path.abspath(out)), [FLAGS.temperature],
                 use_ema=FLAGS.use_ema, seed_offset=FLAGS.seed + 1,
                 filename=os.path.basename(out))
    print(f"wrote {out} ({FLAGS.num_samples} samples at T={FLAGS.temperature:g}, "
          f"checkpoint step {step})")


if __name__ == "__main__":
    app.run(main)

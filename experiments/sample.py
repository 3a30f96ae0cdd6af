"""A PNG grid of samples at temperature T from a trained checkpoint.

    python experiments/sample.py --workdir=runs/glow_digits --temperature=0.7 \
        [--num_samples=64] [--out=samples.png] [--which=best|last] [--seed=0]

Samples ``z ~ N(0, T^2 I)`` and maps them through the inverse of the flow (EMA
parameters unless ``--use_ema=false``). Models whose inverse is a fixed-point
iteration (residual flows) report non-convergence; any such report is logged.
"""
from __future__ import annotations

import os
import sys

from absl import app, flags
from absl import logging as absl_logging

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from jaxflows.perf import configure_cpu  # noqa: E402  (after the path set-up)

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
    del argv
    absl_logging.set_verbosity(absl_logging.WARNING)
    import logging  # pylint: disable=import-outside-toplevel
    logging.getLogger("jaxflows.train").setLevel(logging.INFO)
    if FLAGS.temperature <= 0:
        print(f"error: --temperature must be > 0, got {FLAGS.temperature}", file=sys.stderr)
        sys.exit(2)
    if FLAGS.num_samples < 1:
        print(f"error: --num_samples must be >= 1, got {FLAGS.num_samples}", file=sys.stderr)
        sys.exit(2)
    from jaxflows.train import (abstract_state, load_run_config,  # pylint: disable=import-outside-toplevel
                                prepare_run, restore_for_eval, save_samples)
    config = load_run_config(FLAGS.workdir)
    config.num_samples = FLAGS.num_samples
    config.eval_use_ema = bool(FLAGS.use_ema)
    try:
        run = prepare_run(config, FLAGS.workdir)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    which = "best" if FLAGS.which == "best" else "checkpoints"
    state, _, step = restore_for_eval(FLAGS.workdir, abstract_state(run), which)
    out = FLAGS.out or os.path.join(FLAGS.workdir, f"samples_T{FLAGS.temperature:g}_cli.png")
    save_samples(run, state, os.path.dirname(os.path.abspath(out)), [FLAGS.temperature],
                 use_ema=FLAGS.use_ema, seed_offset=FLAGS.seed + 1,
                 filename=os.path.basename(out))
    print(f"wrote {out} ({FLAGS.num_samples} samples at T={FLAGS.temperature:g}, "
          f"checkpoint step {step})")


if __name__ == "__main__":
    app.run(main)

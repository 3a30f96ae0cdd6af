"""A PNG grid of samples at temperature T from a trained checkpoint.

    python experiments/sample.py --workdir=runs/glow_digits --temperature=0.7 \
        [--num_samples=64] [--out=samples.png] [--which=best|last] [--seed=0]

Samples ``z ~ N(0, T^2 I)`` and maps them through the inverse of the flow (EMA
parameters unless ``--use_ema=false``). Models whose inverse is a fixed-point
iteration (residual flows) report non-convergence: a warning names how many solves
did not converge (raise the run's ``config.model.solver`` cap). The checkpoint is
verified (SHA-256 manifest); a damaged one is reported and the next older intact one
used. Exit code 2 with one ``error:`` line on bad input (``--debug`` adds the
traceback).
"""
from __future__ import annotations

import math
import os
import sys
from typing import Optional, Sequence

from absl import flags

from experiments import cli
from jaxflows.perf import configure_cpu

# Before JAX's first computation: glibc allocator + AVX-512 vector width on CPU hosts
# (jaxflows.perf; JAXFLOWS_NO_CPU_TUNING=1 disables it).
configure_cpu()

# This launcher's own flags; define new ones with flag_values=FLAGS.
FLAGS = flags.FlagValues()
flags.DEFINE_string("workdir", None, "Work directory of a training run.", flag_values=FLAGS)
flags.DEFINE_float("temperature", 0.7, "Sampling temperature T > 0.", flag_values=FLAGS)
flags.DEFINE_integer("num_samples", 64, "Number of images in the grid.", flag_values=FLAGS)
flags.DEFINE_string("out", None, "Output PNG (default: WORKDIR/samples_T{T}_cli.png).",
                    flag_values=FLAGS)
flags.DEFINE_enum("which", "best", ["best", "last"], "Which checkpoint to sample from.",
                  flag_values=FLAGS)
flags.DEFINE_bool("use_ema", True, "Sample with the EMA parameters.", flag_values=FLAGS)
flags.DEFINE_integer("seed", 0, "Sampling seed.", flag_values=FLAGS)
flags.DEFINE_bool("debug", False, "Show the traceback of an error.", flag_values=FLAGS)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Write a sample grid of a run's checkpoint; returns the exit code (2: bad input)."""
    return cli.run(_sample, argv, FLAGS, module=__name__, doc=__doc__, required=("workdir",))


def _sample() -> int:
    if not (math.isfinite(FLAGS.temperature) and FLAGS.temperature > 0):
        raise cli.RefusalError(f"--temperature must be a finite number > 0, got "
                               f"{FLAGS.temperature}.")
    if FLAGS.num_samples < 1:
        raise cli.RefusalError(f"--num_samples must be >= 1, got {FLAGS.num_samples}.")
    # After configure_cpu(): jaxflows.train imports jax.
    from jaxflows.train import (
        abstract_state,
        load_run_config,
        prepare_run,
        restore_for_eval,
        save_samples,
    )
    config = load_run_config(FLAGS.workdir)
    config.num_samples = FLAGS.num_samples
    config.eval_use_ema = bool(FLAGS.use_ema)
    run = prepare_run(config, FLAGS.workdir)
    which = "best" if FLAGS.which == "best" else "checkpoints"
    state, _, step = restore_for_eval(FLAGS.workdir, abstract_state(run), which)
    out = FLAGS.out or os.path.join(FLAGS.workdir, f"samples_T{FLAGS.temperature:g}_cli.png")
    paths = save_samples(run, state, os.path.dirname(os.path.abspath(out)),
                         [FLAGS.temperature], use_ema=FLAGS.use_ema,
                         seed_offset=FLAGS.seed + 1, filename=os.path.basename(out))
    written = list(paths.values())[0] if paths else out   # vector runs write .npy
    print(f"wrote {written} ({FLAGS.num_samples} samples at T={FLAGS.temperature:g}, "
          f"checkpoint step {step})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

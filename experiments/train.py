"""Train a flow: ``python experiments/train.py --config=CONFIG.py[:small] --workdir=DIR``.

Overrides on the command line, as in the Flax examples::

    python experiments/train.py --config=experiments/configs/glow_digits.py \
        --workdir=runs/glow_digits --config.batch_size=32 --config.model.dropout=0.2

Rerunning the same command after an interruption (SIGTERM, a crash, kill -9) resumes
from the latest checkpoint in ``--workdir`` and yields the same parameters and
metrics as an uninterrupted run. On several hosts, pass ``--distributed`` (or set
``JAX_COORDINATOR_ADDRESS`` etc.) so that ``jax.distributed.initialize()`` runs first.
"""
from __future__ import annotations

import json
import logging
import sys

from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

from jaxflows.perf import configure_cpu

# Before JAX's first computation: glibc allocator + AVX-512 vector width on CPU hosts
# (jaxflows.perf; JAXFLOWS_NO_CPU_TUNING=1 disables it).
configure_cpu()

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Training configuration file (path[:arg]).",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics, samples, curves.")
flags.DEFINE_bool("distributed", False,
                  "Call jax.distributed.initialize() first (multi-host GPU/TPU).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    """Train and evaluate ``--config`` in ``--workdir``.

    Exit code 2 with an ``error:`` line on bad input, 143 when interrupted (SIGTERM).
    """
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    # After configure_cpu(): jaxflows.train imports jax.
    import jax

    from jaxflows.train import train_and_evaluate
    if FLAGS.distributed:
        jax.distributed.initialize()
    absl_logging.set_verbosity(absl_logging.WARNING)   # orbax is chatty at INFO
    logging.getLogger("jaxflows.train").setLevel(logging.INFO)
    print(f"devices: {jax.device_count()} x {jax.devices()[0].platform} on "
          f"{jax.process_count()} process(es)", flush=True)
    try:
        results = train_and_evaluate(FLAGS.config, FLAGS.workdir)
    except (ValueError, FileNotFoundError) as e:   # bad input / data not prepared: a clear message
        print(f"error: {e}", file=sys.stderr, flush=True)
        sys.exit(2)
    if results.get("interrupted"):
        print(f"interrupted at step {results['step']}; checkpoint saved. Rerun the same "
              "command to resume.", flush=True)
        sys.exit(143)
    summary = {k: v for k, v in results.items() if k != "samples"}
    print("results: " + json.dumps(summary, sort_keys=True), flush=True)
    if "test_bpd" in results:
        print(f"test bits/dim: {results['test_bpd']:.4f} (best step {results['best_step']}, "
              f"EMA={results['use_ema']}); outputs in {FLAGS.workdir}", flush=True)


if __name__ == "__main__":
    app.run(main)

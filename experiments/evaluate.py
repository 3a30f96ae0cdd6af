"""Test bits/dim of a trained checkpoint.

    python experiments/evaluate.py --workdir=runs/glow_digits [--which=best|last]
        [--split=test] [--use_ema=true]

Reads the run's ``config.json`` from ``--workdir``, restores the best-on-validation
checkpoint (``--which=best``, default) or the latest one, and prints the mean
bits/dim over the whole split (uniform dequantisation noise from a fixed key), with
the EMA parameters unless ``--use_ema=false``.
"""
from __future__ import annotations

import json
import sys

from absl import app, flags
from absl import logging as absl_logging

from jaxflows.perf import configure_cpu

# Before JAX's first computation: glibc allocator + AVX-512 vector width on CPU hosts
# (jaxflows.perf; JAXFLOWS_NO_CPU_TUNING=1 disables it).
configure_cpu()

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Work directory of a training run.")
flags.DEFINE_enum("which", "best", ["best", "last"], "Which checkpoint to evaluate.")
flags.DEFINE_string("split", None, "Split to evaluate (default: the config's test split).")
flags.DEFINE_bool("use_ema", True, "Evaluate the EMA parameters (if the run kept an EMA).")
flags.DEFINE_integer("eval_batch_size", None, "Override the global evaluation batch size.")
flags.mark_flags_as_required(["workdir"])


def main(argv):
    """Print the bits/dim of a run's checkpoint on a split (exit code 2 on bad input)."""
    del argv
    absl_logging.set_verbosity(absl_logging.WARNING)
    # After configure_cpu(): jaxflows.train and jaxflows.data import jax and TFDS.
    import jax

    from jaxflows.train import (
        abstract_state,
        evaluate_split,
        get_split_source,
        load_run_config,
        prepare_run,
        restore_for_eval,
    )
    try:
        config = load_run_config(FLAGS.workdir)
        config.eval_use_ema = bool(FLAGS.use_ema)
        if FLAGS.eval_batch_size:
            config.eval_batch_size = FLAGS.eval_batch_size
        run = prepare_run(config, FLAGS.workdir)
        dataset = run.settings.dataset
        split = FLAGS.split or dataset.test_split
        if not split:
            raise ValueError("the run has no test split (config.dataset.test_split is "
                             "empty): pass --split.")
        source = get_split_source(dataset, split)   # padded like the training data
        which = "best" if FLAGS.which == "best" else "checkpoints"
        state, meta, step = restore_for_eval(FLAGS.workdir, abstract_state(run), which)
    except (ValueError, FileNotFoundError) as e:   # bad input, data not prepared, no run
        print(f"error: {e}", file=sys.stderr, flush=True)
        sys.exit(2)
    bpd = evaluate_split(run, state, source, 2 if split == dataset.test_split else 3)
    out = {"workdir": FLAGS.workdir, "checkpoint_step": step, "split": split,
           "num_examples": len(source), "bits_per_dim": bpd,
           "use_ema": run.settings.use_ema,
           "best_val_bpd": meta.get("best_val")}
    if jax.process_index() == 0:
        print(json.dumps(out, sort_keys=True))
        print(f"{split} bits/dim: {bpd:.4f} (step {step}, {len(source)} examples)")


if __name__ == "__main__":
    app.run(main)

"""Test bits/dim (images) or log-likelihood (vector data) of a trained checkpoint.

    python experiments/evaluate.py --workdir=runs/glow_digits [--which=best|last]
        [--split=test] [--use_ema=true]

Reads the run's ``config.json`` from ``--workdir``, restores the best-on-validation
checkpoint (``--which=best``, default) or the latest one, and prints the mean
bits/dim over the whole split (uniform dequantisation noise from a fixed key), with
the EMA parameters unless ``--use_ema=false``. For a run on vector (tabular) data it
prints the mean negative log-likelihood in nats per dimension and the log-likelihood in
nats per example instead. ``--iw_samples=S`` also reports, side by
side, the single-sample and the importance-weighted bound over ``S`` dequantisation
samples per image (Flow++'s evaluation uses ``S`` = 4,096; memory stays flat in ``S``).

The checkpoint is verified (SHA-256 manifest, finite values); a damaged one is reported
(step and file) and the next older intact one used. Exit codes (``experiments/cli.py``):
0 done, 1 the figure is not finite, 2 refused (one ``error:`` line; ``--debug`` adds
the traceback), e.g. no run in ``--workdir``, data with NaN values.
"""
from __future__ import annotations

import json
import math
import sys
from typing import Optional, Sequence

from absl import flags

from experiments import cli
from jaxflows.perf import configure_cpu

# Before JAX's first computation: glibc allocator + AVX-512 vector width on CPU hosts
# (jaxflows.perf; JAXFLOWS_NO_CPU_TUNING=1 disables it).
configure_cpu()

# This launcher's own flags; define new ones with flag_values=FLAGS (a plain
# flags.DEFINE_* in this module is picked up too, see experiments/cli.py).
FLAGS = flags.FlagValues()
flags.DEFINE_string("workdir", None, "Work directory of a training run.", flag_values=FLAGS)
flags.DEFINE_enum("which", "best", ["best", "last"], "Which checkpoint to evaluate.",
                  flag_values=FLAGS)
flags.DEFINE_string("split", None, "Split to evaluate (default: the config's test split).",
                    flag_values=FLAGS)
flags.DEFINE_bool("use_ema", True, "Evaluate the EMA parameters (if the run kept an EMA).",
                  flag_values=FLAGS)
flags.DEFINE_integer("eval_batch_size", None, "Override the global evaluation batch size.",
                     flag_values=FLAGS)
flags.DEFINE_bool("debug", False, "Show the traceback of an error.", flag_values=FLAGS)
flags.DEFINE_integer("iw_samples", 0, "Also report the importance-weighted bound with this many "
                     "dequantisation samples per image (Flow++: 4096; 0: off).",
                     flag_values=FLAGS)
flags.DEFINE_integer("iw_chunk", 16, "Samples per step of the importance-weighted bound "
                     "(memory grows with it, not with --iw_samples).", flag_values=FLAGS)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Print the bits/dim of a run's checkpoint on a split; returns the exit code."""
    return cli.run(_evaluate, argv, FLAGS, module=__name__, doc=__doc__,
                   required=("workdir",))


def _evaluate() -> int:
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
    bpd = evaluate_split(run, state, source, 2 if split == dataset.test_split else 3)
    vector = run.score != "bpd"
    out = {"workdir": FLAGS.workdir, "checkpoint_step": step, "split": split,
           "num_examples": len(source), "use_ema": run.settings.use_ema,
           f"best_val_{run.score}": meta.get("best_val")}
    if vector:      # tabular data: nats per dimension and log-likelihood per example
        out.update(nats_per_dim=bpd, log_likelihood=-run.num_dims * bpd)
    else:
        out["bits_per_dim"] = bpd
    if FLAGS.iw_samples and vector:
        raise ValueError("--iw_samples applies to image runs (dequantisation noise); a run "
                         "on vector data has an exact log-likelihood.")
    if FLAGS.iw_samples:
        from jaxflows.train.evaluation import evaluate_split_iw
        chunk = math.gcd(FLAGS.iw_samples, max(FLAGS.iw_chunk, 1))
        single, iw = evaluate_split_iw(run, state, source,
                                       2 if split == dataset.test_split else 3,
                                       FLAGS.iw_samples, chunk=chunk)
        out.update(iw_samples=FLAGS.iw_samples, single_sample_bpd=single, iw_bpd=iw)
    if jax.process_index() == 0:
        print(json.dumps(out, sort_keys=True))
        if vector:
            print(f"{split} log-likelihood: {out['log_likelihood']:.4f} nats per example "
                  f"({bpd:.4f} nats/dim; step {step}, {len(source)} examples)")
        else:
            print(f"{split} bits/dim: {bpd:.4f} (step {step}, {len(source)} examples)")
        if FLAGS.iw_samples:
            print(f"{split} bits/dim over {FLAGS.iw_samples} samples per image: single-sample "
                  f"bound {out['single_sample_bpd']:.4f}, importance-weighted bound "
                  f"{out['iw_bpd']:.4f}")
    if not math.isfinite(bpd):
        raise FloatingPointError(f"the {split} {'nats' if vector else 'bits'}/dim of "
                                 f"checkpoint step {step} is {bpd} (not finite).")
    return 0


if __name__ == "__main__":
    sys.exit(main())

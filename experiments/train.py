"""Train a flow: ``python experiments/train.py --config=CONFIG.py[:small] --workdir=DIR``.

Overrides on the command line, as in the Flax examples::

    python experiments/train.py --config=experiments/configs/glow_digits.py \
        --workdir=runs/glow_digits --config.batch_size=32 --config.model.dropout=0.2

Rerunning the same command after an interruption (SIGTERM, Ctrl-C, a crash, kill -9)
resumes from the latest intact checkpoint in ``--workdir`` and yields the same
parameters and metrics as an uninterrupted run. A first Ctrl-C checkpoints and stops
after the current step; a second one aborts at once. On several hosts, pass
``--distributed`` with ``--coordinator_address=HOST:PORT --num_processes=N
--process_id=I`` (or ``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES``,
``JAX_PROCESS_ID``; on TPU pod slices and under SLURM none is needed) so that
``jaxflows.train.distributed.initialize`` runs first.

Exit codes (``experiments/cli.py``): 0 done, 1 the run failed (diverged, non-finite
final figures), 2 refused (one ``error:`` line naming the flag, key or path; ``--debug``
adds the traceback), 130 Ctrl-C, 143 SIGTERM.
"""
from __future__ import annotations

import json
import sys
from typing import Optional, Sequence

from absl import flags

from experiments import cli
from jaxflows.perf import configure_cpu

# Before JAX's first computation: glibc allocator + AVX-512 vector width on CPU hosts
# (jaxflows.perf; JAXFLOWS_NO_CPU_TUNING=1 disables it).
configure_cpu()

# This launcher's own flags (cli.parse adds --config); define new ones with
# flag_values=FLAGS.
FLAGS = flags.FlagValues()
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics, samples, curves.",
                    flag_values=FLAGS)
flags.DEFINE_bool("distributed", False,
                  "Start jax.distributed first (several hosts: GPU hosts, TPU pod slices); "
                  "see jaxflows.train.distributed.initialize.", flag_values=FLAGS)
flags.DEFINE_string("coordinator_address", None,
                    "With --distributed: host:port of process 0 (default "
                    "$JAX_COORDINATOR_ADDRESS, or detected on TPU pods/SLURM/Open MPI).",
                    flag_values=FLAGS)
flags.DEFINE_integer("num_processes", None,
                     "With --distributed: number of processes (default $JAX_NUM_PROCESSES "
                     "or detected).", flag_values=FLAGS)
flags.DEFINE_integer("process_id", None,
                     "With --distributed: this process's id in [0, num_processes) (default "
                     "$JAX_PROCESS_ID or detected).", flag_values=FLAGS)
flags.DEFINE_bool("debug", False, "Show the traceback of an error.", flag_values=FLAGS)


def _train() -> int:
    # After configure_cpu(): jaxflows.train imports jax.
    import jax

    from jaxflows.train import train_and_evaluate
    if FLAGS.distributed:
        from jaxflows.train import distributed
        try:
            distributed.initialize(FLAGS.coordinator_address, FLAGS.num_processes,
                                   FLAGS.process_id)
        except RuntimeError as e:      # processes that did not all connect: exit code 2
            raise cli.RefusalError(str(e)) from e
    print(f"devices: {jax.device_count()} x {jax.devices()[0].platform} on "
          f"{jax.process_count()} process(es)", flush=True)
    results = train_and_evaluate(FLAGS.config, FLAGS.workdir)
    if results.get("interrupted"):
        how = "Ctrl-C" if results.get("signal") == "SIGINT" else results.get("signal")
        print(f"interrupted ({how}) at step {results['step']}; checkpoint saved. Rerun the "
              "same command to resume.", flush=True)
        return cli.EXIT_SIGINT if results.get("signal") == "SIGINT" else cli.EXIT_SIGTERM
    summary = {k: v for k, v in results.items() if k != "samples"}
    print("results: " + json.dumps(summary, sort_keys=True), flush=True)
    if "test_bpd" in results:
        print(f"test bits/dim: {results['test_bpd']:.4f} (best step {results['best_step']}, "
              f"EMA={results['use_ema']}); outputs in {FLAGS.workdir}", flush=True)
    if "test_log_likelihood" in results:    # vector (tabular) data: nats, not bits/dim
        print(f"test log-likelihood: {results['test_log_likelihood']:.4f} nats per example "
              f"({results['test_nats_per_dim']:.4f} nats/dim; best step "
              f"{results['best_step']}, EMA={results['use_ema']}); outputs in "
              f"{FLAGS.workdir}", flush=True)
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Train and evaluate ``--config`` in ``--workdir``; returns the exit code.

    ``argv`` as ``sys.argv`` (program name first; default ``sys.argv``).
    """
    return cli.run(_train, argv, FLAGS, module=__name__, doc=__doc__, config_file=True,
                   required=("config", "workdir"))


if __name__ == "__main__":
    sys.exit(main())

r"""Attention ablations on the real MNIST digits, with seeds and the attention's use over training.

    python experiments/ablations_mnist.py --workdir=runs/ablations_mnist \
        --output=docs/ablations_mnist.md --seeds=0,1

Issue 18, item 6: AttnFlow's and ACF's ablations on ``mnist_8k`` (8,000 real MNIST
digits shipped in ``jaxflows.data``: 6,480 train / 720 validation / 800 test), each run
trained by the project's trainer (:func:`jaxflows.train.train_and_evaluate`) and
reported as **test bits/dim** of its final EMA parameters (one evaluation, at the end):

* AttnFlow (``attnflow_mnist.py:small_mnist``: digits padded to 32x32, L=2, K=2, 32
  hidden channels, batch 32, Adam 8e-4): **iMap vs iTrans (5 heads) vs none on the
  mAR-SCF and the Glow backbones** at pos-4; **positions 1-4** of iMap on mAR-SCF;
  **iTrans heads 1/3/5/7** on mAR-SCF at pos-4 (tokens of half the level's side, as the
  supplement's pseudo-code).
* ACF (``acf_mnist.py:small_mnist``: 28x28, 2 levels x 2 Residual Flows blocks of hidden
  width 32, 4 heads): **L2 vs LipNorm vs none, between the convolutions and first in
  the branch**.

Whether the attention is *used*. Every ``--trace_every`` steps a hook reads, from the
raw parameters of the run:

* ACF: the learned gains ``gamma`` (max and mean ``|gamma|`` over the residual blocks,
  :func:`jaxflows.models.acf.attention_gains`). The MNIST configs start at ``gamma = 1``
  (half attention, half identity) because from ``gamma = 0`` the digits ablations never
  left 0 (|gamma| < 4e-6; see ``gamma_init`` of :func:`jaxflows.models.acf.acf`).
* AttnFlow: the summed log-det of the attention layers (iMap / iTrans) on 128 fixed
  test digits, in bits/dim: its mean, and its **spread across images** (standard
  deviation). An attention whose weights do not depend on the image (iMap's kernel at 0,
  iTrans' weights uniform) has the same log-det for every image, so the spread measures
  how much the attention acts on the data, not only as a fixed scale.

The traces are stored in each run's ``attention_trace.jsonl`` and plotted in
``--figure``. Every figure in the tables is read from the runs' files, never typed in;
the table is rewritten after every run (partial tables are marked) and finished runs
are skipped when the command is rerun, so several processes with disjoint ``--only``
(or ``--shard=i/n``) may share ``--workdir`` and ``--output``.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import time
from typing import Callable, Dict, List, Optional

import numpy as np

from experiments import cli

ATTNFLOW_ONLY_KEYS = ("attention", "position", "heads", "patch_size", "backbone")
MAR_ONLY_KEYS = ("lstm_features", "lstm_layers", "kernel_sizes", "dilations", "coupling")


def _attnflow(backbone: str, attention: str, position: int = 4, heads: int = 1):
    def modify(c):
        m = c.model
        if attention == "none":
            for k in ATTNFLOW_ONLY_KEYS:
                if k in m:
                    del m[k]
            m.name = "mar_scf" if backbone == "mar_scf" else "glow"
        else:
            m.backbone = backbone
            m.attention = attention
            m.position = position
            m.heads = heads
            if attention == "itrans":
                m.patch_size = "half"
        if backbone == "glow":
            for k in MAR_ONLY_KEYS:
                if k in m:
                    del m[k]
    return modify


def _acf(attention: str, placement: str = "between"):
    def modify(c):
        c.model.attention = attention
        if attention == "none":
            del c.model["gamma_init"]
        else:
            c.model.placement = placement
    return modify


# name -> (group, description, modifier)
RUNS: Dict[str, tuple] = {
    "mar_none": ("attnflow", "mAR-SCF, no attention", _attnflow("mar_scf", "none")),
    "mar_imap_p4": ("attnflow", "mAR-SCF + iMap, pos-4", _attnflow("mar_scf", "imap")),
    "mar_itrans_h5_p4": ("attnflow", "mAR-SCF + iTrans (5 heads), pos-4",
                         _attnflow("mar_scf", "itrans", heads=5)),
    "glow_none": ("attnflow", "Glow, no attention", _attnflow("glow", "none")),
    "glow_imap_p4": ("attnflow", "Glow + iMap, pos-4", _attnflow("glow", "imap")),
    "glow_itrans_h5_p4": ("attnflow", "Glow + iTrans (5 heads), pos-4",
                          _attnflow("glow", "itrans", heads=5)),
    **{f"mar_imap_p{p}": ("attnflow", f"mAR-SCF + iMap, pos-{p}", _attnflow("mar_scf", "imap", p))
       for p in (1, 2, 3)},
    **{f"mar_itrans_h{h}_p4": ("attnflow", f"mAR-SCF + iTrans ({h} head{'s' if h > 1 else ''}), "
                                           f"pos-4", _attnflow("mar_scf", "itrans", heads=h))
       for h in (1, 3, 7)},
    "acf_none": ("acf", "Residual Flow, no attention", _acf("none")),
    "acf_l2_between": ("acf", "ACF L2, between the convolutions", _acf("l2", "between")),
    "acf_lipnorm_between": ("acf", "ACF LipNorm, between the convolutions",
                            _acf("lipnorm", "between")),
    "acf_l2_first": ("acf", "ACF L2, first in the branch", _acf("l2", "first")),
    "acf_lipnorm_first": ("acf", "ACF LipNorm, first in the branch", _acf("lipnorm", "first")),
}

# The tables: (title, run names in order).
TABLES = (
    ("AttnFlow: attention kind on two backbones (pos-4)",
     ("mar_none", "mar_imap_p4", "mar_itrans_h5_p4", "glow_none", "glow_imap_p4",
      "glow_itrans_h5_p4")),
    ("AttnFlow: position of iMap in each mAR-SCF step",
     ("mar_none", "mar_imap_p1", "mar_imap_p2", "mar_imap_p3", "mar_imap_p4")),
    ("AttnFlow: iTrans heads (mAR-SCF, pos-4)",
     ("mar_none", "mar_itrans_h1_p4", "mar_itrans_h3_p4", "mar_itrans_h5_p4",
      "mar_itrans_h7_p4")),
    ("ACF: attention kind and placement (Residual Flow, 4 heads)",
     ("acf_none", "acf_l2_between", "acf_lipnorm_between", "acf_l2_first",
      "acf_lipnorm_first")),
)


def make_config(name: str, seed: int, steps: Optional[int] = None):
    """The config of run ``name`` (a key of :data:`RUNS`) with ``seed``.

    ``steps`` overrides the variant's 1,200 optimiser steps (one evaluation, at the end).
    """
    from experiments.configs import acf_mnist, attnflow_mnist
    if name not in RUNS:
        raise ValueError(f"ablations_mnist: unknown run {name!r}; known: {', '.join(RUNS)}.")
    group, _, modify = RUNS[name]
    config = (attnflow_mnist if group == "attnflow" else acf_mnist).get_config("small_mnist")
    with config.unlocked():
        modify(config)
        config.seed = int(seed)
        if steps is not None:
            config.num_train_steps = config.eval_every = config.checkpoint_every = int(steps)
        config.progress_bar = False
    return config


def _captured_log_dets(tree):
    """The log-dets of every captured ``transform`` call in an ``intermediates`` tree.

    Flax stores the outputs of a captured method as a tuple (one entry per call) under
    the method's name; each output of ``transform`` is ``(y, log_det)``.
    """
    out = []
    for key, value in tree.items():
        if key == "transform":
            out.extend(output[1] for output in value)
        elif hasattr(value, "items"):          # dicts and Flax FrozenDicts
            out.extend(_captured_log_dets(value))
    return out


class AttentionTrace:
    """The ``hook(step, state)`` that records the attention's use every ``every`` steps.

    ACF: :func:`jaxflows.models.acf.attention_gains` of the raw parameters. AttnFlow:
    mean and standard deviation across ``images`` of the summed log-det of every
    :class:`~jaxflows.bijectors.IMap` / :class:`~jaxflows.bijectors.ITrans` (bits/dim).
    Records go to ``path`` (JSON lines; a resumed run appends).
    """

    def __init__(self, config, path: str, every: int, num_images: int = 128):
        import jax
        import jax.numpy as jnp

        from jaxflows.bijectors import IMap, ITrans
        from jaxflows.train.run import get_split_source, prepare_run
        self.path, self.every = path, int(every)
        self.is_acf = config.model.name == "acf"
        self.has_attention = config.model.get("attention", "none") != "none"
        self.num_steps = int(config.num_train_steps)
        if self.is_acf or not self.has_attention:
            return
        run = prepare_run(config, None, check_workdir=False)
        source = get_split_source(run.settings.dataset, run.settings.dataset.test_split)
        images = source.get_batch(np.arange(num_images))["image"]
        x = jnp.asarray(images, jnp.float32) + 0.5          # mid-bin dequantisation
        num_dims = float(np.prod(images.shape[1:]))
        flow = run.flow

        def is_attention(module, method_name):
            return isinstance(module, (IMap, ITrans)) and method_name == "transform"

        @jax.jit
        def stats(variables):
            _, inter = flow.apply(variables, x, method=flow.log_prob,
                                  capture_intermediates=is_attention, mutable=["intermediates"])
            total, count = jnp.zeros(x.shape[0], jnp.float32), 0
            for log_det in _captured_log_dets(inter):
                # scanned steps stack their captures: [steps, batch] -> [batch]
                total = total + log_det.reshape(-1, x.shape[0]).sum(0)
                count += log_det.size // x.shape[0]
            bpd = total / (num_dims * jnp.log(2.0))
            return jnp.mean(bpd), jnp.std(bpd), count
        self.stats = stats

    def record(self, step: int, state) -> Optional[dict]:
        from jaxflows.models.acf import attention_gains
        if not self.has_attention:
            return None
        rec = {"step": int(step)}
        if self.is_acf:
            rec.update(attention_gains(state.params))
        else:
            mean, std, n = self.stats(state.variables(use_ema=False))
            rec.update(logdet_mean_bpd=float(mean), logdet_std_bpd=float(std),
                       captured=int(n))
        with open(self.path, "a") as f:
            f.write(json.dumps(rec) + "\n")
        return rec

    def __call__(self, step, state) -> None:
        step = int(step)
        if step == 1 or step % self.every == 0 or step == self.num_steps:
            self.record(step, state)


def read_trace(path: str) -> List[dict]:
    """The records of an ``attention_trace.jsonl`` (later records of a step win)."""
    if not os.path.exists(path):
        return []
    by_step = {}
    with open(path) as f:
        for line in f:
            if line.strip():
                rec = json.loads(line)
                by_step[rec["step"]] = rec
    return [by_step[s] for s in sorted(by_step)]


def run_dir(workdir: str, name: str, seed: int) -> str:
    return os.path.join(workdir, f"{name}_s{seed}")


def load_run(workdir: str, name: str, seed: int) -> Optional[dict]:
    """``{"test_bpd", "val_bpd", "seconds", "trace"}`` of a finished run, else ``None``."""
    d = run_dir(workdir, name, seed)
    path = os.path.join(d, "results.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        res = json.load(f)
    if "test_bpd" not in res:
        return None
    timing = {}
    if os.path.exists(os.path.join(d, "ablation.json")):
        with open(os.path.join(d, "ablation.json")) as f:
            timing = json.load(f)
    return dict(test_bpd=res["test_bpd"], val_bpd=res.get("val_bpd"),
                seconds=timing.get("seconds"), trace=read_trace(
                    os.path.join(d, "attention_trace.jsonl")))


def _use_cell(group: str, trace: List[dict]) -> str:
    """The attention's use at the start and at the end of training, for the table."""
    if not trace:
        return ""
    first, last = trace[0], trace[-1]
    if group == "acf":
        return f"{first['mean_abs_gamma']:.2f} -> {last['mean_abs_gamma']:.2f}"
    return (f"{first['logdet_std_bpd']:.4f} -> {last['logdet_std_bpd']:.4f} (mean "
            f"{first['logdet_mean_bpd']:.3f} -> {last['logdet_mean_bpd']:.3f})")


def summarise(values: List[float]) -> str:
    if not values:
        return "not run"
    mean = float(np.mean(values))
    if len(values) == 1:
        return f"{mean:.3f} (1 seed)"
    half = (max(values) - min(values)) / 2
    return f"{mean:.3f} ± {half:.3f}"


def write_table(path: str, workdir: str, seeds, command: str, steps: int) -> bool:
    """Writes the markdown tables; returns whether every run of every table finished."""
    complete = True
    lines = [
        "# Attention ablations on the real MNIST digits",
        "",
        f"Test bits/dim on `mnist_8k` (800 test digits) of the EMA "
        f"parameters after {steps} optimiser steps of batch 32 (evaluated once, at the end), "
        f"for seeds {', '.join(str(s) for s in seeds)}: **mean ± "
        f"half the range** over the seeds, then each seed's value. Lower is better. AttnFlow "
        f"runs see the digits padded to 32x32 (bits/dim over 1,024 dimensions, as the paper "
        f"pads MNIST); ACF runs see 28x28 (784 dimensions): the two groups are not "
        f"comparable with each other. Wall times are of a shared 2-core CPU running two "
        f"runs at once: not a speed benchmark.",
        "",
        "Attention use (start -> end of training, from the raw parameters): for AttnFlow the "
        "standard deviation across 128 test digits of the attention layers' summed log-det "
        "(bits/dim; 0 would be an attention that ignores the image), and in brackets its "
        "mean (the attention's share of the log-likelihood), for ACF the mean "
        "learned `|gamma|` over the residual blocks (start 1: half attention, half identity; "
        "0 is the plain residual flow). Traces: `attention_trace.jsonl` of each run and the "
        "figure `ablations_mnist_attention_use.png`.",
        "",
        f"Produced by: `{command}`",
        "",
    ]
    for title, names in TABLES:
        lines += [f"## {title}", "",
                  "| model | test bits/dim | per seed | attention use (seed 0) | "
                  "wall time per run (s) |", "|---|---|---|---|---|"]
        for name in names:
            group, desc, _ = RUNS[name]
            runs = {s: load_run(workdir, name, s) for s in seeds}
            done = {s: r for s, r in runs.items() if r is not None}
            complete &= len(done) == len(seeds)
            vals = [r["test_bpd"] for r in done.values()]
            per_seed = ", ".join(f"{r['test_bpd']:.3f}" for r in done.values())
            first = done.get(seeds[0])
            use = _use_cell(group, first["trace"]) if first else ""
            secs = [r["seconds"] for r in done.values() if r.get("seconds")]
            lines.append(f"| {desc} | {summarise(vals)} | {per_seed} | {use} | "
                         f"{np.mean(secs):.0f} |" if secs else
                         f"| {desc} | {summarise(vals)} | {per_seed} | {use} | |")
        lines.append("")
    if not complete:
        lines.insert(8, "**Partial table: some runs have not finished.**\n")
    lines.append(f"_Written {datetime.datetime.utcnow():%Y-%m-%d %H:%M} UTC._")
    cli.write_text_atomic(path, "\n".join(lines) + "\n")
    return complete


def plot_traces(path: str, workdir: str, seeds) -> None:
    """PNG of the attention's use over training (seed 0 of each run)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 3, figsize=(18, 4.6))
    for name, (group, desc, _) in RUNS.items():
        run = load_run(workdir, name, seeds[0])
        if not run or not run["trace"]:
            continue
        steps = [r["step"] for r in run["trace"]]
        if group == "acf":
            axes[2].plot(steps, [r["mean_abs_gamma"] for r in run["trace"]], marker="o",
                         label=desc)
        else:
            axes[0].plot(steps, [r["logdet_std_bpd"] for r in run["trace"]], marker=".",
                         label=desc)
            axes[1].plot(steps, [r["logdet_mean_bpd"] for r in run["trace"]], marker=".",
                         label=desc)
    axes[0].set(title="AttnFlow: spread of the attention log-det across test digits",
                xlabel="optimiser step", ylabel="std over images (bits/dim)")
    axes[1].set(title="AttnFlow: mean attention log-det", xlabel="optimiser step",
                ylabel="mean over images (bits/dim)")
    axes[2].set(title="ACF: mean |gamma| over the residual blocks", xlabel="optimiser step",
                ylabel="mean |gamma|")
    for ax in axes[1:]:
        if ax.lines:
            ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def train_one(name: str, seed: int, workdir: str, steps: Optional[int], trace_every: int,
              train: Callable = None) -> dict:
    """Trains run ``name`` with ``seed`` in ``run_dir(workdir, name, seed)``."""
    from jaxflows.train import train_and_evaluate
    train = train or train_and_evaluate
    config = make_config(name, seed, steps)
    d = run_dir(workdir, name, seed)
    os.makedirs(d, exist_ok=True)
    hook = AttentionTrace(config, os.path.join(d, "attention_trace.jsonl"), trace_every)
    start = time.time()
    res = train(config, d, hooks=(hook,))
    if res.get("interrupted"):
        return res
    with open(os.path.join(d, "ablation.json"), "w") as f:
        json.dump({"seconds": time.time() - start}, f)
    return res


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", default="runs/ablations_mnist")
    parser.add_argument("--output", default="docs/ablations_mnist.md")
    parser.add_argument("--figure", default="docs/images/ablations_mnist_attention_use.png")
    parser.add_argument("--seeds", default="0,1", help="comma-separated seeds")
    parser.add_argument("--steps", type=int, default=None,
                        help="optimiser steps per run (default: the configs' 1,200)")
    parser.add_argument("--trace_every", type=int, default=50,
                        help="record the attention's use every this many steps")
    parser.add_argument("--only", default="", help=f"comma-separated run names (default: all): "
                        f"{', '.join(RUNS)}")
    parser.add_argument("--shard", default="0/1",
                        help="i/n: this process takes every n-th run from the i-th (so n "
                        "processes sharing --workdir split the grid)")
    parser.add_argument("--table_only", action="store_true",
                        help="only rewrite the table and the figure from finished runs")
    args = parser.parse_args(argv)
    seeds = cli.parse_seeds(args.seeds, parser.error)
    if args.steps is not None and args.steps < 1:
        parser.error(f"--steps must be >= 1, got {args.steps}")
    if args.trace_every < 1:
        parser.error(f"--trace_every must be >= 1, got {args.trace_every}")
    only = [n for n in args.only.split(",") if n]
    unknown = [n for n in only if n not in RUNS]
    if unknown:
        parser.error(f"--only: unknown run(s) {', '.join(unknown)}; known: {', '.join(RUNS)}")
    try:
        shard, num_shards = (int(v) for v in args.shard.split("/"))
        assert 0 <= shard < num_shards
    except (ValueError, AssertionError):
        parser.error(f"--shard: expected i/n with 0 <= i < n, got {args.shard!r}")

    steps = args.steps or make_config("mar_none", 0).num_train_steps
    command = (f"python experiments/ablations_mnist.py --workdir={args.workdir} "
               f"--output={args.output} --seeds={args.seeds}"
               + ("" if args.steps is None else f" --steps={args.steps}"))
    todo = [(n, s) for s in seeds for n in (only or RUNS)]
    todo = todo[shard::num_shards]
    if not args.table_only:
        for name, seed in todo:
            if load_run(args.workdir, name, seed) is not None:
                continue
            write_table(args.output, args.workdir, seeds, command, steps)
            start = time.time()
            res = train_one(name, seed, args.workdir, args.steps, args.trace_every)
            if res.get("interrupted"):
                print(f"[ablations_mnist] interrupted in {name} seed {seed}", flush=True)
                break
            print(f"[ablations_mnist] {name} seed {seed}: test {res['test_bpd']:.4f} bits/dim "
                  f"({time.time() - start:.0f} s)", flush=True)
    complete = write_table(args.output, args.workdir, seeds, command, steps)
    plot_traces(args.figure, args.workdir, seeds)
    print(f"[ablations_mnist] table written to {args.output} "
          f"({'complete' if complete else 'partial'}); figure {args.figure}", flush=True)


if __name__ == "__main__":
    main()

r"""The Flow++ Table 2 ablation on the real MNIST digits (``mnist_8k``), several seeds.

    python experiments/flowpp_ablation.py --workdir=runs/flowpp_ablation \
        --output=docs/flowpp_ablation.md --seeds=0,1

Four rows, as in Flow++ (Ho et al. 2019, Table 2), each a variant of
``experiments/configs/flowpp_mnist.py`` trained at equal steps with the project's trainer:

* ``small``: the full model (variational dequantisation, MixLogCDF couplings,
  self-attention in the conditioners);
* ``small_uniform``: uniform dequantisation;
* ``small_affine``: affine couplings instead of MixLogCDF;
* ``small_noattn``: pointwise gated layers instead of self-attention.

Run ``v`` with seed ``s`` trains in ``<workdir>/<v>_s<s>`` (a finished run, one with
``results.json``, is skipped; an interrupted one resumes from its checkpoint). The
markdown table gives, per row, the test bits/dim of each seed (the best-on-validation EMA
parameters; for variational dequantisation the single-sample variational bound, the
training objective), their mean and half the range, and the difference to the full
model; every figure is read from the runs' ``results.json``. ``<output>`` gets a figure
of the training curves (``train_bpd`` of ``metrics.jsonl``, mean over seeds) beside it.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Dict, List

from experiments import cli

ROWS = (("small", "full (variational, MixLogCDF, attention)"),
        ("small_uniform", "uniform dequantisation"),
        ("small_affine", "affine couplings"),
        ("small_noattn", "no self-attention"))


def run_dir(workdir: str, variant: str, seed: int) -> str:
    return os.path.join(workdir, f"{variant}_s{seed}")


def train_missing(workdir: str, seeds: List[int]) -> None:
    """Trains every (variant, seed) without a ``results.json`` (resuming if begun)."""
    from experiments.configs import flowpp_mnist
    from jaxflows import train as jt
    for seed in seeds:
        for variant, _ in ROWS:
            wd = run_dir(workdir, variant, seed)
            if os.path.exists(os.path.join(wd, "results.json")):
                continue
            config = flowpp_mnist.get_config(variant)
            config.seed = seed
            config.progress_bar = False
            print(f"training {variant} seed {seed} in {wd}", flush=True)
            jt.train_and_evaluate(config, wd)


def read_results(workdir: str, seeds: List[int]) -> Dict[str, Dict[int, dict]]:
    """``{variant: {seed: results.json}}`` of the finished runs."""
    out: Dict[str, Dict[int, dict]] = {}
    for variant, _ in ROWS:
        for seed in seeds:
            path = os.path.join(run_dir(workdir, variant, seed), "results.json")
            if os.path.exists(path):
                with open(path) as f:
                    out.setdefault(variant, {})[seed] = json.load(f)
    return out


def train_curve(workdir: str, variant: str, seed: int):
    """``(steps, train_bpd)`` from the run's ``metrics.jsonl``."""
    steps, values = [], []
    with open(os.path.join(run_dir(workdir, variant, seed), "metrics.jsonl")) as f:
        for line in f:
            rec = json.loads(line)
            if "train_bpd" in rec:
                steps.append(rec["step"])
                values.append(rec["train_bpd"])
    return steps, values


def table(results: Dict[str, Dict[int, dict]], seeds: List[int]) -> str:
    """The markdown table (missing runs shown as "-")."""
    head = ("| row | variant | " + " | ".join(f"seed {s}" for s in seeds)
            + " | mean ± half-range | vs full |")
    lines = [head, "|" + "---|" * (len(seeds) + 4)]
    full = results.get("small", {})
    full_mean = (sum(r["test_bpd"] for r in full.values()) / len(full)) if full else None
    for variant, label in ROWS:
        got = results.get(variant, {})
        cells = [f"{got[s]['test_bpd']:.3f}" if s in got else "-" for s in seeds]
        vals = [got[s]["test_bpd"] for s in seeds if s in got]
        if vals:
            mean = sum(vals) / len(vals)
            spread = (max(vals) - min(vals)) / 2
            summary = f"{mean:.3f} ± {spread:.3f}"
            diff = "" if variant == "small" or full_mean is None else f"{mean - full_mean:+.3f}"
        else:
            summary, diff = "-", ""
        lines.append(f"| {label} | `{variant}` | " + " | ".join(cells)
                     + f" | {summary} | {diff} |")
    return "\n".join(lines)


def plot(workdir: str, seeds: List[int], path: str) -> None:
    """Training curves, mean over the finished seeds of each row."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from jaxflows.train.plots import save_figure
    fig, ax = plt.subplots(figsize=(6, 4))
    tails = []
    for variant, label in ROWS:
        curves = [train_curve(workdir, variant, s) for s in seeds
                  if os.path.exists(os.path.join(run_dir(workdir, variant, s),
                                                 "results.json"))]
        if not curves:
            continue
        n = min(len(c[1]) for c in curves)
        mean = np.mean([c[1][:n] for c in curves], axis=0)
        ax.plot(curves[0][0][:n], mean, label=label)
        tails.extend(mean[1:])
    if tails:   # the first logged interval (from initialisation) would flatten the rest
        ax.set_ylim(min(tails) - 0.05, max(tails) + 0.1)
    ax.set_xlabel("step")
    ax.set_ylabel("train bits/dim (mean over seeds)")
    ax.set_title("Flow++ Table 2 rows on mnist_8k")
    ax.legend()
    save_figure(fig, path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", required=True, help="one sub-directory per run")
    ap.add_argument("--output", required=True, help="markdown file for the table")
    ap.add_argument("--seeds", default="0,1", help="comma-separated seeds (at least 2)")
    ap.add_argument("--report_only", action="store_true",
                    help="write the table of the finished runs, train nothing")
    args = ap.parse_args(argv)
    seeds = cli.parse_seeds(args.seeds, ap.error, at_least=2)
    if not args.report_only:
        train_missing(args.workdir, seeds)
    results = read_results(args.workdir, seeds)
    if not results:
        print(f"error: no finished runs under {args.workdir!r}", file=sys.stderr)
        return 2
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    figure = os.path.splitext(args.output)[0] + ".png"
    plot(args.workdir, seeds, figure)
    text = table(results, seeds)
    with open(args.output, "w") as f:
        f.write(text + "\n")
    print(text)
    print(f"figure: {figure}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

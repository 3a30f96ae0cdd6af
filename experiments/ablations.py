r"""Attention ablations on digits: AttnFlow positions x heads, ACF attention kind x heads.

    python experiments/ablations.py --workdir=runs/ablations --output=docs/ablations.md

Trains the ``small`` (digits, CPU-minutes) variants with the project's trainer
(:func:`jaxflows.train.train_and_evaluate`), one run per row, and writes a markdown
table of **test bits/dim** (best-on-validation EMA parameters, as every run of the
trainer reports) next to the non-attentive baselines trained with the same protocol:

* AttnFlow (``attnflow_mnist.py:small``): iMap at positions 1-4, iTrans at positions
  1-4 with 1 and 2 summed heads, and the same Glow without attention;
* ACF (``acf_mnist.py:small``): L2 multi-head attention and LipschitzNorm attention
  with 1 and 2 heads inside the residual branches, and the same residual flow without
  attention (``attention="none"``: the same model and initial parameters, minus the
  attentions).

ACF's attention enters each branch as ``a(x) = (x + gamma F(x) / L) / (1 + |gamma|)``
with ``gamma`` initialised at 0 (the identity), so an ACF row means something only if
training moved ``gamma``: next to each ACF row's bits/dim the table gives the largest
and the mean learned ``|gamma|`` over the residual blocks
(:func:`jaxflows.models.acf.attention_gains`), read from the evaluated (best, EMA)
parameters of the run's checkpoint and stored in its ``results.json``.

Every figure in the table is read from the run's ``results.json``, never typed in.
The table is rewritten after every run (so an interrupted ablation leaves a partial
table, marked as such) and finished runs are skipped when the command is rerun.
Runs are short (``--steps``, default 300 optimiser steps, one evaluation at the end),
so differences of a few hundredths of a bit/dim are within seed noise: the table is a
smoke-scale comparison, not a reproduction of the papers' numbers.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import time

from experiments import cli

ATTNFLOW_KEYS = ("attention", "position", "heads")


def run_attention_gains(workdir: str):
    """``{"ema": gains, "raw": gains}`` of the best checkpoint of ``workdir`` (else the
    last one), or ``None`` without a checkpoint; ``gains`` as
    :func:`jaxflows.models.acf.attention_gains` of the EMA / raw parameters.

    Reads the checkpoint as a plain tree (no model is built), so it also works for runs
    of an older version of the model whose parameter paths end in ``attention/gamma``.
    """
    import orbax.checkpoint as ocp

    from jaxflows.models.acf import attention_gains
    from jaxflows.train.checkpoint import latest_step
    for which in ("best", "checkpoints"):
        step = latest_step(workdir, which)
        if step is None:
            continue
        mngr = ocp.CheckpointManager(
            os.path.join(os.path.abspath(workdir), which), item_names=("state",),
            options=ocp.CheckpointManagerOptions(read_only=True, create=False))
        state = mngr.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore()))["state"]
        mngr.close()
        return {"ema": attention_gains(state["ema_params"]),
                "raw": attention_gains(state["params"]), "step": int(step)}
    return None


def attnflow_runs():
    """(group, name, description, config-modifier) for the AttnFlow grid."""
    runs = [("attnflow", "glow", "Glow (no attention)", dict(name="glow"))]
    for pos in (1, 2, 3, 4):
        runs.append(("attnflow", f"imap_pos{pos}", f"iMap, pos-{pos}",
                     dict(attention="imap", position=pos, heads=1)))
    for heads in (1, 2):
        for pos in (1, 2, 3, 4):
            runs.append(("attnflow", f"itrans_h{heads}_pos{pos}",
                         f"iTrans, {heads} head{'s' if heads > 1 else ''}, pos-{pos}",
                         dict(attention="itrans", position=pos, heads=heads)))
    return runs


def acf_runs():
    """(group, name, description, config-modifier) for the ACF grid."""
    runs = [("acf", "resflow", "Residual Flow (no attention)", dict(attention="none"))]
    for kind, label in (("l2", "L2-MHA"), ("lipnorm", "LipNorm")):
        for heads in (1, 2):
            runs.append(("acf", f"{kind}_h{heads}",
                         f"ACF {label}, {heads} head{'s' if heads > 1 else ''}",
                         dict(attention=kind, heads=heads)))
    return runs


def make_config(group: str, modifier: dict, steps: int):
    """The small config of ``group`` with ``modifier`` applied to ``config.model``.

    The AttnFlow baseline (``modifier["name"] == "glow"``) is the same config with the
    Glow factory and without the attention keys; the ACF baseline is ``acf`` with
    ``attention="none"`` (the same residual flow, no attention).
    """
    from experiments.configs import acf_mnist, attnflow_mnist
    config = (attnflow_mnist if group == "attnflow" else acf_mnist).get_config("small")
    with config.unlocked():
        if modifier.get("name") == "glow":
            for k in ATTNFLOW_KEYS:
                if k in config.model:
                    del config.model[k]
            config.model.name = "glow"
        else:
            for k, v in modifier.items():
                config.model[k] = v
        config.num_train_steps = steps
        config.eval_every = steps            # one evaluation, at the end
        config.checkpoint_every = steps
        config.eval_test_during_training = False
        config.sample_temperatures = ()
        config.progress_bar = False
    return config


def write_table(path: str, rows, command: str, complete: bool, steps: int) -> None:
    lines = [
        "# Attention ablations on digits",
        "",
        "Test bits/dim on scikit-learn's digits (8x8, 17 levels; 1,350 train / 150 validation / "
        "297 test images) after a short training run of the `small` variants "
        f"({steps} optimiser steps, batch 64, evaluated once at the end with the EMA "
        "parameters). Lower is better. Reference points: uniform 4.09 bits/dim; independent "
        "per-pixel categoricals fitted on train 2.37. Runs this short are a smoke-scale "
        "comparison (a single seed; differences of a few hundredths are noise). Wall times "
        "were measured on a shared 2-core CPU while many other jobs ran (several ablation "
        "runs concurrently among them): they are not a speed benchmark.",
        "",
        f"Produced by: `{command}`" + ("" if complete else
                                        "  \n**Partial table: the ablation was still running.**"),
        "",
    ]
    for group, title in (("attnflow", "AttnFlow (Glow backbone, L=2, K=2, hidden 32)"),
                         ("acf", "ACF (Residual Flow backbone, 2 levels x 2 blocks, hidden 32)")):
        sub = [r for r in rows if r["group"] == group]
        if not sub:
            continue
        gains = group == "acf"
        lines += [f"## {title}", "",
                  "| model | test bits/dim | val bits/dim |"
                  + (" max \\|gamma\\| | mean \\|gamma\\| |" if gains else "")
                  + " wall time (s) |",
                  "|---|---|---|" + ("---|---|" if gains else "") + "---|"]
        for r in sub:
            extra = ""
            if gains:
                g = (r.get("attention_gains") or {}).get("ema")
                extra = (" | |" if not g or not g["count"]
                         else f" {g['max_abs_gamma']:.1e} | {g['mean_abs_gamma']:.1e} |")
            if r.get("test_bpd") is None:
                lines.append(f"| {r['description']} | {r.get('status', 'not run')} | |"
                             + (" | |" if gains else "") + " |")
            else:
                lines.append(f"| {r['description']} | {r['test_bpd']:.3f} | "
                             f"{r['val_bpd']:.3f} |{extra} {r['seconds']:.0f} |")
        if gains:
            lines += ["", "ACF mixes its attention into each residual branch as "
                      "`a(x) = (x + gamma F(x)/L) / (1 + |gamma|)`, with `F/L` the attention "
                      "divided by its Lipschitz bound and `gamma` initialised at 0 (the "
                      "identity). The gamma columns are the largest and the mean learned "
                      "`|gamma|` over the residual blocks of the evaluated (best, EMA) "
                      "parameters: where they are near 0 the attention was effectively not "
                      "used, and the row measures the residual flow itself. The baseline is "
                      "the same model without the attentions, from the same initial "
                      "parameters."]
        lines.append("")
    lines.append(f"_Written {datetime.datetime.utcnow():%Y-%m-%d %H:%M} UTC._")
    cli.write_text_atomic(path, "\n".join(lines) + "\n")


def _update_results(path: str, **fields) -> None:
    """Adds ``fields`` to the run's ``results.json`` (atomically)."""
    with open(path) as f:
        saved = json.load(f)
    saved.update(fields)
    cli.write_text_atomic(path, json.dumps(saved, indent=2, sort_keys=True))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", default="runs/ablations", help="one sub-directory per run")
    parser.add_argument("--output", default="docs/ablations.md", help="markdown table")
    parser.add_argument("--steps", type=int, default=300, help="optimiser steps per run")
    parser.add_argument("--groups", default="attnflow,acf", help="comma-separated: attnflow,acf")
    parser.add_argument("--only", default="", help="comma-separated run names (default: all); "
                        "several processes with disjoint --only/--groups may share --workdir and "
                        "--output: each run's results.json is the record, the table lists all")
    parser.add_argument("--table_only", action="store_true",
                        help="only rewrite the table from the finished runs in --workdir")
    parser.add_argument("--reverse", action="store_true",
                        help="run the selected runs in reverse order (to split work between "
                        "concurrent processes)")
    args = parser.parse_args(argv)
    if args.steps < 1:
        raise ValueError(f"--steps must be >= 1, got {args.steps}.")
    groups = [g for g in args.groups.split(",") if g]
    for g in groups:
        if g not in ("attnflow", "acf"):
            raise ValueError(f"--groups: unknown group {g!r}; known: attnflow, acf.")
    # The command that produces the whole table (--groups/--only only split the work
    # between concurrent processes sharing --workdir and --output).
    command = (f"python experiments/ablations.py --workdir={args.workdir} --output={args.output}"
               + ("" if args.steps == 300 else f" --steps={args.steps}"))

    from jaxflows.train import train_and_evaluate

    plan = attnflow_runs() + acf_runs()          # the table always lists every row
    only = {n for n in args.only.split(",") if n}
    todo = {(g, n) for g, n, _, _ in plan if g in groups and (not only or n in only)}
    rows = [dict(group=g, name=n, description=d) for g, n, d, _ in plan]

    def refresh():
        """Fills rows from every finished run (also those of concurrent processes)."""
        for row in rows:
            path = os.path.join(args.workdir, f"{row['group']}_{row['name']}", "results.json")
            if row.get("test_bpd") is None and os.path.exists(path):
                with open(path) as f:
                    res = json.load(f)
                if "test_bpd" in res:
                    row.update(test_bpd=res["test_bpd"], val_bpd=res.get("val_bpd", float("nan")),
                               seconds=res.get("ablation_seconds", float("nan")),
                               attention_gains=res.get("attention_gains"))
            if (row["group"] == "acf" and row.get("test_bpd") is not None
                    and row.get("attention_gains") is None):
                row["attention_gains"] = run_attention_gains(os.path.dirname(path))
                _update_results(path, attention_gains=row["attention_gains"])

    order = list(zip(rows, plan))
    if args.reverse:
        order.reverse()
    if args.table_only:
        order = []
    for row, (group, name, _, modifier) in order:
        refresh()
        if (group, name) not in todo or row.get("test_bpd") is not None:
            continue
        write_table(args.output, rows, command,
                    complete=all(r.get("test_bpd") is not None for r in rows), steps=args.steps)
        workdir = os.path.join(args.workdir, f"{group}_{name}")
        start = time.time()
        try:
            res = train_and_evaluate(make_config(group, modifier, args.steps), workdir)
        except Exception as e:  # a failed run is reported in the table, the others go on
            row["status"] = f"failed: {type(e).__name__}: {str(e)[:120]}"
            print(f"[ablations] {group}/{name} failed: {e}", flush=True)
            continue
        seconds = time.time() - start
        gains = run_attention_gains(workdir) if group == "acf" else None
        _update_results(os.path.join(workdir, "results.json"), ablation_seconds=seconds,
                        **({"attention_gains": gains} if gains is not None else {}))
        row.update(test_bpd=res["test_bpd"], val_bpd=res.get("val_bpd", float("nan")),
                   seconds=seconds, attention_gains=gains)
        print(f"[ablations] {group}/{name}: test {res['test_bpd']:.4f} bits/dim "
              f"({seconds:.0f} s)"
              + (f", max |gamma| {gains['ema']['max_abs_gamma']:.3g}"
                 if gains and gains["ema"]["count"] else ""), flush=True)
    refresh()
    write_table(args.output, rows, command,
                complete=all(r.get("test_bpd") is not None for r in rows), steps=args.steps)
    print(f"[ablations] table written to {args.output}", flush=True)


if __name__ == "__main__":
    main()

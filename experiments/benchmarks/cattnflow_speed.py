r"""cAttnFlow: conditional train-step and sampling time with iMap, iTrans and no attention.

The AttnFlow source (supplement, 8x face super-resolution on CelebA, GPU) reports a test
time per image of 0.104 s for cAttnFlow-iMap, 0.317 s for cAttnFlow-iTrans and 0.077 s
for the same conditional flow without attention (SRFlow's step): iMap / none = 1.35x,
iTrans / none = 4.1x. This benchmark measures the same comparison on one machine, in one
run (issue 17, item 7).

For each task in ``--tasks`` the same :func:`jaxflows.models.cattnflow` is built three
times, with ``attention`` in ``("imap", "itrans", "none")`` (``"none"``: SRFlow's step,
ActNorm -> 1x1 conv -> affine injector -> conditional affine coupling; the attention
variants add the attention at ``--position``, default pos-4, after the coupling):

* ``sr``: super-resolution, HR ``--hr`` (default 32x32x3) from an LR image ``--scale``
  times smaller (default 4x: 8x8x3), context encoded by the RRDB encoder
  (``--rrdb_features``, ``--rrdb_growth``, ``--rrdb_blocks``, ``--stacked_blocks``:
  by default every block's output is stacked into the context);
* ``seg``: segmentation to image, HR ``--hr`` from a label map of ``--classes`` classes
  at the image's resolution (the segmentation encoder).

Timed under ``jax.jit`` with ``block_until_ready``
(:func:`experiments.benchmarks.timing.median_time`), compilation excluded and reported
separately (``lower().compile()`` wall time); the three flows are timed in ``--repeats``
interleaved rounds (a warm-up and a timed call of each per round) and the medians over
the rounds are reported, so that the load of a shared machine falls on all three alike:

* ``train_step_s``: one training step per batch of ``--batch`` (HR, LR) pairs:
  ``value_and_grad`` of the mean negative log-likelihood (bits/dim) and an ``optax.adam``
  update;
* ``sample_s_per_image``: conditional sampling, ``flow.sample(batch, context=lr,
  temperature=--temperature)`` (one sample per context row), divided by the batch.

The ratios ``imap / none`` and ``itrans / none`` of both times are printed next to the
source's test-time ratios. The inputs are random (timing does not depend on the values);
the parameters are the initial ones (iMap's and iTrans' inverses are closed-form, so the
sampling cost does not depend on the parameters either).

The defaults (L = 2, K = 4, hidden 32, batch 8, RRDB encoder of 2 blocks of width 16)
take about 3.5 minutes of CPU time, most of it compiling (five to six minutes of wall time
on a 2-core CPU shared with other jobs); the source's CelebA setting is
``--hr=160,160,3 --scale=8 --levels=1 --steps=1 --hidden=64 --rrdb_features=64
--rrdb_growth=32 --rrdb_blocks=8 --stacked_blocks=1,3,5,7`` (a GPU job). CPU numbers at a small
size are not the source's GPU numbers: compare the ratios, and do not read final numbers
off a loaded machine.

Usage::

    python experiments/benchmarks/cattnflow_speed.py                    # sr, ~3.5 CPU-minutes
    python experiments/benchmarks/cattnflow_speed.py --tasks=sr,seg --repeats=5

Writes ``runs/benchmarks/cattnflow_speed.json`` (``--out``).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import time
from typing import Dict

from experiments.benchmarks.timing import median_time

ATTENTIONS = ("imap", "itrans", "none")
TASKS = ("sr", "seg")
# The AttnFlow source's test time per image (s), 8x face super-resolution, GPU.
SOURCE_S_PER_IMAGE = {"imap": 0.104, "itrans": 0.317, "none": 0.077}


def _flow(task: str, attention: str, args):
    from jaxflows.models import cattnflow
    hr = tuple(args.hr)
    kw = dict(levels=args.levels, steps_per_level=args.steps, attention=attention,
              position=args.position, heads=args.heads, patch_size=args.patch,
              hidden_channels=args.hidden, num_bins=args.num_bins)
    if task == "sr":
        lr = (hr[0] // args.scale, hr[1] // args.scale, hr[2])
        return cattnflow(hr, lr, scale=args.scale, rrdb_features=args.rrdb_features,
                         rrdb_growth=args.rrdb_growth, rrdb_blocks=args.rrdb_blocks,
                         stacked_blocks=tuple(range(args.rrdb_blocks)
                                              if args.stacked_blocks is None
                                              else args.stacked_blocks), **kw)
    return cattnflow(hr, context_shape=hr[:2], num_classes=args.classes,
                     seg_features=args.seg_features, **kw)


def _data(task: str, args):
    """A random batch of HR images (pixel values) and their contexts."""
    import jax
    import jax.numpy as jnp
    k_hr, k_ctx = jax.random.split(jax.random.PRNGKey(args.seed))
    hr = tuple(args.hr)
    x = jax.random.uniform(k_hr, (args.batch,) + hr, maxval=args.num_bins)
    if task == "sr":
        # the box-averaged HR image: SRFlow's bicubic LR up to the kernel
        b, h, w, c = x.shape
        lr = x.reshape(b, h // args.scale, args.scale, w // args.scale, args.scale, c)
        return x, jnp.mean(lr, axis=(2, 4))
    return x, jax.random.randint(k_ctx, (args.batch,) + hr[:2], 0, args.classes)


def _compile(flow, x, ctx, args) -> Dict:
    """``flow``'s compiled train step and sampler (as thunks), compile times, loss, size."""
    import jax
    import jax.numpy as jnp
    import optax

    key = jax.random.PRNGKey(args.seed + 1)
    variables = jax.jit(lambda x, c: flow.init(key, x, context=c))(x, ctx)
    params = variables["params"]
    rest = {k: v for k, v in variables.items() if k != "params"}
    tx = optax.adam(args.lr)
    bits = math.prod(x.shape[1:]) * math.log(2.0)

    def step(params, opt_state, x, c):
        def loss(p):
            return -jnp.mean(flow.apply({"params": p, **rest}, x, context=c)) / bits
        value, grads = jax.value_and_grad(loss)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, value

    def draw(variables, c, k):
        return flow.apply(variables, x.shape[0], context=c, temperature=args.temperature,
                          method=flow.sample, rngs={"sample": k})

    opt_state = tx.init(params)
    t0 = time.perf_counter()
    train = jax.jit(step).lower(params, opt_state, x, ctx).compile()
    train_compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    sample = jax.jit(draw).lower(variables, ctx, key).compile()
    sample_compile_s = time.perf_counter() - t0
    return {"train": lambda: train(params, opt_state, x, ctx),
            "sample": lambda: sample(variables, ctx, key),
            "row": {"train_compile_s": train_compile_s, "sample_compile_s": sample_compile_s,
                    "params": int(sum(a.size for a in jax.tree_util.tree_leaves(params))),
                    "loss_bits_per_dim": float(train(params, opt_state, x, ctx)[2]),
                    "samples_finite": bool(jnp.all(jnp.isfinite(
                        sample(variables, ctx, key))))}}


def run(args) -> Dict:
    """Compile the three flows of every task, then time them in ``--repeats`` interleaved
    rounds (each round: one warm-up and one timed call of every flow's train step and
    sampler, :func:`median_time` with one repeat), so that a load burst on a shared
    machine falls on all three rather than on one; the medians over rounds are reported.
    """
    results = {}
    for task in args.tasks:
        x, ctx = _data(task, args)
        built = {a: _compile(_flow(task, a, args), x, ctx, args) for a in args.attentions}
        times = {a: {"train": [], "sample": []} for a in args.attentions}
        for _ in range(args.repeats):
            for attention in args.attentions:
                for what in ("train", "sample"):
                    times[attention][what].append(median_time(built[attention][what], 1))
        row = {}
        for attention in args.attentions:
            row[attention] = r = dict(built[attention]["row"])
            r["train_step_s"] = statistics.median(times[attention]["train"])
            r["sample_s_per_image"] = statistics.median(times[attention]["sample"]) / args.batch
            print(f"{task:4s} {attention:7s} train step {r['train_step_s'] * 1e3:9.1f} ms/batch "
                  f"(compile {r['train_compile_s']:5.1f} s)   sample "
                  f"{r['sample_s_per_image'] * 1e3:8.2f} ms/image (compile "
                  f"{r['sample_compile_s']:5.1f} s)   params {r['params']:,}", flush=True)
        for attention in args.attentions[:-1]:      # the last one is "none"
            r = row[attention]
            r["train_step_ratio"] = r["train_step_s"] / row["none"]["train_step_s"]
            r["sample_ratio"] = r["sample_s_per_image"] / row["none"]["sample_s_per_image"]
            source = SOURCE_S_PER_IMAGE[attention] / SOURCE_S_PER_IMAGE["none"]
            print(f"{task:4s} {attention:7s} / none: train step {r['train_step_ratio']:.2f}x, "
                  f"sample {r['sample_ratio']:.2f}x   (source, GPU test time: "
                  f"{SOURCE_S_PER_IMAGE[attention]}/{SOURCE_S_PER_IMAGE['none']} = "
                  f"{source:.2f}x)", flush=True)
        results[task] = row
    return results


def _ints(s: str):
    return [int(v) for v in s.split(",")]


def main(argv=None) -> Dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tasks", type=lambda s: s.split(","), default=["sr"],
                   help=f"comma-separated subset of {TASKS}")
    p.add_argument("--hr", type=_ints, default=[32, 32, 3], help="H,W,C of the HR image")
    p.add_argument("--scale", type=int, default=4, help="SR factor (sr task)")
    p.add_argument("--classes", type=int, default=8, help="segmentation classes (seg task)")
    p.add_argument("--levels", type=int, default=2)
    p.add_argument("--steps", type=int, default=4, help="K, steps per level")
    p.add_argument("--hidden", type=int, default=32)
    p.add_argument("--position", type=int, default=4)
    p.add_argument("--heads", type=int, default=3, help="iTrans heads")
    p.add_argument("--patch", type=int, default=2, help="iTrans token side")
    p.add_argument("--rrdb_features", type=int, default=16)
    p.add_argument("--rrdb_growth", type=int, default=8)
    p.add_argument("--rrdb_blocks", type=int, default=2)
    p.add_argument("--stacked_blocks", type=_ints, default=None,
                   help="0-based RRDB blocks stacked into the context (default: all)")
    p.add_argument("--seg_features", type=int, default=16)
    p.add_argument("--num_bins", type=int, default=256)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--temperature", type=float, default=0.9)
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--note", default="2-core CPU shared with other jobs (timings are noisy; "
                                     "compare the ratios, measured in the same run)")
    p.add_argument("--out", default="runs/benchmarks/cattnflow_speed.json")
    p.add_argument("--attentions", type=lambda s: s.split(","), default=["imap", "itrans"],
                   help="the attentions to time against 'none' (always timed)")
    args = p.parse_args(argv)
    if not args.attentions or any(a not in ATTENTIONS[:-1] for a in args.attentions):
        p.error(f"--attentions must be a comma-separated subset of {ATTENTIONS[:-1]}, "
                f"got {args.attentions}")
    args.attentions = list(dict.fromkeys(args.attentions)) + ["none"]
    if not args.tasks or any(t not in TASKS for t in args.tasks):
        p.error(f"--tasks must be a comma-separated subset of {TASKS}, got {args.tasks}")
    if len(args.hr) != 3 or min(args.hr) < 1:
        p.error(f"--hr must be H,W,C (positive), got {args.hr}")
    if args.repeats < 1 or args.batch < 1:
        p.error("--repeats and --batch must be >= 1")
    if "sr" in args.tasks and (args.scale < 1 or args.hr[0] % args.scale
                               or args.hr[1] % args.scale):
        p.error(f"--scale must divide the HR height and width {args.hr[:2]}, got {args.scale}")

    import jax
    results = run(args)
    out = {"benchmark": "cAttnFlow conditional train step and sampling time, attention "
                        "iMap / iTrans / none (SRFlow's step), issue 17 item 7",
           "note": args.note, "args": vars(args), "results": results,
           "source": {"what": "AttnFlow supplement: test time per image, 8x face SR "
                              "(CelebA 160x160 from 20x20), GPU",
                      "s_per_image": SOURCE_S_PER_IMAGE,
                      "ratio_to_none": {a: SOURCE_S_PER_IMAGE[a] / SOURCE_S_PER_IMAGE["none"]
                                        for a in ("imap", "itrans")}},
           "jax": jax.__version__, "device": str(jax.devices()[0]),
           "device_kind": jax.devices()[0].device_kind, "platform": platform.platform(),
           "cpu_count": os.cpu_count()}
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)
    print(f"wrote {args.out}")
    return out


if __name__ == "__main__":
    main()

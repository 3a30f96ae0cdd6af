r"""MARPS sampling time against image size, and the mAR prior's cost against Glow.

mAR-SCF (supplement Sec. C, Fig. 7) claims that sampling time grows linearly in the image
side ``N``: MARPS runs one sequential step per channel of every level (Lemma A.1), a count
that does not depend on ``N``, and each step is a convolution over ``N^2 / 4^i`` positions,
which a parallel device does in time nearly independent of ``N`` until it is saturated.
A per-pixel autoregressive sampler (PixelCNN-style) needs ``N^2 C`` sequential steps.

This script measures, for ``N`` in ``--sizes`` and ``C`` in ``--channels``:

* ``marps``: ``Flow.sample`` of an mAR-SCF (L=3, affine, ``--steps`` steps per level,
  ``--hidden`` channels, priors of 16 channels in 2 layers) at batch ``--batch``;
* ``pixel_ar``: a per-pixel autoregressive Gaussian sampler with the same kind of work
  per step: a ``lax.scan`` over the ``N^2 C`` pixels in raster order, each step reading a
  causal 5x5 neighbourhood (``dynamic_slice``) into a 2-layer MLP that gives the
  pixel's mean and log-scale;
* ``glow``: ``Flow.sample`` of the Glow of the same depth (Gaussian split priors);

the median wall time of ``--repeats`` calls after compilation, and the least-squares
slope of ``log time`` against ``log N`` for each (1: linear, 2: quadratic). On a CPU, a
convolution's work grows as ``N^2`` at once (no idle parallel units), so the MARPS slope
here is an upper bound of what a GPU shows; the step **counts** are exact: MARPS
``sampling_steps`` vs ``N^2 C``.

Also the training step of the mAR-SCF against the same Glow with Gaussian split priors
(``--train_size``): the prior's overhead as a ratio, for the prior's density as the library
computes it (``MARPrior.standardize``: the step input embedding, the first LSTM layer's
input gates and the output convolution batched over channels, only the hidden-to-hidden
convolutions in the scan) and, measured in the same run, for the straightforward scan over
the step module (``MARPrior.standardize_sequential``, swapped in with
``flax.linen.intercept_methods``): ``prior_overhead_sequential`` against
``prior_overhead``. ``--train_only`` skips the sampling part.

Usage::

    python experiments/benchmarks/mar_sampling.py                     # N in 8,16,32,64
    python experiments/benchmarks/mar_sampling.py --sizes=8,16 --repeats=2   # quick
    python experiments/benchmarks/mar_sampling.py --train_only --train_size=16

Writes ``runs/benchmarks/mar_sampling.json`` (``--out``).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from typing import Dict, List

import numpy as np

from experiments.benchmarks.timing import median_time


def _slope(ns: List[int], ts: List[float]) -> float:
    x, y = np.log(np.asarray(ns, float)), np.log(np.asarray(ts, float))
    return float(np.polyfit(x, y, 1)[0]) if len(ns) > 1 else float("nan")


def pixel_ar_sampler(n: int, c: int, hidden: int = 32, window: int = 5):
    """A per-pixel autoregressive Gaussian sampler: ``N^2 C`` sequential steps."""
    import jax
    import jax.numpy as jnp

    pad = window - 1
    k = jax.random.PRNGKey(0)
    w1 = jax.random.normal(k, (window * window * c, hidden)) * 0.05
    w2 = jax.random.normal(jax.random.fold_in(k, 1), (hidden, 2)) * 0.05
    steps = n * n * c

    def sample(key, batch):
        eps = jax.random.normal(key, (steps, batch))
        canvas = jnp.zeros((batch, n + pad, n + 2 * pad, c))

        def body(canvas, inp):
            t, e = inp
            i, rem = t // (n * c), t % (n * c)
            j, ch = rem // c, rem % c
            patch = jax.lax.dynamic_slice(canvas, (0, i, j, 0), (batch, window, window, c))
            h = jnp.tanh(patch.reshape(batch, -1) @ w1)
            mu, log_s = jnp.split(h @ w2, 2, axis=-1)
            v = mu[:, 0] + jnp.exp(log_s[:, 0]) * e
            canvas = canvas.at[:, i + pad, j + pad, ch].set(v)
            return canvas, None

        canvas, _ = jax.lax.scan(body, canvas, (jnp.arange(steps), eps))
        return canvas[:, pad:, pad:pad + n, :]

    return jax.jit(sample, static_argnums=1), steps


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="8,16,32,64")
    p.add_argument("--channels", default="1,3")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=2, help="flow steps per level")
    p.add_argument("--hidden", type=int, default=32)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--train_size", type=int, default=32)
    p.add_argument("--train_only", action="store_true", help="skip the sampling part")
    p.add_argument("--out", default="runs/benchmarks/mar_sampling.json")
    args = p.parse_args()

    from jaxflows.perf import configure_cpu
    configure_cpu()
    import flax.linen as nn
    import jax
    import jax.numpy as jnp
    import optax

    from jaxflows.distributions.mar import MARPrior
    from jaxflows.models import glow, mar_scf
    from jaxflows.models.mar_scf import sampling_steps

    sizes = [int(s) for s in args.sizes.split(",")]
    chans = [int(s) for s in args.channels.split(",")]
    prior = dict(lstm_features=16, lstm_layers=2, kernel_sizes=3, dilations=1)
    arch = dict(levels=3, steps_per_level=args.steps, hidden_channels=args.hidden)
    rows: List[Dict] = []
    for c in ([] if args.train_only else chans):
        for n in sizes:
            shape = (n, n, c)
            x = jax.random.uniform(jax.random.PRNGKey(0), (args.batch,) + shape, maxval=256.0)
            row = dict(n=n, c=c, marps_steps=sampling_steps(shape, 3), pixel_ar_steps=n * n * c)
            for name, flow in (("marps", mar_scf(shape, **arch, **prior)),
                               ("glow", glow(shape, **arch))):
                v = jax.jit(flow.init)(jax.random.PRNGKey(1), x)
                f = jax.jit(lambda v, k, flow=flow: flow.apply(
                    v, args.batch, temperature=0.7, method=flow.sample, rngs={"sample": k}))
                row[name] = median_time(lambda f=f, v=v: f(v, jax.random.PRNGKey(2)), args.repeats)
            sampler, _ = pixel_ar_sampler(n, c)
            row["pixel_ar"] = median_time(lambda s=sampler: s(jax.random.PRNGKey(3), args.batch),
                                    args.repeats)
            rows.append(row)
            print(f"N={n:3d} C={c}: marps {row['marps']:.4f} s ({row['marps_steps']} steps), "
                  f"glow {row['glow']:.4f} s, pixel AR {row['pixel_ar']:.4f} s "
                  f"({row['pixel_ar_steps']} steps)", flush=True)
    slopes = {}
    for c in ([] if args.train_only else chans):
        sub = [r for r in rows if r["c"] == c]
        for name in ("marps", "glow", "pixel_ar"):
            slopes[f"{name}_c{c}"] = _slope([r["n"] for r in sub], [r[name] for r in sub])
    print("slopes of log time vs log N:", json.dumps({k: round(v, 2) for k, v in slopes.items()}))

    # Training step: mAR prior vs Glow's Gaussian split prior, same flow.
    n = args.train_size
    shape = (n, n, 1)
    x = jax.random.uniform(jax.random.PRNGKey(0), (args.batch * 4,) + shape, maxval=256.0)
    train = {}

    def sequential(next_fun, fargs, fkwargs, context):
        """Routes the prior's density to the straightforward scan over the step module."""
        if isinstance(context.module, MARPrior) and context.method_name == "standardize":
            return context.module.standardize_sequential(*fargs, **fkwargs)
        return next_fun(*fargs, **fkwargs)

    flows = (("mar_scf", mar_scf(shape, **arch, **prior), False),
             ("mar_scf_sequential", mar_scf(shape, **arch, **prior), True),
             ("glow", glow(shape, **arch), False))
    for name, flow, seq in flows:
        v = jax.jit(flow.init)(jax.random.PRNGKey(1), x)
        tx = optax.adam(1e-3)
        opt = tx.init(v["params"])

        @jax.jit
        def step(params, opt, flow=flow, v=v, tx=tx, seq=seq):
            def loss(p):
                if seq:
                    with nn.intercept_methods(sequential):
                        return -jnp.mean(flow.apply({**v, "params": p}, x))
                return -jnp.mean(flow.apply({**v, "params": p}, x))
            value, g = jax.value_and_grad(loss)(params)
            up, opt = tx.update(g, opt, params)
            return optax.apply_updates(params, up), opt, value

        train[name] = median_time(lambda step=step, v=v, opt=opt: step(v["params"], opt),
                                  args.repeats)
        train[name + "_loss"] = float(step(v["params"], opt)[2])
    ratio = train["mar_scf"] / train["glow"]
    ratio_seq = train["mar_scf_sequential"] / train["glow"]
    print(f"train step at {n}x{n}x1, batch {args.batch * 4}: mar_scf {train['mar_scf']:.4f} s "
          f"(straightforward scan: {train['mar_scf_sequential']:.4f} s), glow "
          f"{train['glow']:.4f} s: mAR prior overhead {ratio:.2f}x (straightforward scan: "
          f"{ratio_seq:.2f}x); losses {train['mar_scf_loss']:.4f} / "
          f"{train['mar_scf_sequential_loss']:.4f}")
    out = dict(rows=rows, slopes=slopes, train=train, prior_overhead=ratio,
               prior_overhead_sequential=ratio_seq,
               machine=f"{platform.processor() or platform.machine()} ({os.cpu_count()} cores)",
               jax=jax.__version__, backend=jax.default_backend(),
               date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), args=vars(args))
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)
    print(f"wrote {args.out}")
    assert all(math.isfinite(r["marps"]) for r in rows)
    assert math.isclose(train["mar_scf_loss"], train["mar_scf_sequential_loss"],
                        rel_tol=1e-4, abs_tol=1e-3)


if __name__ == "__main__":
    main()

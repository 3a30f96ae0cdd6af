r"""Peak memory of a residual-flow training step against the number of series terms.

Compares the two ways of differentiating the power-series log-det of residual blocks
(:mod:`jaxflows.ops.logdet`):

* **neumann**: :func:`~jaxflows.ops.logdet_neumann` (Chen et al. 2019, Thm 2): the series
  runs under ``stop_gradient`` in a ``lax.while_loop`` and one differentiable vjp per probe
  gives the gradient, so memory should not depend on the number of terms;
* **naive**: backprop through the ``n``-term series (:func:`~jaxflows.ops.logdet_series`,
  i-ResNet), which stores the intermediate vectors and vjp residuals of every term.

Both use exactly ``n`` terms (``distribution=None`` for the Neumann estimator) so the
two compute the same value with the same probes and only the differentiation differs.

Model: a stack of ``--blocks`` residual blocks ``x + g(x)`` on ``--shape`` (default
14x14x4, MNIST after one squeeze), ``g`` = LipSwish -> conv 3x3 -> LipSwish -> conv 1x1 ->
LipSwish -> conv 3x3 (Residual Flows' pre-activation branch, ``--hidden`` channels), each
kernel divided by ``max(1, sigma / coeff)`` with ``sigma`` the operator norm of the
convolution estimated by one power-iteration step from a stored vector (as in training),
the blocks under ``lax.scan``. The training step computes the negative log-likelihood
under a standard-normal base, its gradient, and an SGD update.

Memory comes from XLA's compiled memory analysis (``jax.jit(step).lower(...).compile()
.memory_analysis()``), not from a run: ``temp`` is the scratch memory of the step
(activations saved for the backward pass live here), ``peak`` = arguments + outputs +
temp - aliased bytes. On CPU this is exact for the compiled program and independent of
machine load.

Usage::

    # table on stdout, JSON in runs/benchmarks/memory.json
    python experiments/benchmarks/memory.py
    # --run also times a step
    python experiments/benchmarks/memory.py --terms=2,4,8 --run --out=/tmp/memory.json
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from typing import Dict, List, Sequence

import jax
import jax.numpy as jnp
from jax import lax

from jaxflows.ops import logdet_neumann, logdet_series

METHODS = ("neumann", "naive")


def _conv(x, w):
    return lax.conv_general_dilated(
        x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )


def _lipswish(x, beta_raw):
    beta = jax.nn.softplus(beta_raw)
    return x * jax.nn.sigmoid(beta * x) / 1.1


def _normalised(w, u, coeff):
    """One power-iteration step on the convolution operator (u: [1, H, W, Cin] unit)."""
    out, vjp = jax.vjp(lambda z: _conv(z, w), lax.stop_gradient(u))
    v = out / (jnp.linalg.norm(out) + 1e-12)
    u_new = vjp(lax.stop_gradient(v))[0]
    u_new = lax.stop_gradient(u_new / (jnp.linalg.norm(u_new) + 1e-12))
    sigma = jnp.sum(lax.stop_gradient(v) * _conv(u_new, w))
    return w / jnp.maximum(1.0, sigma / coeff), u_new


def init_params(key, num_blocks: int, shape: Sequence[int], hidden: int):
    """Stacked parameters of ``num_blocks`` blocks (leading axis) and power-iteration vectors."""
    h, w, c = shape
    kernels = [(3, 3, c, hidden), (1, 1, hidden, hidden), (3, 3, hidden, c)]
    keys = jax.random.split(key, 2 * len(kernels))
    params, state = {}, {}
    for i, k in enumerate(kernels):
        fan_in = k[0] * k[1] * k[2]
        params[f"w{i}"] = jax.random.normal(keys[2 * i], (num_blocks,) + k) / math.sqrt(fan_in)
        params[f"b{i}"] = jnp.zeros((num_blocks, k[3]))
        params[f"beta{i}"] = jnp.full((num_blocks,), 0.5)
        u = jax.random.normal(keys[2 * i + 1], (num_blocks, 1, h, w, k[2]))
        norm = jnp.linalg.norm(u.reshape(num_blocks, -1), axis=1)
        state[f"u{i}"] = u / norm[:, None, None, None, None]
    return params, state


def make_step(method: str, n_terms: int, coeff: float = 0.98, lr: float = 1e-3):
    """Training step ``(params, state, x, key) -> (params, state, loss)``."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")

    def block(p, s, x, key):
        ws, new_s = [], {}
        for i in range(3):
            w, new_s[f"u{i}"] = _normalised(p[f"w{i}"], s[f"u{i}"], coeff)
            ws.append(w)

        def g(q, z):
            for i in range(3):
                z = _conv(_lipswish(z, q["beta"][i]), q["w"][i]) + q["b"][i]
            return z

        q = {
            "w": ws,
            "b": [p[f"b{i}"] for i in range(3)],
            "beta": [p[f"beta{i}"] for i in range(3)],
        }
        if method == "neumann":
            gx, ld = logdet_neumann(g, q, x, key, n_exact_terms=n_terms, distribution=None)
        else:
            gx, ld = logdet_series(g, q, x, key, n_terms=n_terms)
        return x + gx, ld, new_s

    def loss_fn(params, state, x, key):
        num_blocks = jax.tree_util.tree_leaves(params)[0].shape[0]

        def body(carry, inp):
            z, total = carry
            p, s, k = inp
            z, ld, s_new = block(p, s, z, k)
            return (z, total + ld), s_new

        keys = jax.random.split(key, num_blocks)
        init = (x, jnp.zeros(x.shape[0], x.dtype))
        (z, total), new_state = lax.scan(body, init, (params, state, keys))
        d = math.prod(x.shape[1:])
        sq = jnp.sum(z.reshape(z.shape[0], -1) ** 2, -1)
        log_prob = -0.5 * sq - 0.5 * d * math.log(2 * math.pi) + total
        return -jnp.mean(log_prob) / d, new_state

    def step(params, state, x, key):
        (loss, new_state), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, state, x, key)
        params = jax.tree_util.tree_map(lambda a, g: a - lr * g, params, grads)
        return params, new_state, loss

    return step


def measure(method: str, n_terms: int, *, blocks: int, shape: Sequence[int], hidden: int,
            batch: int, run: bool = False) -> Dict[str, float]:
    params, state = init_params(jax.random.PRNGKey(0), blocks, shape, hidden)
    x = jax.random.normal(jax.random.PRNGKey(1), (batch,) + tuple(shape))
    key = jax.random.PRNGKey(2)
    t0 = time.perf_counter()
    compiled = jax.jit(make_step(method, n_terms)).lower(params, state, x, key).compile()
    compile_s = time.perf_counter() - t0
    mem = compiled.memory_analysis()
    if mem is None:
        raise RuntimeError("XLA memory analysis is not available on this backend")
    out = {
        "method": method, "n_terms": n_terms,
        "temp_bytes": int(mem.temp_size_in_bytes),
        "argument_bytes": int(mem.argument_size_in_bytes),
        "output_bytes": int(mem.output_size_in_bytes),
        "alias_bytes": int(mem.alias_size_in_bytes),
        "compile_s": round(compile_s, 2),
    }
    out["peak_bytes"] = (
        out["argument_bytes"] + out["output_bytes"] + out["temp_bytes"] - out["alias_bytes"]
    )
    if run:
        res = compiled(params, state, x, key)
        jax.block_until_ready(res)
        t0 = time.perf_counter()
        res = compiled(params, state, x, key)
        jax.block_until_ready(res)
        out["step_s"] = round(time.perf_counter() - t0, 3)
        out["loss"] = float(res[2])
    return out


def format_table(rows: List[Dict[str, float]]) -> str:
    mb = lambda b: f"{b / 2 ** 20:9.1f}"
    by = {(r["method"], r["n_terms"]): r for r in rows}
    terms = sorted({r["n_terms"] for r in rows})
    head = (f"{'terms':>5} | {'neumann temp MB':>15} {'peak MB':>9}"
            f" | {'naive temp MB':>13} {'peak MB':>9}"
            " | naive/neumann peak")
    lines = [head, "-" * len(head)]
    for n in terms:
        a, b = by.get(("neumann", n)), by.get(("naive", n))
        cells = [f"{n:>5}"]
        cells.append(
            f"{mb(a['temp_bytes']):>15} {mb(a['peak_bytes'])}" if a else f"{'-':>15} {'-':>9}"
        )
        cells.append(
            f"{mb(b['temp_bytes']):>13} {mb(b['peak_bytes'])}" if b else f"{'-':>13} {'-':>9}"
        )
        ratio = f"{b['peak_bytes'] / a['peak_bytes']:.2f}" if a and b else "-"
        lines.append(" | ".join(cells) + f" | {ratio:>6}")
    return "\n".join(lines)


def main(argv=None) -> Dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--terms", default="2,4,8,16,32",
                        help="comma-separated numbers of series terms")
    parser.add_argument("--blocks", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--shape", default="14,14,4", help="H,W,C of the input")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--run", action="store_true", help="also run each step once and time it")
    parser.add_argument("--out", default="runs/benchmarks/memory.json", help="JSON output path")
    args = parser.parse_args(argv)
    terms = [int(t) for t in args.terms.split(",") if t]
    shape = tuple(int(s) for s in args.shape.split(","))
    methods = [m for m in args.methods.split(",") if m]
    if len(shape) != 3 or any(s < 1 for s in shape):
        parser.error(f"--shape must be H,W,C with positive sizes, got {args.shape!r}")
    if not terms or any(t < 1 for t in terms):
        parser.error(f"--terms must be positive integers, got {args.terms!r}")
    for m in methods:
        if m not in METHODS:
            parser.error(f"--methods: unknown method {m!r}, choose from {METHODS}")
    rows = []
    for n in terms:
        for m in methods:
            row = measure(m, n, blocks=args.blocks, shape=shape, hidden=args.hidden,
                          batch=args.batch, run=args.run)
            rows.append(row)
            print(f"  {m:8s} n={n:3d}: temp {row['temp_bytes'] / 2**20:8.1f} MB, "
                  f"peak {row['peak_bytes'] / 2**20:8.1f} MB (compile {row['compile_s']} s)",
                  file=sys.stderr, flush=True)
    result = {
        "config": {"blocks": args.blocks, "hidden": args.hidden, "batch": args.batch,
                   "shape": shape, "terms": terms, "dtype": "float32"},
        "environment": {"jax": jax.__version__, "backend": jax.default_backend(),
                        "device": str(jax.devices()[0]), "python": platform.python_version()},
        "rows": rows,
    }
    print(f"Residual-flow training step, {args.blocks} blocks on "
          f"{args.batch}x{'x'.join(map(str, shape))}, "
          f"hidden {args.hidden} (XLA compiled memory analysis, {jax.default_backend()})")
    print(format_table(rows))
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()

"""Minor page faults per call of a jitted function with and without
:func:`jaxflows.perf.configure_cpu`'s allocator setting (a measurement, not a test).

With glibc's defaults, XLA's per-call scratch buffers above the mmap threshold are
``mmap``-ed and ``munmap``-ed on every call, so each call touches fresh pages: a
``[4096, 4096]`` float32 product (64 MB of scratch) costs about 16,000 minor faults per
call. ``configure_cpu`` sets ``M_MMAP_MAX = 0`` and a high trim threshold, so the scratch
memory stays mapped once the heap has grown. Each mode runs in a fresh process (the
setting only applies before JAX creates its backend); the figure is the fewest faults of
one call among 6 after 5 warm-up calls (a call may still grow the heap once).

Usage::

    .venv-bench/bin/python experiments/benchmarks/page_faults.py
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

PROBE = textwrap.dedent("""
    import resource, sys
    if sys.argv[1] == "tuned":
        from jaxflows.perf import configure_cpu
        configure_cpu(vector_width=False)
    import jax, jax.numpy as jnp
    f = jax.jit(lambda x, w: jnp.sum(jnp.sin(x @ w)))
    x, w = jnp.ones((4096, 64), jnp.float32), jnp.ones((64, 4096), jnp.float32)
    for _ in range(5):
        f(x, w).block_until_ready()
    per_call = []
    for _ in range(6):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        f(x, w).block_until_ready()
        per_call.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    print("faults", min(per_call))
""")


def faults(mode: str) -> int:
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env.pop("JAXFLOWS_NO_CPU_TUNING", None)
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True,
                         env=env, timeout=600, check=True)
    return int(out.stdout.split("faults")[-1].split()[0])


def main() -> None:
    result = {mode: faults(mode) for mode in ("default", "tuned")}
    print(json.dumps({"minor_page_faults_per_call": result}))


if __name__ == "__main__":
    main()

"""jaxflows.perf.configure_cpu: its effect (no page faults from XLA's per-call scratch
buffers once the heap has grown), its opt-out and its warning when called too late.
The effect is checked in fresh processes, where the settings can still apply.
"""
import os
import subprocess
import sys
import textwrap

import jax.numpy as jnp
import pytest

from jaxflows.perf import configure_cpu

_PROBE = textwrap.dedent("""
    import os, resource, sys
    if sys.argv[1] == "tuned":
        from jaxflows.perf import configure_cpu
        print("config", configure_cpu(vector_width=False))
    import jax, jax.numpy as jnp
    # a [4096, 4096] float32 product (64 MB of scratch per call), then its sine's sum
    f = jax.jit(lambda x, w: jnp.sum(jnp.sin(x @ w)))
    x, w = jnp.ones((4096, 64), jnp.float32), jnp.ones((64, 4096), jnp.float32)
    for _ in range(5):
        f(x, w).block_until_ready()
    per_call = []                # minor page faults of each of the next calls
    for _ in range(6):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        f(x, w).block_until_ready()
        per_call.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    print("faults", min(per_call))
""")


def _faults(mode):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env.pop("JAXFLOWS_NO_CPU_TUNING", None)
    out = subprocess.run([sys.executable, "-c", _PROBE, mode], capture_output=True, text=True,
                         env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return int(out.stdout.split("faults")[-1].split()[0])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc allocator setting")
def test_tuned_allocator_removes_per_call_page_faults():
    # Fewest faults of one call among 6: 64 MB of fresh pages is ~16,000 minor faults per
    # call with glibc's defaults (mmap/munmap every call); with the setting the scratch
    # memory stays mapped (a call may still grow the heap once, hence the minimum).
    untuned, tuned = _faults("default"), _faults("tuned")
    assert untuned > 8_000, untuned
    assert tuned < 1_000, (tuned, untuned)


def test_opt_out_and_late_call_warning(monkeypatch):
    jnp.ones(2).block_until_ready()       # the backend exists in this process
    monkeypatch.setenv("JAXFLOWS_NO_CPU_TUNING", "1")
    assert configure_cpu()["disabled"] is True
    monkeypatch.delenv("JAXFLOWS_NO_CPU_TUNING")
    monkeypatch.setenv("XLA_FLAGS", os.environ.get("XLA_FLAGS", ""))   # restored afterwards
    with pytest.warns(UserWarning, match="after JAX created its backend"):
        configure_cpu(host_allocator=False, vector_width=False)

"""jaxflows.perf.configure_cpu: the allocator setting applied in a fresh process, its
opt-out and its warning when called too late. Its effect on page faults is a measurement
(experiments/benchmarks/page_faults.py), not a test.
"""
import json
import os
import subprocess
import sys
import textwrap

import jax.numpy as jnp
import pytest

from jaxflows.perf import configure_cpu

_PROBE = textwrap.dedent("""
    import json, os
    from jaxflows.perf import configure_cpu
    first = configure_cpu(vector_width=False)
    again = configure_cpu(vector_width=False)       # idempotent
    import jax.numpy as jnp
    jnp.ones(2).block_until_ready()
    print(json.dumps({"first": first, "again": again, "flags": os.environ.get("XLA_FLAGS", "")}))
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc allocator setting")
def test_fresh_process_applies_the_allocator_setting():
    """In a fresh process (before any backend) the glibc setting is applied (every mallopt
    call succeeded) and reported; a second call changes nothing. Its effect on page faults
    is measured, not asserted: experiments/benchmarks/page_faults.py.
    """
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="")
    env.pop("JAXFLOWS_NO_CPU_TUNING", None)
    out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True,
                         env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["first"]["host_allocator"] is True, got
    assert got["again"] == got["first"], got
    assert "prefer_vector_width" not in got["flags"]     # vector_width=False: no flag


def test_opt_out_and_late_call_warning(monkeypatch):
    jnp.ones(2).block_until_ready()       # the backend exists in this process
    monkeypatch.setenv("JAXFLOWS_NO_CPU_TUNING", "1")
    assert configure_cpu()["disabled"] is True
    monkeypatch.delenv("JAXFLOWS_NO_CPU_TUNING")
    monkeypatch.setenv("XLA_FLAGS", os.environ.get("XLA_FLAGS", ""))   # restored afterwards
    with pytest.warns(UserWarning, match="after JAX created its backend"):
        configure_cpu(host_allocator=False, vector_width=False)

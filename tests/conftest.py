"""Test-session settings shared by every test module.

* CPU only: tests never probe for accelerators.
* ``jax_threefry_partitionable=False``: compiling the partitionable threefry PRNG costs
  ~2.5 s of CPU for every new array shape drawn outside ``jit`` (parameter init,
  perturbations); the classic threefry compiles ~6x faster. Random values differ, but
  every test derives its expectations from the values it draws.
* ``--xla_backend_optimization_level=0`` (appended to ``XLA_FLAGS``, inherited by the
  launchers' subprocesses): the suite's time is almost all XLA compilation of tiny
  programs, where LLVM's optimisation passes cost more than they save (about a quarter of
  the CPU time of a registry case). Floating-point semantics are unchanged (no fast-math
  either way). ``JAXFLOWS_TEST_XLA_OPT=1`` keeps XLA's default level.
"""
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
if os.environ.get("JAXFLOWS_TEST_XLA_OPT", "") in ("", "0") and (
        "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", "")):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + " --xla_backend_optimization_level=0").strip()

import jax  # noqa: E402

jax.config.update("jax_threefry_partitionable", False)

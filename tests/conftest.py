"""Test-session settings shared by every test module.

* CPU only: tests never probe for accelerators.
* ``jax_threefry_partitionable=False``: compiling the partitionable threefry PRNG costs
  ~2.5 s of CPU for every new array shape drawn outside ``jit`` (parameter init,
  perturbations); the classic threefry compiles ~6x faster. Random values differ, but
  every test derives its expectations from the values it draws.

The float64 checks compile without LLVM optimisation (``jaxflows.testing.jit_check``); the
code under test (float32 training, sampling, launchers) compiles at XLA's default level,
as users run it.
"""
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402

jax.config.update("jax_threefry_partitionable", False)

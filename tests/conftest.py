"""Test-session settings shared by every test module.

* CPU only: tests never probe for accelerators.
* ``jax_threefry_partitionable=False``: compiling the partitionable threefry PRNG costs
  ~2.5 s of CPU for every new array shape drawn outside ``jit`` (parameter init,
  perturbations); the classic threefry compiles ~6x faster. Random values differ, but
  every test derives its expectations from the values it draws.
"""
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402

jax.config.update("jax_threefry_partitionable", False)

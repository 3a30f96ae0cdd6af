"""Host runtime settings that make XLA's CPU backend fast for flow training.

Two process-wide settings, measured on this project's 2-core AVX-512 CPU machine
(``docs/performance.md``); both must be made **before JAX runs its first
computation**, so launch scripts call :func:`configure_cpu` first thing::

    from jaxflows.perf import configure_cpu
    configure_cpu()          # before any jax computation
    ...

* **Host allocator.** XLA allocates the temporary buffer of a compiled program
  (1.2 GB for the Glow L=2, K=16, hidden-256 training step) anew on every call.
  glibc serves allocations this large with ``mmap`` and returns them with
  ``munmap``, so every step first-touches every page again: ~300,000 minor page
  faults and ~0.8 CPU-seconds of kernel time per step on that Glow, about a third of
  the step. :func:`configure_cpu` sets glibc's ``mallopt`` options so that large
  blocks come from the heap and stay mapped once freed (``M_MMAP_MAX = 0``,
  ``M_TRIM_THRESHOLD = 2^31 - 1``, one arena ``M_ARENA_MAX = 1`` so that XLA's
  worker threads, which would otherwise fall back to ``mmap`` in their own
  size-limited arenas, share the main heap). The price: the process keeps the
  peak of its heap until it exits, the usual behaviour of a training process.
  It only takes effect for threads that had not yet allocated: call it before the
  first JAX computation (importing jax, flax or jaxflows is fine).
* **Vector width.** ``--xla_cpu_prefer_vector_width=512`` in ``XLA_FLAGS`` on CPUs
  with AVX-512 (XLA's default is 256): about 13 % faster Glow training steps there.
  XLA reads ``XLA_FLAGS`` when its first backend is created.

Nothing here changes results beyond float rounding of vectorised reductions, and
nothing applies on GPU/TPU backends except the host allocator setting, which is
harmless there. ``JAXFLOWS_NO_CPU_TUNING=1`` in the environment turns
:func:`configure_cpu` into a no-op (for A/B measurements).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
import warnings
from typing import Dict

__all__ = ["configure_cpu", "backend_initialised"]

# glibc's mallopt parameter numbers (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8

_VECTOR_FLAG = "--xla_cpu_prefer_vector_width"
_DONE: Dict[str, object] = {}


def backend_initialised() -> bool:
    """Whether JAX has already created an XLA backend (flags and allocator are then fixed)."""
    if "jax" not in sys.modules:
        return False
    try:
        from jax._src import xla_bridge
        return bool(getattr(xla_bridge, "_backends", {}))
    except Exception:  # private API moved: assume not.
        return False


def _cpu_has_avx512() -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return " avx512f " in f" {line.split(':', 1)[1].strip()} "
    except OSError:
        pass
    return False


def _tune_glibc_malloc() -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):   # not glibc (musl, ...)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    ok = mallopt(_M_ARENA_MAX, 1) == 1
    ok &= mallopt(_M_MMAP_MAX, 0) == 1
    ok &= mallopt(_M_TRIM_THRESHOLD, 2 ** 31 - 1) == 1
    return bool(ok)


def configure_cpu(*, host_allocator: bool = True, vector_width: bool = True) -> Dict[str, object]:
    """Applies the CPU runtime settings described in the module docstring.

    Idempotent; call it before the first JAX computation. Warns (and still returns)
    if a JAX backend already exists, in which case ``XLA_FLAGS`` can no longer change
    and the allocator setting may not reach XLA's threads.

    Args:
      host_allocator: tune glibc's allocator (Linux/glibc only; skipped elsewhere).
      vector_width: add ``--xla_cpu_prefer_vector_width=512`` to ``XLA_FLAGS`` when
        the CPU has AVX-512 and the variable does not already set a width.

    Returns:
      ``{"host_allocator": bool, "xla_flags": str}``: what is in effect.
    """
    if os.environ.get("JAXFLOWS_NO_CPU_TUNING", "") not in ("", "0"):
        return {"host_allocator": False, "xla_flags": os.environ.get("XLA_FLAGS", ""),
                "disabled": True}
    if backend_initialised():
        warnings.warn("jaxflows.perf.configure_cpu() called after JAX created its backend: "
                      "XLA_FLAGS can no longer change and the allocator setting may not "
                      "apply. Call it before the first JAX computation.", stacklevel=2)
    if host_allocator and "host_allocator" not in _DONE:
        _DONE["host_allocator"] = _tune_glibc_malloc()
    if vector_width and "vector_width" not in _DONE:
        flags = os.environ.get("XLA_FLAGS", "")
        if _VECTOR_FLAG not in flags and _cpu_has_avx512():
            os.environ["XLA_FLAGS"] = f"{flags} {_VECTOR_FLAG}=512".strip()
        _DONE["vector_width"] = True
    return {"host_allocator": bool(_DONE.get("host_allocator", False)),
            "xla_flags": os.environ.get("XLA_FLAGS", "")}

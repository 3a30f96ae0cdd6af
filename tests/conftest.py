"""Test-session settings shared by every test module.

* CPU only: tests never probe for accelerators.
* ``jax_threefry_partitionable=False``: compiling the partitionable threefry PRNG costs
  ~2.5 s of CPU for every new array shape drawn outside ``jit`` (parameter init,
  perturbations); the classic threefry compiles ~6x faster. Random values differ, but
  every test derives its expectations from the values it draws.
* Compiling was two thirds of the suite's time (``JAXFLOWS_TEST_PROFILE`` below), so
  every program compiles with cheap XLA CPU settings, appended to ``XLA_FLAGS`` and
  inherited by the launchers the tests start:

  - ``--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true``:
    no LLVM optimisation passes;
  - ``--xla_cpu_use_fusion_emitters=false``: fusions are emitted by XLA's classic
    elemental emitter instead of the newer MLIR fusion emitters, whose lowering pipeline
    is the larger part of a small program's compile time;
  - ``--xla_cpu_use_xnnpack=false``: dots and convolutions run on XLA's own (Eigen)
    kernels instead of XNNPACK graphs built per program;
  - ``--xla_cpu_parallel_codegen_split_count=1``: one LLVM module per program (the
    split exists to compile on several threads; the 2 workers already use both cores).

  Together they halve the suite's compile time (1,205 s to 429 s summed over the
  workers, 2026-12-03). The programs compute the same operations; float32 results may
  differ from the default settings' in the last bits (fused multiply-adds, summation
  order), which no test relies on. Set ``JAXFLOWS_TEST_XLA_DEFAULT=1`` to run the suite
  with XLA's defaults, as users run the code (same tests, same tolerances).
* ``JAXFLOWS_TEST_CACHE=1``: a persistent compilation cache shared by the test workers
  and the processes they start (``JAX_COMPILATION_CACHE_DIR``; a fresh temporary
  directory per session unless set, removed at the end). Off by default: with the
  settings above programs compile quickly, few repeat across tests, and writing the
  cache cost more than it saved (a sample of the suite ran 18% faster without it).
"""
import atexit
import importlib.metadata
import os
import shutil
import tempfile

os.environ.setdefault("JAX_PLATFORMS", "cpu")

CHEAP_XLA_FLAGS = ("--xla_backend_optimization_level=0",
                   "--xla_llvm_disable_expensive_passes=true")
# XLA aborts on a flag it does not know: the CPU-backend flags below exist in the pinned
# jaxlib (requirements.txt) and are added for that series only.
if importlib.metadata.version("jaxlib").startswith("0.10."):
    CHEAP_XLA_FLAGS += ("--xla_cpu_use_fusion_emitters=false",
                        "--xla_cpu_use_xnnpack=false",
                        "--xla_cpu_parallel_codegen_split_count=1")

if os.environ.get("JAXFLOWS_TEST_XLA_DEFAULT", "0") in ("", "0"):
    _flags = os.environ.get("XLA_FLAGS", "").split()
    for _flag in CHEAP_XLA_FLAGS:
        if not any(f.split("=")[0] == _flag.split("=")[0] for f in _flags):
            _flags.append(_flag)
    os.environ["XLA_FLAGS"] = " ".join(_flags)

if (os.environ.get("JAXFLOWS_TEST_CACHE", "0") not in ("", "0")
        and not os.environ.get("JAX_COMPILATION_CACHE_DIR")):
    # Made by the first process that loads this file (pytest-xdist's controller, or
    # pytest itself); the workers and launchers inherit the variable.
    _cache = tempfile.mkdtemp(prefix="jaxflows-tests-xla-cache-")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache
    atexit.register(shutil.rmtree, _cache, ignore_errors=True)

import jax  # noqa: E402

if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
    jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.3)
jax.config.update("jax_threefry_partitionable", False)


# --- Optional diagnostics of where the suite's time goes (off by default) -------------
# JAXFLOWS_TEST_PROFILE=<dir>: every test worker appends one JSON line per test to
# <dir>/<worker>.jsonl with its wall time and the seconds JAX spent tracing, lowering and
# compiling (XLA backend) during it, and the compile seconds the persistent compilation
# cache saved (when JAX_COMPILATION_CACHE_DIR is set). Summarise with
# experiments/benchmarks/test_profile.py.
_PROFILE_DIR = os.environ.get("JAXFLOWS_TEST_PROFILE")
if _PROFILE_DIR:
    import json
    import time

    import pytest
    from jax import monitoring

    _EVENTS = {
        "/jax/core/compile/jaxpr_trace_duration": "trace",
        "/jax/core/compile/jaxpr_to_mlir_module_duration": "lower",
        "/jax/core/compile/backend_compile_duration": "compile",
        "/jax/compilation_cache/compile_time_saved_sec": "saved",
        "/jax/compilation_cache/cache_retrieval_time_sec": "retrieve",
    }
    _acc = {}

    def _listen(event, duration, **kwargs):
        key = _EVENTS.get(event)
        if key:
            _acc[key] = _acc.get(key, 0.0) + float(duration)

    monitoring.register_event_duration_secs_listener(_listen)

    def pytest_runtest_logreport(report):
        if report.failed:
            _acc["failed"] = 1.0

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(item, nextitem):
        _acc.clear()
        t0 = time.perf_counter()
        yield
        row = dict(test=item.nodeid, wall=time.perf_counter() - t0, **_acc)
        os.makedirs(_PROFILE_DIR, exist_ok=True)
        worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
        with open(os.path.join(_PROFILE_DIR, f"{worker}.jsonl"), "a") as f:
            f.write(json.dumps(row) + "\n")

"""Training on 2 processes (``jax.distributed`` on localhost, CPU) equals a 1-process run.

Two processes are launched with :func:`jaxflows.train.distributed.initialize` and a local
coordinator, one CPU device each, and train the tiny Glow of ``tests/test_train.py``
(global batch 16) into one shared work directory. A SIGTERM reaches process 1 alone at
step 2: both stop there with a checkpoint (they agree on the stop). Resumed, they crash
together at step 7 (the last checkpoint is step 4), resume from the checkpoint, which
both restore, and finish.
A third, plain process trains the same config uninterrupted on 1 device. Checked:

* the final parameters (latest checkpoint) and test bits/dim equal the 1-process run's
  (allclose: the gradient all-reduce sums in another order), and both processes hold
  the same parameters;
* each process reads its own half of every global batch (the two halves are the
  1-process batch);
* ``metrics.jsonl`` has each step once (written by process 0 only), with the values
  of the 1-process run;
* processes whose configs differ are refused on both, naming the field; a process
  count that does not fit (process 0 alone of 2) and bad arguments are clear errors.

The child processes inherit the test session's compiler settings (``XLA_FLAGS`` of
``tests/conftest.py``); the comparison is between runs compiled alike. All tests of this
launch (about 40 s of CPU) is checked by one test, ``test_two_processes_equal_one``, whose
checks are the ``check_*`` functions below: as separate tests sharing a module fixture,
pytest-xdist would run the launch once on each worker that got one of them.
"""
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CHILD = r"""
import json, os, signal, sys
import numpy as np
mode, workdir, out = sys.argv[1], sys.argv[2], sys.argv[3]
pid = 0
if mode == "multi":
    pid, port = int(sys.argv[4]), sys.argv[5]
    from jaxflows.train import distributed
    distributed.initialize(f"localhost:{port}", 2, pid, initialization_timeout=120)
elif mode == "alone":
    from jaxflows.train import distributed
    try:
        distributed.initialize(f"localhost:{sys.argv[4]}", 2, 0, initialization_timeout=3)
        print("RESULT " + json.dumps({"error": None}))
    except RuntimeError as e:
        print("RESULT " + json.dumps({"error": str(e)}))
    sys.exit(0)
import jax
from jaxflows import data as jdata
from jaxflows import train as jt
from tests.test_train import tiny_config

res = {"processes": jax.process_count(), "devices": jax.device_count()}
config = tiny_config()
if mode == "multi":
    try:
        jt.prepare_run(tiny_config(seed=jax.process_index()))
        res["config_error"] = None
    except ValueError as e:
        res["config_error"] = str(e)


class Crash(Exception):
    pass


def crash_at_7(step, state):
    if step == 7:
        raise Crash()


def sigterm_on_process_1_at_2(step, state):
    if step == 2 and jax.process_index() == 1:
        os.kill(os.getpid(), signal.SIGTERM)


if mode == "multi":
    res["interrupted"] = jt.train_and_evaluate(config, workdir,
                                               hooks=[sigterm_on_process_1_at_2])
    try:
        jt.train_and_evaluate(config, workdir, hooks=[crash_at_7])
    except Crash:
        res["crashed"] = True
results = jt.train_and_evaluate(config, workdir)
res["test_bpd"] = results["test_bpd"]
run = jt.prepare_run(config, workdir)
state, _, step = jt.restore_for_eval(workdir, jt.abstract_state(run), "checkpoints")
res["step"] = step
flat = np.concatenate([np.ravel(np.asarray(x))
                       for x in jax.tree_util.tree_leaves(jax.device_get(state.params))])
loader = jdata.make_loader(run.train_src, global_batch_size=16, seed=0)
np.savez(out, params=flat, first_batch=next(loader)["image"])
print("RESULT " + json.dumps(res))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _launch(*args):
    # One CPU device per process (no forced host device count); the compiler settings of
    # the test session (tests/conftest.py) are inherited.
    flags = [f for f in os.environ.get("XLA_FLAGS", "").split()
             if not f.startswith("--xla_force_host_platform_device_count")]
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT, XLA_FLAGS=" ".join(flags))
    return subprocess.Popen([sys.executable, "-c", CHILD, *map(str, args)], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def _result(proc, name, timeout=240):
    out, err = proc.communicate(timeout=timeout)
    lines = [line for line in out.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, f"{name} failed:\n{out[-3000:]}\n{err[-6000:]}"
    return json.loads(lines[-1][len("RESULT "):])


def launch_all(tmp):
    """Runs the four child processes (module docstring): ``(results, arrays, metrics)``."""
    port, lone_port = _free_port(), _free_port()
    procs = {
        "multi0": _launch("multi", tmp / "two", tmp / "p0.npz", 0, port),
        "multi1": _launch("multi", tmp / "two", tmp / "p1.npz", 1, port),
        "single": _launch("single", tmp / "one", tmp / "single.npz"),
        "alone": _launch("alone", tmp / "unused", tmp / "unused.npz", lone_port),
    }
    try:
        res = {name: _result(proc, name) for name, proc in procs.items()}
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
    arrays = {name: dict(np.load(tmp / f"{name}.npz")) for name in ("p0", "p1", "single")}
    metrics = {name: [json.loads(line) for line in open(tmp / name / "metrics.jsonl")]
               for name in ("one", "two")}
    return res, arrays, metrics


def test_two_processes_equal_one(tmp_path):
    runs = launch_all(tmp_path)
    check_equal_to_one_process(runs)
    check_each_process_reads_its_own_shard(runs)
    check_metrics_logged_once(runs)
    check_disagreeing_configs_are_refused_on_every_process(runs)
    check_missing_process_is_a_clear_error(runs)


def check_equal_to_one_process(runs):
    """Both processes stop, crash and resume together and end with the 1-process run's
    parameters and test bits/dim.
    """
    res, arrays, _ = runs
    for name in ("multi0", "multi1"):
        assert res[name]["processes"] == 2 and res[name]["devices"] == 2
        # a signal to one process stops both at the same step
        assert res[name]["interrupted"] == {"interrupted": True, "step": 2,
                                            "signal": "SIGTERM"}
        assert res[name]["crashed"] and res[name]["step"] == 10
    assert res["single"]["processes"] == 1 and res["single"]["step"] == 10
    # both processes restored and hold the same (replicated) parameters
    np.testing.assert_array_equal(arrays["p0"]["params"], arrays["p1"]["params"])
    # ... which are those of one process with the same global batch
    np.testing.assert_allclose(arrays["p0"]["params"], arrays["single"]["params"],
                               rtol=1e-4, atol=1e-5)
    assert not np.array_equal(arrays["p0"]["params"], 0 * arrays["p0"]["params"])
    assert res["multi0"]["test_bpd"] == res["multi1"]["test_bpd"]
    assert abs(res["multi0"]["test_bpd"] - res["single"]["test_bpd"]) < 1e-4


def check_each_process_reads_its_own_shard(runs):
    """Each process reads its half of every global batch."""
    _, arrays, _ = runs
    a, b = arrays["p0"]["first_batch"], arrays["p1"]["first_batch"]
    assert a.shape[0] == b.shape[0] == 8 and not np.array_equal(a, b)
    np.testing.assert_array_equal(np.concatenate([a, b]), arrays["single"]["first_batch"])


def check_metrics_logged_once(runs):
    """``metrics.jsonl`` has each step once, with the 1-process values."""
    _, _, metrics = runs
    steps = [r["step"] for r in metrics["two"]]
    assert steps == sorted(set(steps)) == [r["step"] for r in metrics["one"]]
    for two, one in zip(metrics["two"], metrics["one"]):
        assert two.keys() == one.keys()
        for key in ("train_bpd", "val_bpd"):
            if key in one:
                assert abs(two[key] - one[key]) < 1e-4, (two["step"], key)


def check_disagreeing_configs_are_refused_on_every_process(runs):
    """A config that differs between processes is refused on both, naming it."""
    res, _, _ = runs
    for name in ("multi0", "multi1"):
        error = res[name]["config_error"]
        assert error and "config.seed" in error and "process(es) [1]" in error


def check_missing_process_is_a_clear_error(runs):
    """Process 0 alone of 2 gets a clear error naming the missing process."""
    res, _, _ = runs
    error = res["alone"]["error"]
    assert error and "only 1 of num_processes=2" in error and "missing process_id(s) [1]" in error


@pytest.mark.parametrize("kwargs, match", [
    (dict(coordinator_address="localhost", num_processes=2, process_id=0), "host:port"),
    (dict(coordinator_address="localhost:99999", num_processes=2, process_id=0), "host:port"),
    (dict(coordinator_address="localhost:1234", num_processes=0, process_id=0),
     "num_processes=0"),
    (dict(coordinator_address="localhost:1234", num_processes=2, process_id=2),
     "does not fit num_processes=2"),
])
def test_bad_arguments_are_refused_before_jax_starts(kwargs, match):
    from jaxflows.train import distributed
    with pytest.raises(ValueError, match=match):
        distributed.initialize(**kwargs)


def test_initialize_after_jax_started_is_refused():
    import jax

    from jaxflows.train import distributed
    jax.devices()
    with pytest.raises(RuntimeError, match="must run before"):
        distributed.initialize("localhost:1234", 1, 0)


def test_config_hash_comparison_names_the_field():
    from jaxflows.train import distributed
    from tests.test_train import tiny_config
    a = distributed.config_field_hashes(tiny_config())
    b = distributed.config_field_hashes(tiny_config(**{"optim.learning_rate": 0.5}))
    assert [k for k in a if a[k] != b[k]] == ["optim.learning_rate"]
    # data_dir is host-local: it may differ
    assert distributed.config_field_hashes(tiny_config(**{"dataset.data_dir": "/x"})) == a
    gathered = np.stack([[a[k] for k in a], [b[k] for k in a], [a[k] for k in a]])
    with pytest.raises(ValueError, match=r"config.optim.learning_rate differ .* \[1\]"):
        distributed.check_same_config(tiny_config(), gathered=gathered)
    distributed.check_same_config(tiny_config(), gathered=gathered[[0, 2]])

"""Reliability (issue 13): checkpoint integrity and fallback, Ctrl-C, clean refusals, a
model API that rejects bad values, fixed-point diagnostics, failed runs, skipped steps.

One tiny run (Glow, 1 level, 1 step, 8 channels on digits; 4 steps, a checkpoint every
2) is trained once per module, twice over: uninterrupted (A), and stopped by a real
SIGINT after step 1 then resumed (B). Every corruption case copies A's work directory
and damages the copy: same-size flipped bytes in a data file, a truncated file, garbled
metadata, every checkpoint damaged, a damaged best checkpoint, a leftover step beyond
``keep_checkpoints``. The launchers are called in-process through their ``main(argv)``.
"""
import dataclasses
import json
import logging
import math
import os
import shutil
import signal

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from jax.experimental import checkify

from jaxflows import train as jt
from jaxflows.bijectors import Chain, LogitTransform, ScaleToUnit
from jaxflows.distributions import Flow
from jaxflows.interop import as_functions
from jaxflows.train import checkpoint as ckpt_lib
from tests.test_train import tiny_config as train_tiny_config

pytestmark = pytest.mark.filterwarnings("ignore:jaxflows.perf.configure_cpu")

GLOW_SMALL = "--config=experiments/configs/glow_digits.py:small"


def tiny_config(**overrides):
    """test_train's tiny run without dropout: 4 steps, evaluate and checkpoint every 2."""
    c = train_tiny_config(**{"num_train_steps": 4, "eval_every": 2, "checkpoint_every": 2,
                             **overrides})
    if "model.dropout" not in overrides:
        del c.model["dropout"]             # the factory's default: no dropout
    return c


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A: uninterrupted. B: a real SIGINT after step 1 (checkpoint), then resumed."""
    config = tiny_config()
    a = str(tmp_path_factory.mktemp("A") / "run")
    b = str(tmp_path_factory.mktemp("B") / "run")
    res_a = jt.train_and_evaluate(config, a)

    def ctrl_c_at_1(step, state):
        if step == 1:
            os.kill(os.getpid(), signal.SIGINT)

    first = jt.train_and_evaluate(config, b, hooks=[ctrl_c_at_1])
    steps_after_sigint = steps_of(b)
    res_b = jt.train_and_evaluate(config, b)
    abstract = jt.abstract_state(jt.prepare_run(config, a))
    return dict(config=config, a=a, b=b, res_a=res_a, res_b=res_b, first=first,
                steps_after_sigint=steps_after_sigint, abstract=abstract)


def copy_run(runs, tmp_path) -> str:
    dst = str(tmp_path / "run")
    shutil.copytree(runs["a"], dst)
    return dst


def largest_file(directory: str) -> str:
    files = [os.path.join(r, f) for r, _, fs in os.walk(directory) for f in fs]
    return max(files, key=os.path.getsize)


def flip_bytes(path: str, count: int = 64):
    """Invert ``count`` bytes in the middle of ``path`` (same size, as bit rot would)."""
    data = bytearray(open(path, "rb").read())
    mid = len(data) // 2
    for i in range(mid, min(mid + count, len(data))):
        data[i] ^= 0xFF
    open(path, "wb").write(bytes(data))


def steps_of(work: str, which: str = "checkpoints"):
    return sorted(int(s) for s in os.listdir(os.path.join(work, which)) if s.isdigit())


def leaves_equal(a, b):
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    return len(la) == len(lb) and all(
        np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(la, lb))


def test_every_checkpoint_has_a_verified_manifest(runs):
    work = runs["a"]
    assert steps_of(work) == [2, 4]
    for which in ("checkpoints", "best"):
        for step in steps_of(work, which):
            step_dir = os.path.join(work, which, str(step))
            lines = open(os.path.join(step_dir, ckpt_lib.MANIFEST)).read().splitlines()
            digests = [line for line in lines if not line.startswith("#")]
            # sha256sum format over every file orbax wrote (state data, metadata, ...)
            listed = {line.split("  ", 1)[1] for line in digests}
            assert any(p.startswith("state/") for p in listed)
            assert "meta/metadata" in listed or any(p.startswith("meta/") for p in listed)
            assert all(len(line.split("  ", 1)[0]) == 64 for line in digests)
            assert ckpt_lib.verify_step(step_dir) is None


def test_flipped_bytes_are_detected_and_resume_falls_back_exactly(runs, tmp_path, caplog):
    """Item 1: 64 flipped bytes (same size) in a data file of the latest checkpoint."""
    work = copy_run(runs, tmp_path)
    victim = largest_file(os.path.join(work, "checkpoints", "4", "state"))
    size = os.path.getsize(victim)
    flip_bytes(victim)
    assert os.path.getsize(victim) == size
    rel = os.path.relpath(victim, os.path.join(work, "checkpoints", "4"))
    problem = ckpt_lib.verify_step(os.path.join(work, "checkpoints", "4"))
    assert problem is not None and rel in problem and "SHA-256" in problem

    # read-only restore (evaluate.py, sample.py): reports step 4 and the file, uses step 2
    with caplog.at_level(logging.WARNING, logger="jaxflows.train"):
        state, _, step = jt.restore_for_eval(work, runs["abstract"], "checkpoints")
    assert step == 2 and int(state.step) == 2
    assert any("step 4" in r.getMessage() and rel in r.getMessage() for r in caplog.records)
    assert steps_of(work) == [2, 4]       # nothing moved by a read-only restore

    # resuming the run: falls back to step 2, moves step 4 aside, retrains 3-4 exactly
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="jaxflows.train"):
        results = jt.train_and_evaluate(runs["config"], work)
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "falling back to the checkpoint at step 2" in messages and rel in messages
    assert os.path.isdir(os.path.join(work, "damaged", "checkpoints-4"))
    assert steps_of(work) == [2, 4]
    for k in ("test_bpd", "val_bpd", "best_step", "best_val_bpd"):
        assert results[k] == runs["res_a"][k]
    assert (open(os.path.join(work, "metrics.jsonl")).read()
            == open(os.path.join(runs["a"], "metrics.jsonl")).read())
    a = jt.restore_for_eval(runs["a"], runs["abstract"], "checkpoints")[0]
    b = jt.restore_for_eval(work, runs["abstract"], "checkpoints")[0]
    assert leaves_equal(a, b)


def test_truncated_file_and_garbled_metadata_name_step_and_file(runs, tmp_path, caplog):
    """Item 2: a truncated data file; garbled JSON metadata, with and without manifest."""
    work = copy_run(runs, tmp_path)
    step_dir = os.path.join(work, "checkpoints", "4")
    victim = largest_file(os.path.join(step_dir, "state"))
    with open(victim, "r+b") as f:
        f.truncate(os.path.getsize(victim) // 2)
    problem = ckpt_lib.verify_step(step_dir)
    assert os.path.relpath(victim, step_dir) in problem and "truncated" in problem
    assert jt.restore_for_eval(work, runs["abstract"], "checkpoints")[2] == 2

    work = copy_run(runs, tmp_path / "garbled")
    step_dir = os.path.join(work, "checkpoints", "4")
    with open(os.path.join(step_dir, "meta", "metadata"), "w") as f:
        f.write("{not json")
    assert "meta/metadata" in ckpt_lib.verify_step(step_dir)
    # without the manifest (an older checkpoint) orbax's own error is caught and named
    os.remove(os.path.join(step_dir, ckpt_lib.MANIFEST))
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="jaxflows.train"):
        assert jt.restore_for_eval(work, runs["abstract"], "checkpoints")[2] == 2
    assert any("step 4" in r.getMessage() and "unreadable" in r.getMessage()
               for r in caplog.records)
    # the fingerprint check before a resume skips the damaged step too
    assert jt.read_fingerprint(work)[0] == jt.prepare_run(runs["config"], None).fingerprint


def test_no_intact_checkpoint_is_one_clean_refusal(runs, tmp_path, capsys):
    """Every step damaged: CheckpointError (a ValueError) listing each; launcher exit 2."""
    work = copy_run(runs, tmp_path)
    for step in (2, 4):
        flip_bytes(largest_file(os.path.join(work, "checkpoints", str(step), "state")))
    with pytest.raises(ckpt_lib.CheckpointError, match="step 4 .*step 2"):
        jt.restore_for_eval(work, runs["abstract"], "checkpoints")
    from experiments import evaluate
    code = evaluate.main(["evaluate.py", f"--workdir={work}", "--which=last"])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert code == 2 and len(errors) == 1 and "Traceback" not in err
    assert "checkpoints/4" in errors[0] and "checkpoints/2" in errors[0]


def test_damaged_best_is_reported_and_results_stay_consistent(runs, tmp_path, caplog):
    """A damaged best checkpoint: the last state is evaluated and results.json says so."""
    results = runs["res_a"]
    records = [json.loads(line) for line in open(os.path.join(runs["a"],
                                                              "metrics.jsonl"))]
    # results.json never contradicts metrics.jsonl: best_step's recorded val_bpd
    by_step = {r["step"]: r for r in records}
    assert results["selected"] == "best"
    assert results["best_val_bpd"] == by_step[results["best_step"]]["val_bpd"]
    assert results["best_val_bpd"] == min(r["val_bpd"] for r in records if "val_bpd" in r)
    assert json.load(open(os.path.join(runs["a"], "results.json")))["best_step"] == (
        results["best_step"])

    work = copy_run(runs, tmp_path)
    (best_step,) = steps_of(work, "best")
    flip_bytes(largest_file(os.path.join(work, "best", str(best_step), "state")))
    ckpts = ckpt_lib.Checkpoints(work, 2)
    with caplog.at_level(logging.WARNING, logger="jaxflows.train"):
        assert ckpts.restore_best(runs["abstract"]) is None
    ckpts.close()
    assert any(f"best/{best_step}" in r.getMessage() for r in caplog.records)
    assert os.path.isdir(os.path.join(work, "damaged", f"best-{best_step}"))


def test_leftover_steps_are_rotated_on_resume(runs, tmp_path):
    """Item 7: a step left beyond keep_checkpoints (kill during the final evaluation)."""
    work = copy_run(runs, tmp_path)
    shutil.copytree(os.path.join(work, "checkpoints", "2"), os.path.join(work, "checkpoints",
                                                                          "1"))
    assert steps_of(work) == [1, 2, 4]
    results = jt.train_and_evaluate(runs["config"], work)   # resumes at the last step
    assert steps_of(work) == [2, 4]
    assert results["test_bpd"] == runs["res_a"]["test_bpd"]




def stderr_errors(err: str):
    return [line for line in err.splitlines() if line.startswith("error: ")]


# ------------------------------------------------------------------ item 3: Ctrl-C


def test_sigint_checkpoints_and_resumes_exactly(runs):
    assert runs["first"] == {"interrupted": True, "step": 1, "signal": "SIGINT"}
    assert runs["steps_after_sigint"] == [1]
    ma = open(os.path.join(runs["a"], "metrics.jsonl")).read()
    mb = open(os.path.join(runs["b"], "metrics.jsonl")).read()
    assert ma == mb
    for k in ("test_bpd", "val_bpd", "best_step", "best_val_bpd"):
        assert runs["res_a"][k] == runs["res_b"][k]
    run = jt.prepare_run(runs["config"], runs["a"])
    sa = jt.restore_for_eval(runs["a"], jt.abstract_state(run), "checkpoints")[0]
    sb = jt.restore_for_eval(runs["b"], jt.abstract_state(run), "checkpoints")[0]
    assert leaves_equal(sa, sb)


def test_second_sigint_aborts_at_once(runs, tmp_path):
    def ctrl_c_twice(step, state):
        if step == 1:
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)

    work = str(tmp_path / "run")
    with pytest.raises(KeyboardInterrupt):
        jt.train_and_evaluate(runs["config"], work, hooks=[ctrl_c_twice])
    assert not os.path.isdir(os.path.join(work, "checkpoints")) or steps_of(work) == []
    # the handlers are restored: SIGINT is Python's default again
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


# ------------------------------------------------------------------ item 4: refusals


def test_unknown_config_key_is_one_error_line(tmp_path, capsys):
    from experiments import train
    work = str(tmp_path / "run")
    code = train.main(["train.py", GLOW_SMALL, f"--workdir={work}", "--config.batch_sise=8"])
    err = capsys.readouterr().err
    (line,) = stderr_errors(err)
    assert code == 2 and "Traceback" not in err
    assert "config.batch_sise" in line and "did you mean config.batch_size" in line
    assert not os.path.exists(work)
    # --debug adds the traceback
    code = train.main(["train.py", GLOW_SMALL, f"--workdir={work}", "--config.batch_sise=8",
                       "--debug"])
    assert code == 2 and "Traceback" in capsys.readouterr().err
    # unknown flags and a missing --workdir: refused by the flag parser, same form
    assert train.main(["train.py", GLOW_SMALL, "--wrokdir=x"]) == 2
    (line,) = stderr_errors(capsys.readouterr().err)
    assert "--wrokdir" in line
    assert train.main(["train.py", GLOW_SMALL]) == 2
    assert "--workdir is required" in capsys.readouterr().err


def _unwritable_dir(tmp_path):
    """An existing directory this process cannot write to, or None (e.g. root, no /sys)."""
    ro = tmp_path / "ro"
    ro.mkdir()
    os.chmod(ro, 0o555)
    for candidate in (str(ro), "/sys"):
        try:
            open(os.path.join(candidate, ".probe"), "w").close()
            os.remove(os.path.join(candidate, ".probe"))
        except OSError:
            return candidate
    return None


def test_bad_workdirs_are_one_error_line(tmp_path, capsys):
    from experiments import train
    a_file = tmp_path / "file"
    a_file.write_text("x")
    code = train.main(["train.py", GLOW_SMALL, f"--workdir={a_file}"])
    err = capsys.readouterr().err
    (line,) = stderr_errors(err)
    assert code == 2 and "Traceback" not in err
    assert str(a_file) in line and "existing file" in line and "--workdir" in line
    ro = _unwritable_dir(tmp_path)
    if ro is None:
        pytest.skip("no unwritable directory available to this user")
    for work, what in ((ro, "not writable"), (os.path.join(ro, "new_run"), "cannot create")):
        code = train.main(["train.py", GLOW_SMALL, f"--workdir={work}",
                           "--config.num_train_steps=1"])
        err = capsys.readouterr().err
        (line,) = stderr_errors(err)
        assert code == 2 and "Traceback" not in err and work in line and what in line


def test_nonfinite_abort_is_exit_1_without_traceback(monkeypatch, tmp_path, capsys):
    from experiments import train

    def diverged(config, workdir):
        raise FloatingPointError("101 consecutive non-finite steps (limit ...)")

    monkeypatch.setattr(jt, "train_and_evaluate", diverged)
    code = train.main(["train.py", GLOW_SMALL, f"--workdir={tmp_path / 'run'}"])
    err = capsys.readouterr().err
    assert code == 1 and stderr_errors(err) == [
        "error: 101 consecutive non-finite steps (limit ...)"] and "Traceback" not in err


def test_sample_launcher_refuses_bad_temperatures(tmp_path, capsys):
    from experiments import sample
    for t in ("0", "-1", "nan", "inf"):
        code = sample.main(["sample.py", f"--workdir={tmp_path}", f"--temperature={t}"])
        (line,) = stderr_errors(capsys.readouterr().err)
        assert code == 2 and "--temperature" in line


# ------------------------------------------------------------------ item 5: model API


@pytest.fixture(scope="module")
def glow():
    """A Flow with the logit preprocessing of the image models (17 levels, alpha 0.05).

    Its bijector is only the preprocessing, so that the eager calls these tests need
    stay cheap; what is tested lives in ``Flow`` and holds for any bijector.
    """
    flow = Flow(bijector=Chain([ScaleToUnit(17.0), LogitTransform(0.05)]),
                event_shape=(8, 8, 1))
    x = jnp.full((3, 8, 8, 1), 5.5)
    return flow, flow.init(jax.random.PRNGKey(0), x), x


def test_log_prob_is_minus_inf_outside_the_support(glow):
    flow, variables, x = glow
    # 40 and -30 are outside the logit's domain (0 < 0.05 + 0.9 x / 17 < 1); 16.9 inside
    x = x.at[1, 0, 0, 0].set(40.0).at[2, 0, 0, 0].set(-30.0).at[0, 0, 0, 0].set(16.9)
    for lp in (flow.apply(variables, x), jax.jit(flow.apply)(variables, x)):
        assert np.isfinite(lp[0]) and lp[1] == -np.inf and lp[2] == -np.inf


def test_nan_input_raises_eagerly_is_nan_under_jit_and_checkify_catches_it(glow):
    flow, variables, x = glow
    bad = x.at[1, 2, 3, 0].set(jnp.nan)
    with pytest.raises(ValueError, match=r"NaN or inf values in 1 row\(s\) \(rows \[1\]\)"):
        flow.apply(variables, bad)
    lp = jax.jit(flow.apply)(variables, bad)          # documented: NaN under jit
    assert np.isnan(lp[1]) and np.isfinite(lp[0]) and np.isfinite(lp[2])
    checked = flow.clone(checkify_inputs=True)
    f = checkify.checkify(jax.jit(lambda v, x: checked.apply(v, x)))
    err, _ = f(variables, bad)
    with pytest.raises(checkify.JaxRuntimeError, match="the first being row 1"):
        err.throw()
    err, lp = f(variables, x)
    assert err.get() is None and np.all(np.isfinite(lp))


def test_sample_rejects_bad_temperatures(glow):
    flow, variables, _ = glow
    rngs = {"sample": jax.random.PRNGKey(1)}
    for t in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="temperature must be finite and > 0"):
            flow.apply(variables, 2, temperature=t, method="sample", rngs=rngs)
    jitted = jax.jit(lambda v, t: flow.apply(v, 2, temperature=t, method="sample", rngs=rngs))
    assert np.all(np.isnan(jitted(variables, -1.0)))          # traced: NaN, not samples
    assert np.all(np.isfinite(jitted(variables, 0.7)))


# ------------------------------------------------------------------ item 6: fixed point


def resflow_config(solver):
    c = tiny_config()
    c.model = ml_collections.ConfigDict(dict(
        name="resflow", levels=1, blocks_per_level=1, hidden_channels=8, fc_blocks=0,
        spectral_norm=dict(init_iterations=5), eval_estimator=dict(kind="exact"),
        solver=solver))
    c.num_samples = 2
    c.init_batch_size = 16
    return c


def test_solver_settings_from_config_and_command_line_reach_the_blocks(tmp_path):
    from experiments import cli, train
    argv = ["train.py", "--config=experiments/configs/resflow_digits.py:small",
            f"--workdir={tmp_path}", "--config.model.solver={'max_iter': 1, 'rtol': 1e-3}"]
    cli.parse(argv, train.FLAGS, module=train.__name__, config_file=True)
    settings = jt.read_settings(train.FLAGS.config)
    assert settings.model.kwargs["solver"] == {"max_iter": 1, "rtol": 1e-3}
    train.FLAGS.unparse_flags()

    info = jt.dataset_info(jt.read_settings(resflow_config({"max_iter": 1})).dataset)
    flow = jt.build_flow(resflow_config({"max_iter": 1}), info)
    x = jnp.full((2,) + tuple(info.image_shape), 5.5)
    variables = jax.jit(flow.init)({"params": jax.random.PRNGKey(0)}, x)
    z = jax.jit(lambda v, x: flow.apply(v, x, method="forward"))(variables, x)
    _, inv = as_functions(flow, variables, diagnostics=True)
    xr, _, diag = jax.jit(inv)(z)
    assert int(diag["num_solves"]) == 1 and diag["not_converged"].shape == (2,)
    assert np.all(diag["iterations"] == 1) and bool(np.all(diag["not_converged"]))
    # the default solver converges on the same flow
    flow = jt.build_flow(resflow_config({}), info)
    _, inv = as_functions(flow, variables, diagnostics=True)
    xr, _, diag = jax.jit(inv)(z)
    assert not bool(np.any(diag["not_converged"])) and np.allclose(xr, x, atol=1e-3)
    # plain as_functions is unchanged: (x, log_det)
    assert len(as_functions(flow, variables)[1](z)) == 2


def test_trainer_warns_when_sampling_does_not_converge(tmp_path, caplog):
    run = jt.prepare_run(resflow_config({"max_iter": 1}), None)
    state = jt.init_state(run)
    with caplog.at_level(logging.WARNING, logger="jaxflows.train"):
        jt.save_samples(run, state, str(tmp_path), [0.7], use_ema=False)
    (record,) = [r for r in caplog.records if "did not converge" in r.getMessage()]
    assert record.levelno == logging.WARNING and "solver.max_iter" in record.getMessage()


# ------------------------------------------------------------------ items 1 and 7: runs


def _bad_batches(config, n):
    """Batches whose pixel 255 is outside the logit's domain: a NaN loss, as corrupt data."""
    images = np.full((config.batch_size, 8, 8, 1), 3, np.uint8)
    images[0, 0, 0, 0] = 255
    return iter([{"image": images}] * n)


def test_all_skipped_interval_writes_a_metrics_line_and_the_abort_is_clean(runs, tmp_path):
    config = runs["config"]
    work = str(tmp_path / "run")
    shutil.copytree(runs["a"], work)
    run = jt.prepare_run(config, work)
    state = jt.restore_for_eval(work, jt.abstract_state(run), "checkpoints")[0]
    # continue the finished run past its 4 steps (same compiled train step)
    run = dataclasses.replace(run, settings=dataclasses.replace(run.settings,
                                                                num_train_steps=10))
    progress = jt.Progress(step=int(state.step))
    state, progress = jt.train_steps(run, state, _bad_batches(config, 1), progress)
    assert progress.running.count == 0 and progress.running.skipped == 1
    files = jt.RunFiles(workdir=work, metrics=jt.MetricsLog(os.path.join(work, "m.jsonl")),
                        checkpoints=None, is_main=True, meta={})
    progress, record = jt.evaluate_and_checkpoint(run, files, state, None, progress)
    assert record["step"] == 5 and record["num_skipped_interval"] == 1
    assert record["num_skipped"] == 1 and "train_bpd" not in record
    assert files.metrics.read() == [record]
    # more non-finite steps in a row than allowed: FloatingPointError naming the limit
    optim = dataclasses.replace(run.settings.optim, max_consecutive_nonfinite=1)
    strict = dataclasses.replace(run, settings=dataclasses.replace(run.settings, optim=optim))
    with pytest.raises(FloatingPointError, match="max_consecutive_nonfinite=1"):
        jt.train_steps(strict, state, _bad_batches(config, 3), progress)


def test_too_many_skipped_steps_fail_the_run_and_results_say_so(runs, tmp_path):
    config = runs["config"]
    work = str(tmp_path / "run")
    shutil.copytree(runs["a"], work)
    run = jt.prepare_run(config, work)
    state = jt.restore_for_eval(work, jt.abstract_state(run), "checkpoints")[0]
    state = state.replace(num_skipped=jnp.asarray(1, jnp.int32))     # 1 of 4 > 5 %
    files = jt.RunFiles(workdir=work, metrics=jt.MetricsLog(os.path.join(work, "metrics.jsonl")),
                        checkpoints=jt.Checkpoints(work, 2), is_main=True, meta={})
    progress = jt.Progress(step=4, best_val=runs["res_a"]["best_val_bpd"],
                           best_step=runs["res_a"]["best_step"])
    with pytest.raises(FloatingPointError, match="1 of 4 steps were skipped"):
        jt.finish(run, files, state, progress)
    files.checkpoints.close()
    results = json.load(open(os.path.join(work, "results.json")))
    assert "max_skipped_fraction" in results["failed"] and results["num_skipped"] == 1
    assert math.isfinite(results["test_bpd"])


def test_log_prob_of_a_constant_captured_under_jit():
    """A concrete input closed over by a jitted or differentiated function is checked on the
    host at trace time (it used to raise a TracerArrayConversionError).
    """
    import jax
    import jax.numpy as jnp

    from jaxflows.models import glow

    flow = glow((4, 4, 1), levels=1, steps_per_level=1, hidden_channels=4, num_bins=17)
    x = jnp.full((2, 4, 4, 1), 3.5)
    v = flow.init(jax.random.PRNGKey(0), x)
    g = jax.jit(jax.grad(lambda p: -jnp.mean(flow.apply({**v, "params": p}, x))))(v["params"])
    assert all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in jax.tree_util.tree_leaves(g))


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_launcher_exit_code_of_an_interrupted_run(runs, monkeypatch, tmp_path, capsys, sig,
                                                  code):
    """A real SIGTERM / Ctrl-C during ``experiments/train.py``: checkpoint, message, exit
    code 143 / 130 (as docs/reliability.md says).
    """
    import functools

    from experiments import train as train_launcher

    def signal_at_1(step, state):
        if step == 1:
            os.kill(os.getpid(), sig)

    monkeypatch.setattr(jt, "train_and_evaluate",
                        functools.partial(jt.train_and_evaluate, hooks=[signal_at_1]))
    cfg = tmp_path / "tiny_config.py"
    cfg.write_text("from tests.test_reliability import tiny_config\n\n\n"
                   "def get_config():\n    return tiny_config()\n")
    work = str(tmp_path / "run")
    capsys.readouterr()
    assert train_launcher.main(["train.py", f"--config={cfg}", f"--workdir={work}"]) == code
    assert steps_of(work) == [1]
    assert "Rerun the same command to resume" in capsys.readouterr().out

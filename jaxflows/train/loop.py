"""``train_and_evaluate(config, workdir)``: the whole training run, testable from Python.

What a run does, in order:

1. :func:`~jaxflows.train.run.prepare_run` checks everything that can be checked
   before any compute (config schema and values, dataset name, the model built and
   initialised abstractly, batch sizes against the device count, the fingerprint of a
   checkpoint already in ``workdir``) and raises ``ValueError`` without touching the
   work directory. It returns the immutable :class:`~jaxflows.train.run.Run`.
2. ``config.json`` is written; :func:`restore_or_init` restores the latest checkpoint
   of ``workdir`` (state, data-loader position, best-so-far, partial metric sums) or
   initialises (ActNorm on a global batch).
3. :func:`train_steps` trains up to the next step that logs, evaluates or
   checkpoints; :func:`evaluate_and_checkpoint` then appends the mean train bits/dim to
   ``metrics.jsonl`` (every ``log_every`` steps), evaluates validation (and test)
   bits/dim over the whole splits (every ``eval_every`` steps), redraws
   ``curves.png``, saves a checkpoint and, when validation improved, the best
   checkpoint. The two alternate until ``config.num_train_steps``.
4. On SIGTERM or Ctrl-C (SIGINT): a checkpoint at the current step, and
   ``{"interrupted": True, "step": s, "signal": "SIGTERM" | "SIGINT"}`` is returned;
   rerunning the same command resumes exactly. A second Ctrl-C raises
   ``KeyboardInterrupt`` at once (progress since the last checkpoint is lost).
   With several processes (:mod:`jaxflows.train.distributed`) the processes agree on
   the stop at the next logging or checkpoint step, where all of them stop together.
   With ``config.early_stopping_patience = P > 0`` the run stops after the first
   evaluation that is ``P`` evaluations past the best validation figure
   (``results["stopped_early"]``); a resumed run stops at the same step.
5. :func:`finish`: test bits/dim of the best-on-validation EMA parameters over the
   whole test split, sample grids at ``config.sample_temperatures``
   (``samples_T*.png``), ``results.json``. A non-finite final figure, or more skipped
   steps than ``config.optim.max_skipped_fraction``, fails the run
   (``FloatingPointError``, after ``results.json`` records why).

Vector (tabular) datasets (:mod:`jaxflows.data.tabular`) run through the same loop:
their figure is the negative log-likelihood in nats per dimension, so every
``*_bpd`` key below is ``*_nats_per_dim`` for them (``run.score``), ``results.json``
adds ``test_log_likelihood`` / ``val_log_likelihood`` (nats per example), samples are
saved as ``samples_T*.npy``, and a 2-D run also writes ``density.png`` (the learned
density beside the data and samples, with the grid's probability mass).

Restoring verifies the checkpoint (SHA-256 manifest, readability, finite values) and
falls back to the newest intact one, saying which step and file were damaged
(:mod:`jaxflows.train.checkpoint`).

The host side of the loop's state is an immutable :class:`Progress`, passed to and
returned by each function; the device side is the :class:`TrainState`.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import signal
import tempfile
import threading
from typing import Any, Callable, Dict, Iterator, Optional, Sequence, Tuple

import jax
import numpy as np

from jaxflows.train import checkpoint as ckpt_lib
from jaxflows.train.config import config_to_dict
from jaxflows.train.evaluation import (
    evaluate_split,
    evaluate_split_metrics,
    save_density_plot,
    save_samples,
)
from jaxflows.train.metrics import MetricsLog, RunningMean
from jaxflows.train.plots import plot_curves
from jaxflows.train.run import (
    Run,
    abstract_state,
    describe_model,
    device_batch,
    init_state,
    prepare_run,
)
from jaxflows.train.state import TrainState

__all__ = ["train_and_evaluate", "RunFiles", "Progress", "restore_or_init", "train_steps",
           "evaluate_and_checkpoint", "finish"]

log = logging.getLogger("jaxflows.train")

Hook = Callable[[int, TrainState], None]

# Train metrics of hybrid models' steps, logged as train_<name>.
HYBRID_METRICS = ("objective", "accuracy", "nll_y")


def _evaluate_into(record: dict, prefix: str, run: Run, state, source, split_id: int,
                   cache) -> None:
    """``record[prefix_<score>]`` of ``source``, and ``record[prefix_accuracy]`` for a
    hybrid model (config.hybrid).
    """
    if run.hybrid_lam is None:
        record[f"{prefix}_{run.score}"] = evaluate_split(run, state, source, split_id, cache)
        return
    for key, value in evaluate_split_metrics(run, state, source, split_id, cache).items():
        record[f"{prefix}_{key}"] = value


# Split ids of evaluate_split: they fix each split's dequantisation noise.
VAL_SPLIT_ID, TEST_SPLIT_ID = 1, 2


@dataclasses.dataclass(frozen=True)
class RunFiles:
    """Where a run writes (fixed during the run).

    Attributes:
      workdir: the work directory.
      metrics: ``metrics.jsonl`` (written by process 0 only).
      checkpoints: the regular and best checkpoint managers.
      is_main: whether this is process 0 (which writes metrics, curves, samples).
      meta: what every checkpoint's metadata holds besides the progress (the model
        fingerprint and its description).
    """

    workdir: str
    metrics: MetricsLog
    checkpoints: ckpt_lib.Checkpoints
    is_main: bool
    meta: Dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Progress:
    """The host-side state of the loop after ``step`` steps.

    Attributes:
      step: optimiser steps taken (skipped ones included).
      running: train metrics since the last log line (saved in checkpoints).
      best_val, best_step: the best validation bits/dim so far and its step (saved).
      nonfinite_streak: consecutive steps with a non-finite loss or gradient.
      lr: the learning rate of the last step whose metrics were read.
    """

    step: int = 0
    running: RunningMean = dataclasses.field(default_factory=RunningMean)
    best_val: Optional[float] = None
    best_step: Optional[int] = None
    nonfinite_streak: int = 0
    lr: float = math.nan

    def checkpoint_meta(self, files: RunFiles) -> Dict[str, Any]:
        """The metadata stored with a checkpoint at this point."""
        return dict(files.meta, best_val=self.best_val, best_step=self.best_step,
                    running=self.running.state())


class _StopFlag:
    """Set by SIGTERM or SIGINT: the loop checkpoints and returns after the current step.

    A second SIGINT (Ctrl-C pressed again) raises ``KeyboardInterrupt`` at once.
    Installed only in the main thread (Python delivers signals there).
    """

    def __init__(self):
        self.stop = False
        self.signal: Optional[str] = None
        self._old = {}

    def _handler(self, signum, _frame):
        name = signal.Signals(signum).name
        if signum == signal.SIGINT and self.stop:
            raise KeyboardInterrupt("second Ctrl-C: aborting without a checkpoint")
        if not self.stop:
            self.signal = name
        self.stop = True
        if signum == signal.SIGINT:
            log.warning("Ctrl-C (SIGINT): checkpointing after the current step and stopping "
                        "(press Ctrl-C again to abort at once, without a checkpoint)")
        else:
            log.warning("%s received: checkpointing after the current step and stopping",
                        name)

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._old[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)
        return False


def restore_or_init(run: Run, files: RunFiles) -> Tuple[TrainState, Any, Progress]:
    """``(state, loader, progress)``: resumed from the latest checkpoint, or fresh.

    On resume the loader continues from its saved position, metric lines newer than
    the checkpoint are dropped, best checkpoints newer than it are forgotten (and the
    best one re-saved if it was this very step and is missing).
    """
    from jaxflows import data as jdata
    settings = run.settings
    loader = jdata.make_loader(run.train_src, global_batch_size=settings.batch_size,
                               seed=settings.seed, shuffle=True)
    ckpts = files.checkpoints
    if ckpts.latest_step() is None:
        return init_state(run), loader, Progress()
    # verified; damaged steps are reported, moved aside, and an older one is used
    state, loader_state, meta = ckpts.restore(abstract_state(run))
    ckpts.prune()
    loader.set_state(loader_state)
    step = int(jax.device_get(state.step))
    progress = Progress(step=step, running=RunningMean.from_state(meta.get("running")),
                        best_val=meta.get("best_val"), best_step=meta.get("best_step"))
    files.metrics.truncate(step)
    ckpts.drop_best_after(step)
    if progress.best_step == step and ckpts.best.latest_step() != step:
        ckpts.save_best(state, dict(files.meta, best_val=progress.best_val,
                                    best_step=progress.best_step))
    log.info("resumed from step %d of %s", step, files.workdir)
    return state, loader, progress


def _account(progress: Progress, step: int, metrics, max_nonfinite: int,
             score: str = "bpd") -> Progress:
    """``progress`` with the metrics of train step ``step`` read from the device.

    Raises ``FloatingPointError`` after more than ``max_nonfinite`` non-finite steps in a
    row.
    """
    m = jax.device_get(metrics)
    lr = float(m.get("lr", math.nan))
    if bool(m["finite"]):
        # hybrid models (config.hybrid) add their objective, accuracy and -log p(y|x)
        extra = {f"train_{k}": float(m[k]) for k in HYBRID_METRICS if k in m}
        running = progress.running.add({f"train_{score}": float(m["loss"]),
                                        "grad_norm": float(m["grad_norm"]), **extra})
        return dataclasses.replace(progress, running=running, nonfinite_streak=0, lr=lr)
    streak = progress.nonfinite_streak + 1
    log.warning("step %d: non-finite loss or gradient; update skipped", step)
    if streak > max_nonfinite:
        raise FloatingPointError(
            f"{streak} consecutive non-finite steps (limit "
            f"config.optim.max_consecutive_nonfinite={max_nonfinite}); stopping at step "
            f"{step}. Lower config.optim.learning_rate or check the data; the last "
            "checkpoint is intact and the run resumes from it.")
    return dataclasses.replace(progress, running=progress.running.skip(),
                               nonfinite_streak=streak, lr=lr)


def _check_batch(images, step: int):
    """Raise ``ValueError`` if a floating-point batch holds NaN or inf (host-side check)."""
    images = np.asarray(images)
    if np.issubdtype(images.dtype, np.inexact) and not np.all(np.isfinite(images)):
        rows = np.nonzero(~np.all(np.isfinite(images.reshape(images.shape[0], -1)),
                                  axis=1))[0]
        raise ValueError(f"the train batch of step {step} has NaN or inf values (rows "
                         f"{rows[:8].tolist()} of the batch): check the dataset.")


def train_steps(run: Run, state: TrainState, batches: Iterator, progress: Progress, *,
                stop: Callable[[], bool] = lambda: False, hooks: Sequence[Hook] = (),
                on_step: Optional[Callable[[], None]] = None) -> Tuple[TrainState, Progress]:
    """Train from ``progress.step`` through the next step that logs, evaluates or checkpoints.

    Also returns after the step during which ``stop()`` became true. The metrics of a
    step are read from the device one step later (the host never waits for the device
    between steps), and all of them before returning.

    Args:
      run: the run.
      state: the TrainState after ``progress.step`` steps (donated to the train step).
      batches: the train loader's iterator (positioned at step ``progress.step``).
      progress: the host-side progress so far.
      stop: whether a stop was requested (checked after every step).
      hooks: ``hook(step, state)`` after every step.
      on_step: called after every step (e.g. a progress bar's update).

    Returns:
      ``(state, progress)`` after the last step taken (unchanged when ``progress.step``
      is already ``num_train_steps``).
    """
    settings = run.settings
    if progress.step >= settings.num_train_steps:
        return state, progress
    limit = settings.optim.max_consecutive_nonfinite
    step = progress.step
    pending = None
    while True:
        batch = next(batches)
        _check_batch(batch["image"], step + 1)
        state, metrics = run.steps.train(state, device_batch(run, batch))
        step += 1
        if pending is not None:
            progress = _account(progress, *pending, limit, run.score)
        pending = (step, metrics)
        for hook in hooks:
            hook(step, state)
        if on_step is not None:
            on_step()
        if settings.logs_at(step) or settings.checkpoints_at(step) or stop():
            break
    progress = _account(progress, *pending, limit, run.score)
    return state, dataclasses.replace(progress, step=step)


def evaluate_and_checkpoint(run: Run, files: RunFiles, state: TrainState, loader,
                            progress: Progress, *, stopping: bool = False,
                            eval_cache: Optional[dict] = None) -> Tuple[Progress, dict]:
    """What happens after step ``progress.step``: log, evaluate, plot, checkpoint.

    * a logging step writes the mean train metrics since the last one (``train_bpd``,
      ``grad_norm``; absent when every step of the interval was skipped), ``lr``,
      ``num_skipped`` (total so far) and ``num_skipped_interval`` (skipped steps since
      the last line), and resets them;
    * an evaluation step adds ``val_bpd`` (and ``test_bpd`` if
      ``eval_test_during_training``), selects the best on validation (the last one
      when there is no validation split) and redraws ``curves.png``;
    * a checkpoint step (every evaluation, every ``checkpoint_every``, and when
      ``stopping``) saves the state, the ``loader``'s position and the progress, and
      the best checkpoint when this evaluation improved.

    Returns the new progress and the ``metrics.jsonl`` record written (``{}`` if none).
    """
    settings = run.settings
    step = progress.step
    record: Dict[str, Any] = {}
    running = progress.running
    if settings.logs_at(step) and running.steps:
        record.update(running.result())
        record["lr"] = progress.lr
        record["num_skipped"] = int(jax.device_get(state.num_skipped))
        record["num_skipped_interval"] = running.skipped
        running = RunningMean()
    best_val, best_step, improved = progress.best_val, progress.best_step, False
    evaluates = settings.evaluates_at(step)
    if evaluates:
        if run.val_src is not None:
            _evaluate_into(record, "val", run, state, run.val_src, VAL_SPLIT_ID, eval_cache)
        if run.test_src is not None and settings.eval_test_during_training:
            _evaluate_into(record, "test", run, state, run.test_src, TEST_SPLIT_ID,
                           eval_cache)
        score = record.get(f"val_{run.score}")
        # no validation split: the last evaluation is the "best"
        improved = run.val_src is None or (
            score is not None and math.isfinite(score) and (best_val is None or score < best_val))
        if improved:
            best_val, best_step = score, step
    progress = dataclasses.replace(progress, running=running, best_val=best_val,
                                   best_step=best_step)
    if record:
        record["step"] = step
        files.metrics.write(record)
    if evaluates and files.is_main:
        plot_curves(os.path.join(files.workdir, "curves.png"), files.metrics.read(),
                    title=f"{settings.model.name} on {settings.dataset.name}",
                    score=run.score)
    if settings.checkpoints_at(step) or stopping:
        meta = progress.checkpoint_meta(files)
        files.checkpoints.save(state, loader.get_state(), meta)
        if improved:
            files.checkpoints.save_best(state, meta)
    return progress, record


def _progress_bar(run: Run, files: RunFiles, step: int):
    """A tqdm bar from ``step`` (None when disabled, not process 0, or nothing to do)."""
    settings = run.settings
    if not (settings.progress_bar and files.is_main and step < settings.num_train_steps):
        return None
    from tqdm.auto import tqdm
    return tqdm(total=settings.num_train_steps, initial=step, unit="step", dynamic_ncols=True,
                mininterval=1.0,
                desc=os.path.basename(os.path.normpath(files.workdir)) or "train")


def _train(run: Run, files: RunFiles, state: TrainState, loader, progress: Progress, *,
           hooks: Sequence[Hook], eval_cache: dict
           ) -> Tuple[TrainState, Progress, Optional[str]]:
    """Alternate :func:`train_steps` and :func:`evaluate_and_checkpoint` to the last step.

    Returns ``(state, progress, interrupted)``; ``interrupted`` is the name of the
    signal (``"SIGTERM"``, ``"SIGINT"``) that stopped the run before its last step (a
    checkpoint of the current step is saved first), else None.
    """
    num_steps = run.settings.num_train_steps
    pbar = _progress_bar(run, files, progress.step)
    shown: Dict[str, float] = {}
    # Several processes must stop at the same step: they agree at logging/checkpoint steps.
    multi = jax.process_count() > 1
    try:
        with _StopFlag() as flag:
            batches = iter(loader)
            while progress.step < num_steps and not _stops_early(run, progress):
                state, progress = train_steps(
                    run, state, batches, progress,
                    stop=(lambda: False) if multi else (lambda: flag.stop), hooks=hooks,
                    on_step=None if pbar is None else lambda: pbar.update(1))
                stopping = _agree_on_stop(flag) if multi else flag.stop
                progress, record = evaluate_and_checkpoint(
                    run, files, state, loader, progress, stopping=stopping,
                    eval_cache=eval_cache)
                if pbar is not None and record:
                    shown.update({k: v for k, v in record.items()
                                  if k in (f"train_{run.score}", f"val_{run.score}",
                                           f"test_{run.score}")})
                    pbar.set_postfix({k: f"{v:.3f}" for k, v in shown.items()}, refresh=False)
                if stopping and progress.step < num_steps:
                    return state, progress, flag.signal
    finally:
        if pbar is not None:
            pbar.close()
    return state, progress, None


def _agree_on_stop(flag: _StopFlag) -> bool:
    """Whether any process received SIGTERM/SIGINT (all processes get the same answer).

    One tiny all-gather, at the end of every :func:`train_steps` (a logging or checkpoint
    step): a signal delivered to some hosts only, or to hosts at different steps, stops
    every process at the same step with the same checkpoint, instead of leaving the
    others waiting in a collective. ``flag.signal`` is set to the signal's name on the
    processes that did not receive it.
    """
    from jax.experimental import multihost_utils
    codes = {None: 0, "SIGINT": int(signal.SIGINT), "SIGTERM": int(signal.SIGTERM)}
    mine = codes.get(flag.signal, int(signal.SIGTERM)) if flag.stop else 0
    got = np.asarray(multihost_utils.process_allgather(np.asarray([mine], np.int32)))
    received = [int(c) for c in got.ravel() if c]
    if not received:
        return False
    if not flag.stop:
        flag.stop = True
        flag.signal = signal.Signals(max(received)).name
    return True


def _stops_early(run: Run, progress: Progress) -> bool:
    """Whether early stopping ends the run at ``progress.step`` (logged once)."""
    if run.val_src is None or not run.settings.patience_exhausted(progress.step,
                                                                  progress.best_step):
        return False
    log.info("early stopping at step %d: no validation improvement since step %d "
             "(config.early_stopping_patience=%d evaluations)", progress.step,
             progress.best_step, run.settings.early_stopping_patience)
    return True


def _recorded_val(files: RunFiles, step: int, score: str = "bpd") -> Optional[float]:
    """``val_<score>`` of ``metrics.jsonl``'s line of ``step`` (None if there is none)."""
    for record in reversed(files.metrics.read()):
        if record.get("step") == step and f"val_{score}" in record:
            return record[f"val_{score}"]
    return None


def _failures(run: Run, results: dict) -> list:
    """Why a completed run failed: non-finite final figures, too many skipped steps."""
    reasons = [f"the final {key} is {results[key]} (not finite)"
               for key in (f"val_{run.score}", f"test_{run.score}")
               if key in results and not math.isfinite(results[key])]
    limit = run.settings.optim.max_skipped_fraction
    steps = max(results["step"], 1)
    if results["num_skipped"] > limit * steps:
        reasons.append(f"{results['num_skipped']} of {results['step']} steps were skipped "
                       f"as non-finite (more than config.optim.max_skipped_fraction="
                       f"{limit:g})")
    return reasons


def finish(run: Run, files: RunFiles, state: TrainState, progress: Progress, *,
           eval_cache: Optional[dict] = None) -> dict:
    """Final figures of a completed run; writes samples and ``results.json``.

    Test (and validation) bits/dim over the whole splits of the best-on-validation
    checkpoint (the last state when there is no validation split, or when the best
    checkpoint is damaged: said in ``results["selected"]``), and sample grids at
    ``sample_temperatures`` from it. ``best_step`` is the step of the parameters
    evaluated and ``best_val_bpd`` the ``val_bpd`` that ``metrics.jsonl`` recorded at
    that step, so the two files never disagree.

    Raises:
      FloatingPointError: a final validation or test figure is not finite, or more
        than ``config.optim.max_skipped_fraction`` of the steps were skipped;
        ``results.json`` is written first, with the reasons under ``"failed"``.
    """
    settings = run.settings
    best = (files.checkpoints.restore_best(abstract_state(run))
            if run.val_src is not None else None)
    selected = "best" if run.val_src is not None else "last (no validation split)"
    if best is not None:
        final_state = best[0]
    else:
        final_state = state
        if run.val_src is not None:
            selected = ("last (no finite validation figure)" if progress.best_step is None
                        else "last (the best checkpoint is damaged)")
            log.warning("evaluating the last state, step %d: %s", progress.step, selected)
    best_step = int(jax.device_get(final_state.step))
    best_val = _recorded_val(files, best_step, run.score) if files.is_main else None
    if best_val is None and best is not None:
        best_val = best[1].get("best_val")
    if best is not None and progress.best_step not in (None, best_step):
        log.warning("the best checkpoint is of step %d, but the run recorded step %s as "
                    "best: reporting step %d", best_step, progress.best_step, best_step)
    score = run.score
    results = {
        "step": progress.step, "best_step": best_step,
        f"best_val_{score}": best_val,
        "num_skipped": int(jax.device_get(state.num_skipped)),
        "dataset": settings.dataset.name, "model": settings.model.name,
        "use_ema": settings.use_ema, "selected": selected,
    }
    if progress.step < settings.num_train_steps:
        results["stopped_early"] = True   # early stopping on validation (patience)
    if run.test_src is not None:
        _evaluate_into(results, "test", run, final_state, run.test_src, TEST_SPLIT_ID,
                       eval_cache)
    if run.val_src is not None:
        _evaluate_into(results, "val", run, final_state, run.val_src, VAL_SPLIT_ID,
                       eval_cache)
    if run.hybrid_lam is not None:
        results["hybrid_lam"] = run.hybrid_lam
    if score != "bpd":
        # vector data: the log-likelihood in nats per example (the MAF/NAF/NSF tables' figure)
        for split in ("test", "val"):
            if f"{split}_{score}" in results:
                results[f"{split}_log_likelihood"] = -run.num_dims * results[f"{split}_{score}"]
    results["samples"] = save_samples(run, final_state, files.workdir,
                                      settings.sample_temperatures,
                                      use_ema=settings.eval_use_ema)
    if score != "bpd" and run.num_dims == 2:
        results["density_plot"] = save_density_plot(run, final_state, files.workdir,
                                                    write=files.is_main)
    failures = _failures(run, results)
    if failures:
        results["failed"] = "; ".join(failures)
    if files.is_main:
        tmp = os.path.join(files.workdir, "results.json.tmp")
        with open(tmp, "w") as f:
            json.dump(results, f, indent=2, sort_keys=True)
        os.replace(tmp, os.path.join(files.workdir, "results.json"))
    if failures:
        raise FloatingPointError(
            f"the run failed: {results['failed']}. results.json records it; see "
            f"metrics.jsonl (num_skipped_interval) for when it went wrong, and lower "
            f"config.optim.learning_rate or check the data.")
    return results


def _prepare_workdir(workdir: str):
    """Create ``workdir`` and check that it is writable; ``ValueError`` naming it if not."""
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise ValueError(f"workdir {workdir!r} is an existing file, not a directory: pass "
                         "a directory (or a path that does not exist yet) as --workdir.")
    try:
        os.makedirs(workdir, exist_ok=True)
    except OSError as e:
        raise ValueError(f"cannot create workdir {workdir!r} ({e.strerror or e}): pass a "
                         "--workdir on a writable file system.") from e
    try:
        with tempfile.NamedTemporaryFile(dir=workdir, prefix=".write_test"):
            pass
    except OSError as e:
        raise ValueError(f"workdir {workdir!r} is not writable ({e.strerror or e}): pass a "
                         "writable --workdir, or fix its permissions.") from e


def _write_config(config, workdir: str):
    tmp = os.path.join(workdir, "config.json.tmp")
    with open(tmp, "w") as f:
        json.dump(config_to_dict(config), f, indent=2, sort_keys=True)
    os.replace(tmp, os.path.join(workdir, "config.json"))


def train_and_evaluate(config, workdir: str, *, hooks: Sequence[Hook] = ()) -> dict:
    """Train and evaluate the flow of ``config``; outputs and checkpoints go to ``workdir``.

    Args:
      config: an ``ml_collections.ConfigDict`` following the schema of
        ``jaxflows.train.default_config`` (documented in experiments/configs/glow_digits.py).
      workdir: the run's directory; rerunning with the same workdir resumes from its
        latest checkpoint (exactly: same parameters and metrics as without a restart).
      hooks: callables ``hook(step, state)`` run after every train step (e.g. tests).

    Returns:
      ``results.json``'s dict (``test_bpd`` of the best-on-validation EMA parameters,
      ``best_step``, ``best_val_bpd``, ``num_skipped``, ...), or
      ``{"interrupted": True, "step": s, "signal": "SIGTERM" | "SIGINT"}`` after a
      SIGTERM or a Ctrl-C (a checkpoint of step ``s`` is saved).

    Raises:
      ValueError: a bad config or work directory (a file, not writable), before
        anything is written.
      CheckpointError: (a ``ValueError``) every checkpoint in ``workdir`` is damaged.
      FloatingPointError: too many non-finite steps in a row, a non-finite final
        figure, or too many skipped steps.
      KeyboardInterrupt: a second Ctrl-C (no checkpoint), or Ctrl-C during the final
        evaluation (the last checkpoint is complete: rerunning finishes the run).
    """
    run = prepare_run(config, workdir)       # every ValueError about the config is here
    is_main = jax.process_index() == 0
    _prepare_workdir(workdir)
    if is_main:
        _write_config(config, workdir)
    files = RunFiles(
        workdir=workdir,
        metrics=MetricsLog(os.path.join(workdir, "metrics.jsonl"), enabled=is_main),
        checkpoints=ckpt_lib.Checkpoints(workdir, run.settings.keep_checkpoints),
        is_main=is_main,
        meta={"fingerprint": run.fingerprint, "model": describe_model(run.settings, run.info)})
    eval_cache: dict = {}
    try:
        state, loader, progress = restore_or_init(run, files)
        state, progress, interrupted = _train(run, files, state, loader, progress,
                                              hooks=hooks, eval_cache=eval_cache)
        if interrupted:
            log.warning("interrupted (%s) at step %d; checkpoint saved in %s", interrupted,
                        progress.step, workdir)
            return {"interrupted": True, "step": progress.step, "signal": interrupted}
        results = finish(run, files, state, progress, eval_cache=eval_cache)
    finally:
        files.checkpoints.close()
    log.info("done: %s", json.dumps({k: v for k, v in results.items() if k != "samples"}))
    return results

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
4. On SIGTERM: a checkpoint at the current step, and ``{"interrupted": True}`` is
   returned; rerunning the same command resumes exactly.
5. :func:`finish`: test bits/dim of the best-on-validation EMA parameters over the
   whole test split, sample grids at ``config.sample_temperatures``
   (``samples_T*.png``), ``results.json``.

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
import threading
from typing import Any, Callable, Dict, Iterator, Optional, Sequence, Tuple

import jax

from jaxflows.train import checkpoint as ckpt_lib
from jaxflows.train.config import config_to_dict
from jaxflows.train.evaluation import evaluate_split, save_samples
from jaxflows.train.mesh import global_batch
from jaxflows.train.metrics import MetricsLog, RunningMean
from jaxflows.train.plots import plot_curves
from jaxflows.train.run import Run, abstract_state, describe_model, init_state, prepare_run
from jaxflows.train.state import TrainState

__all__ = ["train_and_evaluate", "RunFiles", "Progress", "restore_or_init", "train_steps",
           "evaluate_and_checkpoint", "finish"]

log = logging.getLogger("jaxflows.train")

Hook = Callable[[int, TrainState], None]

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
    """Set by SIGTERM: the loop checkpoints and returns after the current step."""

    def __init__(self):
        self.stop = False
        self._old = {}

    def _handler(self, signum, _frame):
        log.warning("signal %d received: checkpointing and stopping", signum)
        self.stop = True

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._old[signal.SIGTERM] = signal.signal(signal.SIGTERM, self._handler)
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
    state, loader_state, meta = ckpts.restore(abstract_state(run))
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


def _account(progress: Progress, step: int, metrics, max_nonfinite: int) -> Progress:
    """``progress`` with the metrics of train step ``step`` read from the device.

    Raises ``FloatingPointError`` after more than ``max_nonfinite`` non-finite steps in a
    row.
    """
    m = jax.device_get(metrics)
    lr = float(m.get("lr", math.nan))
    if bool(m["finite"]):
        running = progress.running.add({"train_bpd": float(m["loss"]),
                                        "grad_norm": float(m["grad_norm"])})
        return dataclasses.replace(progress, running=running, nonfinite_streak=0, lr=lr)
    streak = progress.nonfinite_streak + 1
    log.warning("step %d: non-finite loss or gradient; update skipped", step)
    if streak > max_nonfinite:
        raise FloatingPointError(
            f"{streak} consecutive non-finite steps (limit "
            f"config.optim.max_consecutive_nonfinite={max_nonfinite}); stopping at step "
            f"{step}.")
    return dataclasses.replace(progress, nonfinite_streak=streak, lr=lr)


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
        state, metrics = run.steps.train(state, global_batch(batch["image"], run.mesh))
        step += 1
        if pending is not None:
            progress = _account(progress, *pending, limit)
        pending = (step, metrics)
        for hook in hooks:
            hook(step, state)
        if on_step is not None:
            on_step()
        if settings.logs_at(step) or settings.checkpoints_at(step) or stop():
            break
    progress = _account(progress, *pending, limit)
    return state, dataclasses.replace(progress, step=step)


def evaluate_and_checkpoint(run: Run, files: RunFiles, state: TrainState, loader,
                            progress: Progress, *, stopping: bool = False,
                            eval_cache: Optional[dict] = None) -> Tuple[Progress, dict]:
    """What happens after step ``progress.step``: log, evaluate, plot, checkpoint.

    * a logging step writes the mean train metrics since the last one (``train_bpd``,
      ``grad_norm``, ``lr``, ``num_skipped``) and resets them;
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
    if settings.logs_at(step) and running.count:
        record.update(running.result())
        record["lr"] = progress.lr
        record["num_skipped"] = int(jax.device_get(state.num_skipped))
        running = RunningMean()
    best_val, best_step, improved = progress.best_val, progress.best_step, False
    evaluates = settings.evaluates_at(step)
    if evaluates:
        if run.val_src is not None:
            record["val_bpd"] = evaluate_split(run, state, run.val_src, VAL_SPLIT_ID, eval_cache)
        if run.test_src is not None and settings.eval_test_during_training:
            record["test_bpd"] = evaluate_split(run, state, run.test_src, TEST_SPLIT_ID,
                                                eval_cache)
        score = record.get("val_bpd")
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
                    title=f"{settings.model.name} on {settings.dataset.name}")
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
           hooks: Sequence[Hook], eval_cache: dict) -> Tuple[TrainState, Progress, bool]:
    """Alternate :func:`train_steps` and :func:`evaluate_and_checkpoint` to the last step.

    Returns ``(state, progress, interrupted)``; ``interrupted`` after a SIGTERM (a
    checkpoint of the current step is saved first).
    """
    num_steps = run.settings.num_train_steps
    pbar = _progress_bar(run, files, progress.step)
    shown: Dict[str, float] = {}
    try:
        with _StopFlag() as flag:
            batches = iter(loader)
            while progress.step < num_steps:
                state, progress = train_steps(
                    run, state, batches, progress, stop=lambda: flag.stop, hooks=hooks,
                    on_step=None if pbar is None else lambda: pbar.update(1))
                stopping = flag.stop
                progress, record = evaluate_and_checkpoint(
                    run, files, state, loader, progress, stopping=stopping,
                    eval_cache=eval_cache)
                if pbar is not None and record:
                    shown.update({k: v for k, v in record.items()
                                  if k in ("train_bpd", "val_bpd", "test_bpd")})
                    pbar.set_postfix({k: f"{v:.3f}" for k, v in shown.items()}, refresh=False)
                if stopping and progress.step < num_steps:
                    return state, progress, True
    finally:
        if pbar is not None:
            pbar.close()
    return state, progress, False


def finish(run: Run, files: RunFiles, state: TrainState, progress: Progress, *,
           eval_cache: Optional[dict] = None) -> dict:
    """Final figures of a completed run; writes samples and ``results.json``.

    Test (and validation) bits/dim over the whole splits of the best-on-validation
    checkpoint (the last state when there is no validation split), and sample grids at
    ``sample_temperatures`` from it.
    """
    settings = run.settings
    best = (files.checkpoints.restore_best(abstract_state(run))
            if run.val_src is not None else None)
    final_state = best[0] if best is not None else state
    results = {
        "step": progress.step, "best_step": int(jax.device_get(final_state.step)),
        "best_val_bpd": progress.best_val,
        "num_skipped": int(jax.device_get(state.num_skipped)),
        "dataset": settings.dataset.name, "model": settings.model.name,
        "use_ema": settings.use_ema,
    }
    if run.test_src is not None:
        results["test_bpd"] = evaluate_split(run, final_state, run.test_src, TEST_SPLIT_ID,
                                             eval_cache)
    if run.val_src is not None:
        results["val_bpd"] = evaluate_split(run, final_state, run.val_src, VAL_SPLIT_ID,
                                            eval_cache)
    results["samples"] = save_samples(run, final_state, files.workdir,
                                      settings.sample_temperatures,
                                      use_ema=settings.eval_use_ema)
    if files.is_main:
        with open(os.path.join(files.workdir, "results.json"), "w") as f:
            json.dump(results, f, indent=2, sort_keys=True)
    return results


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
      ``{"interrupted": True, "step": s}`` after a SIGTERM.

    Raises:
      ValueError: a bad config or work directory, before anything is written.
      FloatingPointError: too many non-finite steps in a row.
    """
    run = prepare_run(config, workdir)       # every ValueError happens here
    is_main = jax.process_index() == 0
    os.makedirs(workdir, exist_ok=True)
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
            log.warning("interrupted at step %d; checkpoint saved in %s", progress.step, workdir)
            return {"interrupted": True, "step": progress.step}
        results = finish(run, files, state, progress, eval_cache=eval_cache)
    finally:
        files.checkpoints.close()
    log.info("done: %s", json.dumps({k: v for k, v in results.items() if k != "samples"}))
    return results

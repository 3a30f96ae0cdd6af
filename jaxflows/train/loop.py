"""``train_and_evaluate(config, workdir)``: the whole training run, testable from Python.

What a run does, in order:

1. Checks everything that can be checked before any compute (config schema, dataset
   name, model kwargs, batch sizes against the device count, the fingerprint of a
   checkpoint already in ``workdir``) and raises ``ValueError`` without touching the
   work directory.
2. Opens the train / validation / test splits, builds the flow from
   ``jaxflows.models.MODELS[config.model.name]``, writes ``config.json``.
3. Restores the latest checkpoint of ``workdir`` (state, data-loader position,
   best-so-far, partial metric sums) or initialises (ActNorm on a global batch).
4. Trains ``config.num_train_steps`` steps with a tqdm progress bar; every
   ``log_every`` steps appends the mean train bits/dim to ``metrics.jsonl``; every
   ``eval_every`` steps evaluates validation (and test) bits/dim over the whole
   splits, redraws ``curves.png``, saves a checkpoint and, when validation improved,
   the best checkpoint.
5. On SIGTERM: saves a checkpoint at the current step and returns
   (``{"interrupted": True}``); rerunning the same command resumes exactly.
6. At the end: test bits/dim of the best-on-validation EMA parameters over the whole
   test split, sample grids at ``config.sample_temperatures`` (``samples_T*.png``),
   ``results.json``.
"""
from __future__ import annotations

import json
import logging
import math
import os
import signal
import threading
import time
from typing import Callable, Dict, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxflows.train import checkpoint as ckpt_lib
from jaxflows.train.config import (config_to_dict, dataset_pad, describe_fingerprint,
                                   model_fingerprint, model_kwargs, validate_config)
from jaxflows.train.mesh import global_batch, make_mesh, replicated
from jaxflows.train.metrics import MetricsLog, RunningMean
from jaxflows.train.optim import make_optimizer, make_schedule
from jaxflows.train.plots import plot_curves, save_image_grid, to_pixels
from jaxflows.train.step import Steps, make_steps

__all__ = ["train_and_evaluate", "prepare_run", "Run", "evaluate_split", "save_samples",
           "build_flow", "abstract_state", "get_split_source"]

log = logging.getLogger("jaxflows.train")

Hook = Callable[[int, object], None]

# Compiled functions shared by runs of the same model/optimiser in one process
# (tests, notebooks re-running a cell): jax.jit caches per function object.
_STEPS_CACHE: Dict[str, Steps] = {}


class Run:
    """What :func:`prepare_run` sets up: data sources, flow, optimiser, compiled steps."""

    def __init__(self, **kw):
        self.__dict__.update(kw)


def build_flow(config, info):
    """The flow of ``config.model`` for images of the dataset ``info``."""
    from jaxflows import models  # pylint: disable=import-outside-toplevel
    return models.MODELS[config.model.name](
        tuple(info.image_shape), num_bins=info.num_bins, **model_kwargs(config))


def get_split_source(config, split: str):
    """The source of ``split`` of ``config.dataset`` as the model sees it.

    ``jaxflows.data.get_source`` with the config's data directory, download flag and
    ``pad`` (images zero-padded by ``config.dataset.pad`` pixels on each side).
    """
    from jaxflows import data as jdata  # pylint: disable=import-outside-toplevel
    ds = config.dataset
    return jdata.get_source(ds.name, split, data_dir=ds.get("data_dir"),
                            download=ds.get("download", False), pad=dataset_pad(config))


def _get_sources(config):
    ds = config.dataset
    train = get_split_source(config, ds.train_split)
    val = get_split_source(config, ds.val_split) if ds.val_split else None
    test = get_split_source(config, ds.test_split) if ds.test_split else None
    return train, val, test


def prepare_run(config, workdir: Optional[str] = None, *, check_workdir: bool = True) -> Run:
    """Validate ``config`` and build the run's pieces; nothing is written.

    Raises ``ValueError`` (before any compute) for a bad config, a batch size the
    devices cannot split, or a ``workdir`` holding a checkpoint of another model.
    """
    mesh = make_mesh()
    info = validate_config(config, num_devices=mesh.devices.size)
    fingerprint = model_fingerprint(config, info)
    if workdir is not None and check_workdir:
        found = ckpt_lib.read_fingerprint(workdir)
        if found is not None and found[0] != fingerprint:
            raise ValueError(
                f"workdir {workdir!r} holds a checkpoint of a different model "
                f"(stored model: {json.dumps(found[1], sort_keys=True)}; this config: "
                f"{json.dumps(describe_fingerprint(config, info), sort_keys=True)}). "
                "Use another --workdir, or the config it was trained with.")
    train_src, val_src, test_src = _get_sources(config)
    if len(train_src) < config.batch_size:
        raise ValueError(f"config.batch_size={config.batch_size} is larger than the train "
                         f"split {config.dataset.train_split!r} ({len(train_src)} examples).")
    flow = build_flow(config, info)
    tx = make_optimizer(config.optim, config.num_train_steps)
    num_dims = int(np.prod(info.image_shape))
    key = json.dumps({
        "fp": fingerprint, "optim": config_to_dict(config.optim),
        "steps": config.num_train_steps, "ema": config.ema_decay, "use_ema": config.eval_use_ema,
        "n": config.num_samples, "devices": [d.id for d in mesh.devices.flat]}, sort_keys=True)
    steps = _STEPS_CACHE.get(key)
    if steps is None:
        steps = make_steps(flow, tx, mesh, num_dims=num_dims, ema_decay=config.ema_decay,
                           use_ema=config.eval_use_ema, num_samples=config.num_samples,
                           schedule=make_schedule(config.optim, config.num_train_steps))
        if len(_STEPS_CACHE) > 8:
            _STEPS_CACHE.pop(next(iter(_STEPS_CACHE)))
        _STEPS_CACHE[key] = steps
    return Run(config=config, mesh=mesh, info=info, fingerprint=fingerprint, flow=flow, tx=tx,
               steps=steps, train_src=train_src, val_src=val_src, test_src=test_src,
               num_dims=num_dims, schedule=make_schedule(config.optim, config.num_train_steps))


def _init_batch_size(config, n_train: int, mesh) -> int:
    ndev = mesh.devices.size
    return max(ndev, min(config.init_batch_size, (n_train // ndev) * ndev))


def abstract_state(run: Run):
    """Shapes/dtypes/shardings of the run's TrainState, without computing it."""
    bs = _init_batch_size(run.config, len(run.train_src), run.mesh)
    images = jax.ShapeDtypeStruct((bs,) + tuple(run.info.image_shape), jnp.uint8)
    shapes = jax.eval_shape(run.steps.init, images, jax.ShapeDtypeStruct((), jnp.int32))
    rep = replicated(run.mesh)
    return jax.tree_util.tree_map(
        lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=rep), shapes)


def _init_state(run: Run):
    from jaxflows import data as jdata  # pylint: disable=import-outside-toplevel
    bs = _init_batch_size(run.config, len(run.train_src), run.mesh)
    loader = jdata.make_loader(run.train_src, global_batch_size=bs, seed=run.config.seed + 1,
                               shuffle=True)
    images = next(iter(loader))["image"]
    return run.steps.init(global_batch(images, run.mesh), np.int32(run.config.seed))


_EVAL_CACHE_BYTES = 1 << 28


def _local_rows(start: int, global_bs: int):
    """Indices of this process's share of the global batch starting at ``start``."""
    per = global_bs // jax.process_count()
    lo = start + jax.process_index() * per
    return [i for i in range(lo, lo + per)], per


def evaluate_split(run: Run, state, source, split_id: int, cache: Optional[dict] = None) -> float:
    """Mean bits/dim over the WHOLE ``source``: the last batch is padded and masked.

    Dequantisation noise comes from a key fixed per split, so successive evaluations
    differ only through the parameters.
    """
    n = len(source)
    bs = run.config.eval_batch_size
    shape = tuple(run.info.image_shape)
    if cache is not None and n * int(np.prod(shape)) > _EVAL_CACHE_BYTES:
        cache = None     # large splits are streamed, not kept in host memory
    total, count = 0.0, 0.0
    sums = []
    for b, start in enumerate(range(0, n, bs)):
        rows, per = _local_rows(start, bs)
        ck = (split_id, b)
        if cache is not None and ck in cache:
            images, mask = cache[ck]
        else:
            images = np.zeros((per,) + shape, np.uint8)
            mask = np.zeros((per,), np.float32)
            valid = [i for i in rows if i < n]
            if valid:
                if hasattr(source, "get_batch"):
                    got = np.asarray(source.get_batch(np.asarray(valid))["image"])
                else:
                    got = np.stack([np.asarray(source[i]["image"]) for i in valid])
                images[:len(valid)] = got.reshape((len(valid),) + shape)
                mask[:len(valid)] = 1.0
            if cache is not None:
                cache[ck] = (images, mask)
        sums.append(run.steps.evaluate(state, global_batch(images, run.mesh),
                                       global_batch(mask, run.mesh),
                                       np.array([run.config.seed, 7919, split_id, b], np.int32)))
    for s, c in jax.device_get(sums):
        total += float(s)
        count += float(c)
    return total / max(count, 1.0)


def fixed_point_summary(intermediates) -> Dict[str, float]:
    """Fixed-point diagnostics sown by residual blocks' inverses while sampling.

    Residual flows invert by fixed-point iteration and sow, per solve, ``iterations``,
    ``residual`` and ``not_converged`` under ``"fixed_point"`` in the
    ``"intermediates"`` collection; this reduces them with
    ``jaxflows.bijectors.residual.fixed_point_report`` (``num_solves == 0`` for flows
    with closed-form inverses).
    """
    try:
        from jaxflows.bijectors.residual import fixed_point_report  # pylint: disable=import-outside-toplevel
    except ImportError:  # pragma: no cover - residual flows not installed
        return {"num_solves": 0}
    return fixed_point_report(intermediates)


def save_samples(run: Run, state, workdir: str, temperatures: Sequence[float], *,
                 use_ema: bool = True, seed_offset: int = 0,
                 filename: str = "samples_T{t:g}.png") -> Dict[str, str]:
    """Sample grids ``filename.format(t=T)`` in ``workdir``; logs fixed-point reports."""
    variables = state.variables(use_ema and run.config.ema_decay > 0)
    paths = {}
    for i, t in enumerate(temperatures):
        ids = np.array([run.config.seed, 104729, seed_offset, i], np.int32)
        samples, inter = run.steps.sample(variables, ids, np.float32(t))
        samples = np.asarray(jax.device_get(samples))
        report = fixed_point_summary(jax.device_get(inter))
        if report.get("num_solves"):
            log.log(logging.WARNING if report["num_not_converged"] else logging.INFO,
                    "sampling at T=%s: fixed-point inverse: %d not converged, max residual "
                    "%.3g, max iterations %d (%d solves)", t, report["num_not_converged"],
                    report["max_residual"], report["max_iterations"], report["num_solves"])
        nonfinite = int(np.sum(~np.isfinite(samples)))
        if nonfinite:
            log.warning("sampling at T=%s: %d non-finite values (shown as 0)", t, nonfinite)
        path = os.path.join(workdir, filename.format(t=t))
        if jax.process_index() == 0:
            save_image_grid(path, to_pixels(samples, run.info.num_bins))
        paths[f"{t:g}"] = path
    return paths


class _StopFlag:
    """Set by SIGTERM (and SIGINT): the loop checkpoints and returns at the next step."""

    def __init__(self):
        self.stop = False
        self._old = {}

    def _handler(self, signum, frame):  # pylint: disable=unused-argument
        log.warning("signal %d received: checkpointing and stopping", signum)
        self.stop = True

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM,):
                self._old[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)
        return False


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
    """
    run = prepare_run(config, workdir)       # every ValueError happens here
    is_main = jax.process_index() == 0
    os.makedirs(workdir, exist_ok=True)
    if is_main:
        tmp = os.path.join(workdir, "config.json.tmp")
        with open(tmp, "w") as f:
            json.dump(config_to_dict(config), f, indent=2, sort_keys=True)
        os.replace(tmp, os.path.join(workdir, "config.json"))

    from jaxflows import data as jdata  # pylint: disable=import-outside-toplevel
    metrics_log = MetricsLog(os.path.join(workdir, "metrics.jsonl"), enabled=is_main)
    ckpts = ckpt_lib.Checkpoints(workdir, config.keep_checkpoints)
    loader = jdata.make_loader(run.train_src, global_batch_size=config.batch_size,
                               seed=config.seed, shuffle=True)
    has_val = run.val_src is not None
    meta_base = {"fingerprint": run.fingerprint, "model": describe_fingerprint(config, run.info)}

    if ckpts.latest_step() is not None:
        abstract = abstract_state(run)
        state, loader_state, meta = ckpts.restore(abstract)
        loader.set_state(loader_state)
        step = int(jax.device_get(state.step))
        running = RunningMean(meta.get("running"))
        best_val, best_step = meta.get("best_val"), meta.get("best_step")
        metrics_log.truncate(step)
        ckpts.drop_best_after(step)
        if best_step == step and ckpts.best.latest_step() != step:
            ckpts.save_best(state, dict(meta_base, best_val=best_val, best_step=best_step))
        log.info("resumed from step %d of %s", step, workdir)
    else:
        state = _init_state(run)
        step, running, best_val, best_step = 0, RunningMean(), None, None

    eval_cache: dict = {}
    last: Dict[str, float] = {}
    num_steps = config.num_train_steps
    pending = []

    def drain(keep_last: bool):
        nonlocal pending, last_lr
        todo, pending = (pending[:-1], pending[-1:]) if keep_last else (pending, [])
        for s, m in todo:
            m = jax.device_get(m)
            last_lr = float(m.get("lr", float("nan")))
            if bool(m["finite"]):
                run.consecutive_nonfinite = 0
                running.add({"train_bpd": float(m["loss"]), "grad_norm": float(m["grad_norm"])})
            else:
                run.consecutive_nonfinite += 1
                log.warning("step %d: non-finite loss or gradient; update skipped", s)
                if run.consecutive_nonfinite > config.optim.max_consecutive_nonfinite:
                    raise FloatingPointError(
                        f"{run.consecutive_nonfinite} consecutive non-finite steps (limit "
                        f"config.optim.max_consecutive_nonfinite="
                        f"{config.optim.max_consecutive_nonfinite}); stopping at step {s}.")

    run.consecutive_nonfinite = 0
    last_lr = float("nan")
    pbar = None
    if config.progress_bar and is_main and step < num_steps:
        from tqdm.auto import tqdm  # pylint: disable=import-outside-toplevel
        pbar = tqdm(total=num_steps, initial=step, unit="step", dynamic_ncols=True,
                    mininterval=1.0, desc=os.path.basename(os.path.normpath(workdir)) or "train")
    interrupted = False
    with _StopFlag() as flag:
        it = iter(loader)
        while step < num_steps:
            batch = next(it)
            state, m = run.steps.train(state, global_batch(batch["image"], run.mesh))
            step += 1
            pending.append((step, m))
            drain(keep_last=True)
            for hook in hooks:
                hook(step, state)
            if pbar is not None:
                pbar.update(1)
            is_log = step % config.log_every == 0 or step == num_steps
            is_eval = step % config.eval_every == 0 or step == num_steps
            is_ckpt = is_eval or step % config.checkpoint_every == 0 or flag.stop
            if is_log or is_eval or is_ckpt:
                drain(keep_last=False)
            record = {}
            if is_log and running.count:
                record.update(running.result())
                record["lr"] = last_lr
                record["num_skipped"] = int(jax.device_get(state.num_skipped))
                running.reset()
            if is_eval:
                if has_val:
                    record["val_bpd"] = evaluate_split(run, state, run.val_src, 1, eval_cache)
                if run.test_src is not None and config.eval_test_during_training:
                    record["test_bpd"] = evaluate_split(run, state, run.test_src, 2, eval_cache)
            improved = False
            if is_eval:
                score = record.get("val_bpd")
                if not has_val:
                    improved = True      # no validation split: the last one is "best"
                elif score is not None and math.isfinite(score) and (
                        best_val is None or score < best_val):
                    improved = True
                if improved:
                    best_val, best_step = score, step
            if record:
                record["step"] = step
                metrics_log.write(record)
                last.update(record)
                if pbar is not None:
                    pbar.set_postfix({k: f"{v:.3f}" for k, v in last.items()
                                      if k in ("train_bpd", "val_bpd", "test_bpd")}, refresh=False)
            if is_eval and is_main:
                plot_curves(os.path.join(workdir, "curves.png"), metrics_log.read(),
                            title=f"{config.model.name} on {config.dataset.name}")
            if is_ckpt:
                meta = dict(meta_base, best_val=best_val, best_step=best_step,
                            running=running.state())
                ckpts.save(state, loader.get_state(), meta)
                if improved:
                    ckpts.save_best(state, meta)
            if flag.stop and step < num_steps:
                interrupted = True
                break
    if pbar is not None:
        pbar.close()
    if interrupted:
        ckpts.close()
        log.warning("interrupted at step %d; checkpoint saved in %s", step, workdir)
        return {"interrupted": True, "step": step}

    # Final evaluation: the best-on-validation checkpoint, whole test split.
    best = ckpts.restore_best(abstract_state(run)) if has_val else None
    final_state = best[0] if best is not None else state
    final_step = int(jax.device_get(final_state.step))
    results = {
        "step": step, "best_step": final_step, "best_val_bpd": best_val,
        "num_skipped": int(jax.device_get(state.num_skipped)),
        "dataset": config.dataset.name, "model": config.model.name,
        "use_ema": bool(config.eval_use_ema and config.ema_decay > 0),
    }
    if run.test_src is not None:
        results["test_bpd"] = evaluate_split(run, final_state, run.test_src, 2, eval_cache)
    if has_val:
        results["val_bpd"] = evaluate_split(run, final_state, run.val_src, 1, eval_cache)
    results["samples"] = save_samples(run, final_state, workdir, config.sample_temperatures,
                                      use_ema=config.eval_use_ema)
    if is_main:
        with open(os.path.join(workdir, "results.json"), "w") as f:
            json.dump(results, f, indent=2, sort_keys=True)
    ckpts.close()
    log.info("done: %s", json.dumps({k: v for k, v in results.items() if k != "samples"}))
    return results

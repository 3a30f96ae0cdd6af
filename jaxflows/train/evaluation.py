"""Evaluating and sampling a run's state: bits/dim over whole splits, sample grids."""
from __future__ import annotations

import logging
import os
from typing import Dict, Optional, Sequence

import jax
import numpy as np

from jaxflows.bijectors.residual import fixed_point_report
from jaxflows.train.mesh import global_batch
from jaxflows.train.plots import save_image_grid, to_pixels

__all__ = ["evaluate_split", "save_samples", "fixed_point_summary"]

log = logging.getLogger("jaxflows.train")

# Splits larger than this (in pixels) are streamed, not kept in host memory.
_EVAL_CACHE_BYTES = 1 << 28


def _local_rows(start: int, global_bs: int):
    """Indices of this process's share of the global batch starting at ``start``."""
    per = global_bs // jax.process_count()
    lo = start + jax.process_index() * per
    return list(range(lo, lo + per)), per


def evaluate_split(run, state, source, split_id: int, cache: Optional[dict] = None) -> float:
    """Mean bits/dim over the WHOLE ``source``: the last batch is padded and masked.

    Args:
      run: the :class:`~jaxflows.train.run.Run` (its ``eval_batch_size``, seed, mesh and
        compiled ``evaluate``).
      state: the TrainState to evaluate (EMA parameters if the run uses them).
      source: a random-access source of ``{"image": ...}`` records.
      split_id: fixes the dequantisation noise of the split (1 validation, 2 test), so
        successive evaluations differ only through the parameters.
      cache: a dict kept across evaluations of the same run, holding the host batches
        of small splits.
    """
    n = len(source)
    bs = run.settings.eval_batch_size
    shape = tuple(run.info.image_shape)
    if cache is not None and n * int(np.prod(shape)) > _EVAL_CACHE_BYTES:
        cache = None
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
                                       np.array([run.settings.seed, 7919, split_id, b],
                                                np.int32)))
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
    return fixed_point_report(intermediates)


def save_samples(run, state, workdir: str, temperatures: Sequence[float], *,
                 use_ema: bool = True, seed_offset: int = 0,
                 filename: str = "samples_T{t:g}.png") -> Dict[str, str]:
    """Sample grids ``filename.format(t=T)`` in ``workdir``; logs fixed-point reports.

    ``run.settings.num_samples`` samples per temperature (EMA parameters if ``use_ema``
    and the run keeps an EMA); only process 0 writes. Returns ``{"T": path}``.
    """
    variables = state.variables(use_ema and run.settings.ema_decay > 0)
    paths = {}
    for i, t in enumerate(temperatures):
        ids = np.array([run.settings.seed, 104729, seed_offset, i], np.int32)
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

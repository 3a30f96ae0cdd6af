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

__all__ = ["evaluate_split", "save_samples", "fixed_point_summary",
           "importance_weighted_log_prob", "evaluate_split_iw"]

log = logging.getLogger("jaxflows.train")

# Splits larger than this (in pixels) are streamed, not kept in host memory.
_EVAL_CACHE_BYTES = 1 << 28


def _local_rows(start: int, global_bs: int):
    """Indices of this process's share of the global batch starting at ``start``."""
    per = global_bs // jax.process_count()
    lo = start + jax.process_index() * per
    return list(range(lo, lo + per)), per


def _check_finite(images: np.ndarray, indices):
    """``ValueError`` naming the examples if floating-point ``images`` hold NaN or inf."""
    if not np.issubdtype(images.dtype, np.inexact):
        return
    bad = ~np.all(np.isfinite(images.reshape(images.shape[0], -1)), axis=1)
    if bad.any():
        rows = [int(indices[i]) for i in np.nonzero(bad)[0][:8]]
        raise ValueError(f"evaluation data has NaN or inf values (examples {rows} of the "
                         "split): a density is defined only for finite inputs.")


def evaluate_split(run, state, source, split_id: int, cache: Optional[dict] = None) -> float:
    """Mean bits/dim over the WHOLE ``source``: the last batch is padded and masked.

    Args:
      run: the :class:`~jaxflows.train.run.Run` (its ``eval_batch_size``, seed, mesh and
        compiled ``evaluate``).
      state: the TrainState to evaluate (EMA parameters if the run uses them).
      source: a random-access source of ``{"image": ...}`` records (floating-point
        images holding NaN or inf raise ``ValueError`` naming the examples: under
        ``jit`` the flow could only return NaN for them).
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
                got = got.reshape((len(valid),) + shape)
                _check_finite(got, valid)
                images[:len(valid)] = got
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
        if report.get("num_not_converged"):
            log.warning("sampling at T=%s: the fixed-point inverse did not converge for %d "
                        "example-solves (max residual %.3g after %d iterations, %d solves): "
                        "these samples are inaccurate; raise config.model.solver.max_iter "
                        "(FixedPointSolver) or lower the blocks' Lipschitz coefficient", t,
                        report["num_not_converged"], report["max_residual"],
                        report["max_iterations"], report["num_solves"])
        elif report.get("num_solves"):
            log.info("sampling at T=%s: fixed-point inverse converged (max residual %.3g, "
                     "max iterations %d, %d solves)", t, report["max_residual"],
                     report["max_iterations"], report["num_solves"])
        nonfinite = int(np.sum(~np.isfinite(samples)))
        if nonfinite:
            log.warning("sampling at T=%s: %d non-finite values (shown as 0)", t, nonfinite)
        path = os.path.join(workdir, filename.format(t=t))
        if jax.process_index() == 0:
            save_image_grid(path, to_pixels(samples, run.info.num_bins))
        paths[f"{t:g}"] = path
    return paths


def importance_weighted_log_prob(flow, variables, images, key, num_samples: int, *,
                                 chunk: int = 1, return_mean: bool = False):
    r"""The importance-weighted bound on ``log P(k)`` with ``S = num_samples`` samples.

    .. math::

        \mathcal{L}_S(k) = \log \frac{1}{S} \sum_{s=1}^{S}
            \exp\big(\log p(k + u_s) - \log q(u_s | k)\big),
        \qquad u_s \sim q(\cdot | k),

    (Burda et al. 2016; Flow++ Sec. 3.1 and its evaluation with ``S`` = 4,096):
    ``E[L_1] <= E[L_S] <= E[L_{S'}] <= log P(k)`` for ``S <= S'``, and ``L_S -> log P(k)`` as
    ``S`` grows. ``q`` is the flow's variational dequantiser, or uniform noise (``log q =
    0``) for flows without one (:func:`jaxflows.train.step.dequantized_log_prob`).

    The samples are drawn ``chunk`` at a time (the images tiled ``chunk`` times along the
    batch) in a ``lax.scan`` of ``S / chunk`` steps that carries a running log-sum-exp
    (running maximum and rescaled sum), so memory does not grow with ``S``. The
    accumulation is in float64 when ``jax_enable_x64`` is on, else float32 (the running
    maximum keeps every term in ``[0, 1]``: no overflow, relative error about ``S eps``).
    Sample ``s`` uses the key ``fold_in(key, s // chunk)``.

    Args:
      flow: a ``jaxflows`` flow (e.g. :func:`jaxflows.models.flowpp`).
      variables: its variables (parameters of the dequantiser included).
      images: integer pixel values ``[B, H, W, C]``.
      key: a PRNG key.
      num_samples: ``S >= 1``, a multiple of ``chunk``.
      chunk: samples per scan step (memory grows with ``chunk``, not with ``S``).
      return_mean: also return the mean of the ``S`` single-sample bounds.

    Returns:
      ``L_S`` per image ``[B]`` (nats), or ``(L_S, mean single-sample bound)``.

    Raises:
      ValueError: ``num_samples`` or ``chunk`` not a positive int, or ``chunk`` not
        dividing ``num_samples``.
    """
    import jax.numpy as jnp
    from jax import lax

    from jaxflows.train.step import dequantized_log_prob

    for name, v in (("num_samples", num_samples), ("chunk", chunk)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"importance_weighted_log_prob: {name} must be an int >= 1, "
                             f"got {v!r}.")
    if num_samples % chunk:
        raise ValueError(f"importance_weighted_log_prob: chunk={chunk} must divide "
                         f"num_samples={num_samples}.")
    b = images.shape[0]
    acc = jnp.float64 if jax.config.jax_enable_x64 else jnp.float32
    tiled = jnp.concatenate([images] * chunk, axis=0) if chunk > 1 else images

    def body(carry, step):
        m, total, mean = carry
        lp, _ = dequantized_log_prob(flow, variables, tiled, jax.random.fold_in(key, step),
                                     train=False)
        r = lp.reshape(chunk, b).astype(acc)
        m_new = jnp.maximum(m, jnp.max(r, axis=0))
        ref = jnp.where(jnp.isfinite(m_new), m_new, 0)
        total = total * jnp.exp(m - ref) + jnp.sum(jnp.exp(r - ref), axis=0)
        return (m_new, total, mean + jnp.sum(r, axis=0) / num_samples), None

    init = (jnp.full((b,), -jnp.inf, acc), jnp.zeros((b,), acc), jnp.zeros((b,), acc))
    (m, total, mean), _ = lax.scan(body, init, jnp.arange(num_samples // chunk))
    ref = jnp.where(jnp.isfinite(m), m, 0)
    bound = ref + jnp.log(total) - jnp.log(jnp.asarray(num_samples, acc))
    return (bound, mean) if return_mean else bound


def evaluate_split_iw(run, state, source, split_id: int, num_samples: int, *,
                      chunk: int = 1):
    """Mean single-sample and importance-weighted bits/dim over the whole ``source``.

    Both from the same ``num_samples`` draws per image
    (:func:`importance_weighted_log_prob`): the single-sample figure is the mean of
    their bounds (what :func:`evaluate_split` estimates with one draw), the IW figure
    ``-L_S / (D ln 2)``, never larger on average. EMA parameters if the run uses them.

    Returns:
      ``(single_sample_bpd, iw_bpd)``.
    """
    import jax.numpy as jnp

    from jaxflows.metrics import bits_per_dim

    n = len(source)
    bs = run.settings.eval_batch_size
    shape = tuple(run.info.image_shape)
    num_dims = int(np.prod(shape))
    variables = state.variables(run.settings.use_ema)

    @jax.jit
    def batch_sums(variables, images, mask, ids):
        key = jax.random.PRNGKey(ids[0])
        for i in range(1, ids.shape[0]):
            key = jax.random.fold_in(key, ids[i])
        iw, mean = importance_weighted_log_prob(run.flow, variables, images, key, num_samples,
                                                chunk=chunk, return_mean=True)
        m = mask > 0
        one = jnp.where(m, bits_per_dim(mean.astype(jnp.float32), num_dims), 0.0)
        many = jnp.where(m, bits_per_dim(iw.astype(jnp.float32), num_dims), 0.0)
        return jnp.sum(one), jnp.sum(many), jnp.sum(mask)

    sums = []
    for b, start in enumerate(range(0, n, bs)):
        rows, per = _local_rows(start, bs)
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
        sums.append(batch_sums(variables, global_batch(images, run.mesh),
                               global_batch(mask, run.mesh),
                               np.array([run.settings.seed, 6151, split_id, b], np.int32)))
    one = many = count = 0.0
    for s1, s2, c in jax.device_get(sums):
        one, many, count = one + float(s1), many + float(s2), count + float(c)
    return one / max(count, 1.0), many / max(count, 1.0)

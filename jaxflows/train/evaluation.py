"""Evaluating and sampling a run's state: bits/dim over whole splits, sample grids."""
from __future__ import annotations

import logging
import os
from typing import Any, Dict, Optional, Sequence

import jax
import numpy as np

from jaxflows.bijectors.residual import fixed_point_report
from jaxflows.train.mesh import global_batch
from jaxflows.train.plots import plot_density_2d, save_image_grid, to_pixels

__all__ = ["evaluate_split", "evaluate_split_metrics", "save_samples", "fixed_point_summary",
           "importance_weighted_log_prob", "evaluate_split_iw", "save_density_plot",
           "evaluation_state", "evaluation_variables", "log_inverse_reports"]

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


def _read_rows(source, valid, shape):
    """``(examples, labels)`` of records ``valid`` of ``source`` (labels int32 ``[n]``, or
    ``[n, H, W]`` label maps).
    """
    from jaxflows.data.sources import stack_labels
    if hasattr(source, "get_batch"):
        batch = source.get_batch(np.asarray(valid))
        got, labels = np.asarray(batch["image"]), np.asarray(batch["label"])
    else:
        records = [source[i] for i in valid]
        got = np.stack([np.asarray(r["image"]) for r in records])
        labels = stack_labels([r.get("label", 0) for r in records])
    return got.reshape((len(valid),) + shape), labels.astype(np.int32)


def _label_buffer(run, rows: int) -> np.ndarray:
    """Zero labels of ``rows`` records: int32 ``[rows]``, or ``[rows, H, W]`` for a dataset
    of label maps (``run.info.label_shape``).
    """
    from jaxflows.train.run import label_shape
    return np.zeros((rows,) + label_shape(run.info), np.int32)


def evaluation_state(run, state, use_ema: bool):
    """``state`` ready to evaluate or sample with the EMA parameters (``use_ema``).

    A flow with spectrally normalised layers keeps power-iteration vectors (collection
    ``"lipschitz"``) that the training steps fit to the *live* parameters. For the EMA
    parameters they are refreshed here by ``config.eval_lipschitz_rounds`` training-mode
    passes (``run.steps.refresh``, on a zero batch of one example per device: the
    vectors depend on the weights only). Returns ``state`` itself when ``use_ema`` is
    false, the run keeps no EMA, or the flow has no such vectors. Training must go on
    from the original state.
    """
    from jaxflows.nn.lipschitz import LIPSCHITZ
    from jaxflows.train.run import device_batch
    use_ema = bool(use_ema and run.settings.ema_decay > 0)
    if not use_ema or LIPSCHITZ not in state.model_state or run.steps.refresh is None:
        return state
    rows = jax.local_device_count()
    shape = tuple(run.info.image_shape)
    dtype = np.uint8 if run.score == "bpd" else np.float32
    batch = device_batch(run, {"image": np.zeros((rows,) + shape, dtype),
                               "label": _label_buffer(run, rows)})
    return run.steps.refresh(state, batch, True)


def evaluation_variables(run, state, use_ema: bool) -> Dict[str, Any]:
    """The ``variables`` to evaluate or sample with: EMA parameters if ``use_ema`` and
    the run keeps an EMA, with power-iteration vectors fitted to them
    (:func:`evaluation_state`).
    """
    use_ema = bool(use_ema and run.settings.ema_decay > 0)
    return evaluation_state(run, state, use_ema).variables(use_ema)


def evaluate_split(run, state, source, split_id: int, cache: Optional[dict] = None) -> float:
    """Mean per-dimension score over the WHOLE ``source``: the last batch is padded and masked.

    ``evaluate_split_metrics(...)[run.score]`` (arguments there).
    """
    return evaluate_split_metrics(run, state, source, split_id, cache)[run.score]


def evaluate_split_metrics(run, state, source, split_id: int,
                           cache: Optional[dict] = None) -> Dict[str, float]:
    """``{run.score: mean per-dimension score}`` over the WHOLE ``source``, and for a hybrid
    model (``run.hybrid_lam`` set) ``"accuracy"``: the fraction of examples whose label
    is the argmax of the classifier's logits. The last batch is padded and masked.

    Bits/dim for images; for vector data (``run.score == "nats_per_dim"``) the mean
    negative log-likelihood in nats per dimension.

    Args:
      run: the :class:`~jaxflows.train.run.Run` (its ``eval_batch_size``, seed, mesh and
        compiled ``evaluate``).
      state: the TrainState to evaluate (EMA parameters if the run uses them).
      source: a random-access source of ``{"image": ..., "label": ...}`` records
        (floating-point examples holding NaN or inf raise ``ValueError`` naming them:
        under ``jit`` the flow could only return NaN for them). The labels (a class, or
        a label map of ``run.info.label_shape``) are used when the run's context needs
        them (``config.dataset.context``).
      split_id: fixes the dequantisation noise of the split (1 validation, 2 test), so
        successive evaluations differ only through the parameters.
      cache: a dict kept across evaluations of the same run, holding the host batches
        of small splits.

    A hybrid model's bits/dim is that of its ``log p(x)`` alone (the head plays no part).
    With EMA parameters, power-iteration vectors are first fitted to them
    (:func:`evaluation_state`).
    """
    from jaxflows.train.run import device_batch, label_shape
    state = evaluation_state(run, state, run.settings.use_ema)
    n = len(source)
    bs = run.settings.eval_batch_size
    shape = tuple(run.info.image_shape)
    dtype = np.uint8 if run.score == "bpd" else np.float32
    record_bytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    if label_shape(run.info):     # int32 label maps are kept too
        record_bytes += 4 * int(np.prod(label_shape(run.info)))
    if cache is not None and n * record_bytes > _EVAL_CACHE_BYTES:
        cache = None
    total, count, correct = 0.0, 0.0, 0.0
    sums = []
    for b, start in enumerate(range(0, n, bs)):
        rows, per = _local_rows(start, bs)
        ck = (split_id, b)
        if cache is not None and ck in cache:
            images, labels, mask = cache[ck]
        else:
            images = np.zeros((per,) + shape, dtype)
            labels = _label_buffer(run, per)
            mask = np.zeros((per,), np.float32)
            valid = [i for i in rows if i < n]
            if valid:
                got, got_labels = _read_rows(source, valid, shape)
                _check_finite(got, valid)
                images[:len(valid)] = got
                labels[:len(valid)] = got_labels
                mask[:len(valid)] = 1.0
            if cache is not None:
                cache[ck] = (images, labels, mask)
        sums.append(run.steps.evaluate(state, device_batch(run, {"image": images,
                                                                 "label": labels}),
                                       global_batch(mask, run.mesh),
                                       np.array([run.settings.seed, 7919, split_id, b],
                                                np.int32)))
    for out in jax.device_get(sums):
        total += float(out[0])
        count += float(out[1])
        if len(out) > 2:
            correct += float(out[2])
    result = {run.score: total / max(count, 1.0)}
    if getattr(run, "hybrid_lam", None) is not None:
        result["accuracy"] = correct / max(count, 1.0)
    return result


def fixed_point_summary(intermediates) -> Dict[str, float]:
    """Fixed-point diagnostics sown by residual blocks' inverses while sampling.

    Residual flows invert by fixed-point iteration and sow, per solve, ``iterations``,
    ``residual`` and ``not_converged`` under ``"fixed_point"`` in the
    ``"intermediates"`` collection; this reduces them with
    ``jaxflows.bijectors.residual.fixed_point_report`` (``num_solves == 0`` for flows
    with closed-form inverses).
    """
    return fixed_point_report(intermediates)


def log_inverse_reports(t: float, intermediates) -> Dict[str, Dict[str, Any]]:
    """Logs the numerical inverses' diagnostics sown while sampling at temperature ``t``.

    Two kinds: residual blocks' fixed-point solves (:func:`fixed_point_summary`) and
    elementwise bisection inverses of MixLogCDF / DSF / DDSF transformers
    (:func:`jaxflows.bijectors.monotone_inverse_report`). An inverse that did not reach
    its tolerance is a warning naming how many solves missed it and the largest
    residual; otherwise one info line per kind that ran. Returns both reports.
    """
    from jaxflows.bijectors import monotone_inverse_report
    fixed = fixed_point_summary(intermediates)
    if fixed.get("num_not_converged"):
        log.warning("sampling at T=%s: the fixed-point inverse did not converge for %d "
                    "example-solves (max residual %.3g after %d iterations, %d solves): "
                    "these samples are inaccurate; raise config.model.solver.max_iter "
                    "(FixedPointSolver) or lower the blocks' Lipschitz coefficient", t,
                    fixed["num_not_converged"], fixed["max_residual"],
                    fixed["max_iterations"], fixed["num_solves"])
    elif fixed.get("num_solves"):
        log.info("sampling at T=%s: fixed-point inverse converged (max residual %.3g, "
                 "max iterations %d, %d solves)", t, fixed["max_residual"],
                 fixed["max_iterations"], fixed["num_solves"])
    mono = monotone_inverse_report(intermediates)
    if mono["num_not_converged"]:
        log.warning("sampling at T=%s: the bisection inverse of %d elements did not reach "
                    "its tolerance (max residual %.3g, max iterations %d, %d solves): "
                    "these samples are inaccurate", t, mono["num_not_converged"],
                    mono["max_residual"], mono["max_iterations"], mono["num_solves"])
    elif mono["num_solves"]:
        log.info("sampling at T=%s: bisection inverse converged (max residual %.3g, max "
                 "iterations %d, %d solves)", t, mono["max_residual"],
                 mono["max_iterations"], mono["num_solves"])
    return {"fixed_point": fixed, "monotone": mono}


def save_samples(run, state, workdir: str, temperatures: Sequence[float], *,
                 use_ema: bool = True, seed_offset: int = 0,
                 filename: str = "samples_T{t:g}.png") -> Dict[str, str]:
    """Sample grids ``filename.format(t=T)`` in ``workdir``; logs fixed-point reports.

    ``run.settings.num_samples`` samples per temperature (EMA parameters if ``use_ema``
    and the run keeps an EMA); only process 0 writes. Returns ``{"T": path}``.

    A conditional run (``config.dataset.context``) samples with the contexts of
    ``run.sample_cond``: for ``"label"`` sample ``i`` is of class ``i mod C`` and the
    grid has ``C`` columns (column ``c`` is class ``c``, each row one sample of every
    class); for ``"lowres:F"``, ``"mask:T"`` and ``"segmentation"`` sample ``i`` is
    conditioned on the ``i``-th validation (or test) record (its image, or its label map).
    Vector data are saved as ``.npy`` arrays ``[num_samples, D]``
    (``filename`` with its extension replaced), not as images.
    """
    variables = evaluation_variables(run, state, use_ema)
    vector = run.score != "bpd"
    if vector:
        filename = os.path.splitext(filename)[0] + ".npy"
    cond = run.sample_cond
    ncols = 0
    if cond is not None and run.settings.dataset.context == "label":
        ncols = int(run.info.num_classes)
    paths = {}
    for i, t in enumerate(temperatures):
        ids = np.array([run.settings.seed, 104729, seed_offset, i], np.int32)
        if cond is None:
            samples, inter = run.steps.sample(variables, ids, np.float32(t))
        else:
            samples, inter = run.steps.sample(variables, ids, np.float32(t), cond)
        samples = np.asarray(jax.device_get(samples))
        log_inverse_reports(t, jax.device_get(inter))
        nonfinite = int(np.sum(~np.isfinite(samples)))
        if nonfinite:
            log.warning("sampling at T=%s: %d non-finite values (shown as 0)", t, nonfinite)
        path = os.path.join(workdir, filename.format(t=t))
        if jax.process_index() == 0:
            if vector:
                np.save(path, samples)
            else:
                save_image_grid(path, to_pixels(samples, run.info.num_bins), ncols=ncols)
        paths[f"{t:g}"] = path
    return paths


def save_density_plot(run, state, workdir: str, *, points: int = 201,
                      max_data: int = 20000, write: bool = True,
                      filename: str = "density.png") -> Dict[str, Any]:
    """``density.png``: the learned density of a 2-D flow beside the data and its samples.

    The density ``exp(log p)`` (EMA parameters if the run uses them) on a
    ``points x points`` grid over ``[-L, L]^2``, where ``L`` is 1.15 times the 99.9th
    percentile of ``|x|`` over the (first ``max_data``) training points, next to a
    histogram of those points and one of ``num_samples`` samples at temperature 1.
    An unconditional 2-D vector run only.

    Returns ``{"path": ..., "limit": L, "mass": m}``, ``m`` the grid's Riemann sum of
    the density: the probability mass inside the square (close to 1 for a density
    that does not put mass outside it).
    """
    from jaxflows.data import toy2d
    if run.num_dims != 2 or run.score == "bpd" or run.settings.dataset.context:
        raise ValueError("save_density_plot: needs an unconditional run on 2-D vectors, got "
                         f"{run.info.name!r} of shape {tuple(run.info.image_shape)}.")
    n = min(len(run.train_src), max_data)
    data = np.asarray(run.train_src.get_batch(np.arange(n))["image"], np.float32)
    limit = float(np.quantile(np.abs(data), 0.999)) * 1.15
    variables = evaluation_variables(run, state, run.settings.use_ema)

    @jax.jit
    def log_prob(x):
        return run.flow.apply(variables, x, train=False)

    density, mass = toy2d.grid_density(log_prob, limit=limit, points=points)
    samples, _ = run.steps.sample(variables, np.array([run.settings.seed, 104729, 7, 0],
                                                      np.int32), np.float32(1.0))
    path = os.path.join(workdir, filename)
    if write:
        plot_density_2d(path, density, data, limit=limit, samples=np.asarray(samples),
                        title=f"{run.settings.model.name} on {run.info.name} "
                              f"(grid mass {mass:.3f})")
    return {"path": path, "limit": limit, "mass": mass}


def importance_weighted_log_prob(flow, variables, images, key, num_samples: int, *,
                                 chunk: int = 1, return_mean: bool = False, context=None):
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
      context: the flow's context for ``images`` (``None``: unconditional).

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
    tiled_ctx = None
    if context is not None:
        tiled_ctx = (jnp.concatenate([context] * chunk, axis=0) if chunk > 1 else context)

    def body(carry, step):
        m, total, mean = carry
        lp, _ = dequantized_log_prob(flow, variables, tiled, jax.random.fold_in(key, step),
                                     train=False, context=tiled_ctx)
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
    from jaxflows.train.step import make_context

    if getattr(run, "hybrid_lam", None) is not None:
        raise ValueError("evaluate_split_iw: not for hybrid models (config.hybrid): use "
                         "evaluate_split_metrics.")
    if run.score != "bpd":
        raise ValueError("evaluate_split_iw: importance weighting over dequantisation noise "
                         "applies to images; vector data have an exact log-likelihood "
                         "(use evaluate_split).")
    context_of = make_context(run.settings.dataset.context)
    n = len(source)
    bs = run.settings.eval_batch_size
    shape = tuple(run.info.image_shape)
    num_dims = int(np.prod(shape))
    variables = evaluation_variables(run, state, run.settings.use_ema)

    @jax.jit
    def batch_sums(variables, images, labels, mask, ids):
        key = jax.random.PRNGKey(ids[0])
        for i in range(1, ids.shape[0]):
            key = jax.random.fold_in(key, ids[i])
        iw, mean = importance_weighted_log_prob(run.flow, variables, images, key, num_samples,
                                                chunk=chunk, return_mean=True,
                                                context=context_of(images, labels))
        m = mask > 0
        one = jnp.where(m, bits_per_dim(mean.astype(jnp.float32), num_dims), 0.0)
        many = jnp.where(m, bits_per_dim(iw.astype(jnp.float32), num_dims), 0.0)
        return jnp.sum(one), jnp.sum(many), jnp.sum(mask)

    sums = []
    for b, start in enumerate(range(0, n, bs)):
        rows, per = _local_rows(start, bs)
        images = np.zeros((per,) + shape, np.uint8)
        labels = _label_buffer(run, per)
        mask = np.zeros((per,), np.float32)
        valid = [i for i in rows if i < n]
        if valid:
            got, got_labels = _read_rows(source, valid, shape)
            images[:len(valid)] = got
            labels[:len(valid)] = got_labels
            mask[:len(valid)] = 1.0
        sums.append(batch_sums(variables, global_batch(images, run.mesh),
                               global_batch(labels, run.mesh), global_batch(mask, run.mesh),
                               np.array([run.settings.seed, 6151, split_id, b], np.int32)))
    one = many = count = 0.0
    for s1, s2, c in jax.device_get(sums):
        one, many, count = one + float(s1), many + float(s2), count + float(c)
    return one / max(count, 1.0), many / max(count, 1.0)

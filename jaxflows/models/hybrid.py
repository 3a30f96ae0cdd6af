r"""Hybrid models: one flow gives both ``p(x)`` and, through a head on its latent, ``p(y | x)``.

Nalisnick et al. 2019 ("Hybrid Models with Deep and Invertible Features") and Residual
Flows (Chen et al. 2019, Sec. 6.4 and Table 4) train a flow ``f`` and a classifier on
its latent ``z = f(x)`` jointly, by maximising

.. math::

    \mathbb{E}_{(x, y)}\big[\lambda \log p(x) + \log p(y \mid x)\big],
    \qquad \log p(x) = \log \mathcal{N}(f(x); 0, I)
        + \log\left|\det \tfrac{\partial f}{\partial x}\right|,

so the loss here is ``-(lambda * log p(x) + log p(y | x))`` averaged over the batch, with
``log p(x)`` in nats for the whole example (Table 4 uses ``lambda`` in ``{0, 1/D, 1}``:
``0`` is a pure classifier with an invertible backbone, ``1/D`` weighs the density per
dimension, ``1`` the full log-likelihood). Residual Flows report that residual blocks
keep their accuracy as ``lambda`` grows while coupling blocks lose it.

The head (:class:`HybridFlow`) reads the flow's latent in the multi-scale layout of
:mod:`jaxflows.models.multiscale` (the latent has the image's shape; the factored-out
half of every level sits at fixed coordinates, :func:`level_latents` takes them apart):

* ``features="final"``: the part of the latent that went through every level (the
  deepest level's output);
* ``features="pooled"``: every level's factored-out part and the final part, each
  through its own head and globally average-pooled, concatenated.

Each part goes through ``Conv 3x3 (hidden) -> ReLU -> global average pooling`` (images;
a ``Dense(hidden) -> ReLU`` for vector latents), or straight to the pooling when
``hidden=0``; a ``Dense(num_classes)`` gives the logits. Departures from the Residual
Flows reference (``lib/resflow.py``, ``classification_heads``): its heads read the
activations *before* each level's factor-out, and have an ActNorm before the ReLU;
here the heads read the latent itself (what is left of the flow's output, so a trained
hybrid model is still one flow plus a head) and have no normalisation.
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxflows.bijectors.reshape import squeeze2d
from jaxflows.distributions import Flow

__all__ = ["HybridFlow", "hybrid", "hybrid_loss", "level_latents", "multiscale_layout"]

Array = jax.Array
FEATURES = ("final", "pooled")


def level_latents(z: Array, levels: int, squeeze_last: bool = True) -> List[Array]:
    """The latent of a multi-scale flow split by level: ``[eps_0, ..., eps_{L-2}, final]``.

    In the layout of :class:`~jaxflows.models.MultiScale`, level ``l`` squeezes (all
    levels, the last only if ``squeeze_last``) and factors out channels ``[c/2:]``; the
    latent is rebuilt as ``unsqueeze(concat(deeper, eps_l))``. So, starting from ``z``:
    squeeze, take ``[..., c/2:]`` as ``eps_l`` and continue with ``[..., :c/2]``. With
    ``levels=1, squeeze_last=False`` the whole latent is the final part (flows without
    factor-out, and vector latents).

    Raises:
      ValueError: ``levels`` < 1, or a latent whose shape does not allow the squeezes.
    """
    if not isinstance(levels, int) or levels < 1:
        raise ValueError(f"level_latents: levels must be an int >= 1, got {levels!r}.")
    parts, cur = [], z
    for l in range(levels):
        if l < levels - 1 or squeeze_last:
            if cur.ndim != 4 or cur.shape[1] % 2 or cur.shape[2] % 2:
                raise ValueError(f"level_latents: level {l} squeezes a latent part of shape "
                                 f"{tuple(cur.shape)}; expected [B, H, W, C] with even H "
                                 "and W (is levels/squeeze_last that of the flow?).")
            cur = squeeze2d(cur)
        if l < levels - 1:
            c = cur.shape[-1]
            parts.append(cur[..., c // 2:])
            cur = cur[..., :c // 2]
    parts.append(cur)
    return parts


def multiscale_layout(flow: Flow) -> Tuple[int, bool]:
    """``(levels, squeeze_last)`` of ``flow``'s latent layout, for :func:`level_latents`.

    That of a :class:`~jaxflows.models.MultiScale` that is the flow's bijector or the
    last bijector of its ``Chain`` (glow, realnvp, resflow with ``factor_out=True``);
    ``(1, False)`` (the whole latent is final) for every other flow.
    """
    from jaxflows.models.multiscale import MultiScale
    body = flow.bijector
    items = getattr(body, "bijectors", None)
    if items:
        body = items[-1]
    if isinstance(body, MultiScale):
        return int(body.levels), bool(body.squeeze_last)
    return 1, False


class HybridFlow(nn.Module):
    """A flow and a classifier head on its latent: ``(log p(x), logits of p(y | x))``.

    Attributes:
      flow: the :class:`~jaxflows.distributions.Flow` (unconditional).
      num_classes: number of classes (>= 2).
      features: ``"final"`` or ``"pooled"`` (module docstring).
      hidden: width of each part's head (0: pooling only, a linear classifier).
      levels, squeeze_last: the latent layout (:func:`multiscale_layout`; the
        :func:`hybrid` factory fills them in).

    ``__call__(x, *, train=False) -> (log_px [B] in nats, logits [B, num_classes])``;
    ``init`` runs the flow's data-dependent initialisation (ActNorm) on ``x``. The
    flow's variables live under ``"flow"``, so ``{"params": variables["params"]["flow"],
    ...}`` is a plain variable dict of ``flow``.
    """

    flow: Flow
    num_classes: int
    features: str = "final"
    hidden: int = 0
    levels: int = 1
    squeeze_last: bool = False

    def _check(self):
        if self.features not in FEATURES:
            raise ValueError(f"HybridFlow: features must be one of {FEATURES}, got "
                             f"{self.features!r}.")
        if isinstance(self.num_classes, bool) or not isinstance(self.num_classes, int) or (
                self.num_classes < 2):
            raise ValueError(f"HybridFlow: num_classes must be an int >= 2, got "
                             f"{self.num_classes!r}.")
        if isinstance(self.hidden, bool) or not isinstance(self.hidden, int) or self.hidden < 0:
            raise ValueError(f"HybridFlow: hidden must be an int >= 0, got {self.hidden!r}.")

    def _part_features(self, i: int, part: Array) -> Array:
        if part.ndim == 4:
            if self.hidden:
                part = nn.relu(nn.Conv(self.hidden, (3, 3), name=f"head_{i}")(part))
            return jnp.mean(part, axis=(1, 2))
        part = part.reshape(part.shape[0], -1)
        if self.hidden:
            part = nn.relu(nn.Dense(self.hidden, name=f"head_{i}")(part))
        return part

    @nn.compact
    def __call__(self, x: Array, *, train: bool = False) -> Tuple[Array, Array]:
        self._check()
        z, log_det = self.flow.forward_and_log_det(x, train=train)
        log_px = self.flow.base.log_prob(z) + log_det
        parts = level_latents(z, self.levels, self.squeeze_last)
        if self.features == "final":
            parts = parts[-1:]
        feats = jnp.concatenate([self._part_features(i, p) for i, p in enumerate(parts)],
                                axis=-1)
        logits = nn.Dense(self.num_classes, name="logits")(feats)
        return log_px, logits

    def sample(self, num_samples: int, *, temperature=1.0, dtype=jnp.float32) -> Array:
        """``num_samples`` draws of the flow (``Flow.sample``; the head plays no part).

        So a trained hybrid samples like its flow (``apply(variables, n,
        method="sample", rngs={"sample": key})``), as the trainer's sample grids do.
        """
        return self.flow.sample(num_samples, temperature=temperature, dtype=dtype)


def hybrid(flow: Flow, num_classes: int, *, features: str = "final", hidden: int = 0
           ) -> HybridFlow:
    """A :class:`HybridFlow` of ``flow`` with the layout of its latent read from the flow.

    Example::

        flow = jaxflows.models.glow((8, 8, 1), levels=2, steps_per_level=4, num_bins=17)
        model = hybrid(flow, 10, features="pooled", hidden=32)
        variables = model.init(jax.random.PRNGKey(0), x)
        log_px, logits = model.apply(variables, x)
        loss, metrics = hybrid_loss(log_px, logits, labels, lam=1 / 64)
    """
    levels, squeeze_last = multiscale_layout(flow)
    return HybridFlow(flow=flow, num_classes=num_classes, features=features, hidden=hidden,
                      levels=levels, squeeze_last=squeeze_last)


def hybrid_loss(log_px: Array, logits: Array, labels: Optional[Array], lam: float,
                mask: Optional[Array] = None):
    r"""``-(lam * log p(x) + log p(y | x))`` averaged over the (masked) batch, and metrics.

    Args:
      log_px: ``log p(x)`` per example ``[B]`` (nats).
      logits: ``[B, num_classes]``.
      labels: int class labels ``[B]``; ``None`` (data without labels) is an error.
      lam: the weight ``lambda >= 0`` of ``log p(x)`` (Residual Flows: 0, 1/D or 1).
      mask: optional ``[B]`` weights (1 real example, 0 padding).

    Returns:
      ``(loss, {"nll_x": mean -log p(x), "nll_y": mean -log p(y|x), "accuracy": ...})``.

    Raises:
      ValueError: ``lam`` negative or not a finite number; ``labels`` missing, of the
        wrong shape, or (when concrete) outside ``[0, num_classes)``.
    """
    if isinstance(lam, (int, float, np.floating, np.integer)):
        if not np.isfinite(lam) or lam < 0:
            raise ValueError(f"hybrid_loss: lam (the weight of log p(x)) must be a finite "
                             f"number >= 0, got {lam!r}.")
    if labels is None:
        raise ValueError("hybrid_loss: the classifier head needs class labels, but labels is "
                         "None: the data has no labels (use a labelled dataset, or lam with "
                         "a plain flow's log-likelihood instead of a hybrid model).")
    labels = jnp.asarray(labels)
    if labels.shape != log_px.shape or logits.shape[:1] != log_px.shape:
        raise ValueError(f"hybrid_loss: labels must have shape {tuple(log_px.shape)} (one per "
                         f"example, like log_px), got {tuple(labels.shape)}; logits "
                         f"{tuple(logits.shape)}.")
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise ValueError(f"hybrid_loss: labels must be integer class ids, got dtype "
                         f"{labels.dtype}.")
    if not isinstance(labels, jax.core.Tracer):
        k = logits.shape[-1]
        bad = np.asarray((labels < 0) | (labels >= k))
        if bad.any():
            raise ValueError(f"hybrid_loss: labels must lie in [0, {k}), got "
                             f"{np.asarray(labels)[bad][:8].tolist()}.")
    log_py = jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], axis=-1)[:, 0]
    w = jnp.ones_like(log_px) if mask is None else jnp.asarray(mask, log_px.dtype)
    count = jnp.maximum(jnp.sum(w), 1.0)

    def mean(v):
        return jnp.sum(w * v) / count

    loss = -(lam * mean(log_px) + mean(log_py))
    accuracy = mean((jnp.argmax(logits, axis=-1) == labels).astype(log_px.dtype))
    return loss, {"nll_x": -mean(log_px), "nll_y": -mean(log_py), "accuracy": accuracy}

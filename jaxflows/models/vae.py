r"""A variational autoencoder whose posterior is a Gaussian refined by an IAF (Kingma et al. 2016).

Model (binary data ``x`` in ``{0, 1}^P``, latent ``z`` in ``R^d``):

.. math::

    p(z) = N(0, I), \qquad p(x | z) = \prod_i \mathrm{Bernoulli}(x_i; \sigma(\mathrm{dec}(z)_i)).

Posterior (the IAF paper's Sec. 4, as in NAF's VAE experiment, Huang et al. 2018,
Table 3): the encoder gives ``mu(x)``, ``sigma(x)`` and a context ``h(x)``;

.. math::

    \epsilon \sim N(0, I), \quad z_0 = \mu + \sigma \odot \epsilon, \quad
    z = f_T \circ \dots \circ f_1(z_0; h), \qquad
    \log q(z | x) = \log N(\epsilon; 0, I) - \sum_i \log \sigma_i
                    - \log\left|\det \frac{\partial z}{\partial z_0}\right|,

where the ``f_t`` are IAF layers (:func:`jaxflows.models.iaf`, conditioned on ``h``):
each is one MADE pass (``z`` is sampled in the IAF's fast direction, so no numerical
inverse is ever needed, for the affine and for the DSF transformer alike). ``posterior
= "gaussian"`` stops at ``z_0`` (the plain VAE). Bounds, in nats per example:

* the ELBO ``L_1 = E_q[log p(x|z) + log p(z) - log q(z|x)]`` (one sample per example in
  training, its mean over ``S`` samples in evaluation);
* the importance-weighted bound ``L_S = E[log (1/S) sum_s p(x, z_s) / q(z_s | x)]``
  (Burda et al. 2016), ``L_1 <= L_S <= log p(x)``, the "log p(x)" of the papers' tables
  (they use ``S`` = 1,000 or 5,000).

Departures: encoder and decoder are small MLPs (the IAF paper uses ResNet
convolutional ones, the NAF experiment its own code's MLPs); the IAF has ``num_layers``
layers with orders reversed between them (the IAF paper alternates orders too).
"""
from __future__ import annotations

import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxflows.bijectors.naf import DSF
from jaxflows.models.vector import iaf

__all__ = ["VAE", "vae", "bounds", "sigmoid_bce"]

POSTERIORS = ("gaussian", "iaf_affine", "iaf_dsf")
_LOG_2PI = math.log(2 * math.pi)


def _std_normal_log_prob(z):
    return -0.5 * jnp.sum(z ** 2 + _LOG_2PI, axis=-1)


class VAE(nn.Module):
    """VAE with a Gaussian or Gaussian + IAF posterior (module docstring).

    Methods take binary ``x`` ``[B, P]`` (floats in ``{0, 1}``) and use the rng stream
    ``"sample"`` for the posterior noise.

    Attributes:
      data_dim: ``P``, pixels per example.
      latent_dim: ``d``.
      hidden: widths of the encoder's and the decoder's hidden layers.
      posterior: ``"gaussian"``, ``"iaf_affine"`` or ``"iaf_dsf"``.
      num_flow_layers: IAF layers (``T``).
      flow_hidden: MADE hidden widths of each IAF layer.
      context_dim: width of the encoder's context ``h`` given to the IAF.
      sigmoid_units: DSF sigmoid units (``iaf_dsf``).
    """

    data_dim: int
    latent_dim: int = 32
    hidden: Sequence[int] = (300, 300)
    posterior: str = "gaussian"
    num_flow_layers: int = 2
    flow_hidden: Sequence[int] = (64,)
    context_dim: int = 64
    sigmoid_units: int = 16

    def setup(self):
        self.encoder = [nn.Dense(w) for w in self.hidden]
        self.enc_out = nn.Dense(2 * self.latent_dim + self.context_dim)
        self.decoder = [nn.Dense(w) for w in self.hidden] + [nn.Dense(self.data_dim)]
        if self.posterior != "gaussian":
            transformer = "affine" if self.posterior == "iaf_affine" else DSF(
                hidden=self.sigmoid_units)
            self.flow = iaf(self.latent_dim, num_layers=self.num_flow_layers,
                            hidden_features=tuple(self.flow_hidden), transformer=transformer,
                            context_features=self.context_dim)

    def encode(self, x):
        """``(mu, log_sigma, h)`` of the posterior's Gaussian and the IAF context."""
        h = x
        for layer in self.encoder:
            h = nn.elu(layer(h))
        out = self.enc_out(h)
        d = self.latent_dim
        return out[:, :d], out[:, d:2 * d], nn.elu(out[:, 2 * d:])

    def decode(self, z):
        """Bernoulli logits ``[B, P]`` of ``p(x | z)``."""
        h = z
        for layer in self.decoder[:-1]:
            h = nn.elu(layer(h))
        return self.decoder[-1](h)

    def posterior_sample(self, x):
        """``(z, log q(z | x))`` for one posterior sample per example (``"sample"`` rng)."""
        d = self.latent_dim
        eps = jax.random.normal(self.make_rng("sample"), (x.shape[0], d), x.dtype)
        return self.posterior_from_noise(x, eps)

    def posterior_from_noise(self, x, eps):
        """``(z, log q(z | x))`` for the base noise ``eps`` ``[B, d]`` (reparameterised)."""
        mu, log_sigma, h = self.encode(x)
        z = mu + jnp.exp(log_sigma) * eps
        log_q = _std_normal_log_prob(eps) - jnp.sum(log_sigma, axis=-1)
        if self.posterior != "gaussian":
            # the IAF's sampling direction: one MADE pass per layer
            z, log_det = self.flow.inverse_and_log_det(z, context=h)
            log_q = log_q - log_det
        return z, log_q

    def log_weight(self, x):
        """``log p(x, z) - log q(z | x)`` for one ``z ~ q(z | x)`` per example, ``[B]``."""
        z, log_q = self.posterior_sample(x)
        logits = self.decode(z)
        log_px_z = -jnp.sum(sigmoid_bce(logits, x), axis=-1)
        return log_px_z + _std_normal_log_prob(z) - log_q

    def __call__(self, x):
        """The single-sample ELBO estimate per example ``[B]`` (nats)."""
        return self.log_weight(x)


def sigmoid_bce(logits, labels):
    """``-[y log sigma(l) + (1 - y) log(1 - sigma(l))]``, elementwise, stable."""
    return jnp.maximum(logits, 0) - logits * labels + jnp.log1p(jnp.exp(-jnp.abs(logits)))


def bounds(model: VAE, variables, x, key, num_samples: int, *, chunk: int = 100):
    """``(mean ELBO, L_S)`` per example ``[B]`` over ``num_samples`` posterior draws.

    The draws are taken ``chunk`` at a time in a ``lax.scan`` carrying a running
    log-sum-exp, so memory does not grow with ``num_samples`` (a multiple of ``chunk``).
    """
    if num_samples % chunk:
        raise ValueError(f"bounds: chunk={chunk} must divide num_samples={num_samples}.")
    b = x.shape[0]
    tiled = jnp.tile(x, (chunk, 1))

    def body(carry, i):
        m, total, mean = carry
        w = model.apply(variables, tiled, rngs={"sample": jax.random.fold_in(key, i)},
                        method=VAE.log_weight).reshape(chunk, b)
        m_new = jnp.maximum(m, jnp.max(w, 0))
        total = total * jnp.exp(m - m_new) + jnp.sum(jnp.exp(w - m_new), 0)
        return (m_new, total, mean + jnp.sum(w, 0) / num_samples), None

    init = (jnp.full((b,), -jnp.inf), jnp.zeros((b,)), jnp.zeros((b,)))
    (m, total, mean), _ = jax.lax.scan(body, init, jnp.arange(num_samples // chunk))
    return mean, m + jnp.log(total) - math.log(num_samples)


def vae(data_dim: int, *, posterior: str = "gaussian", latent_dim: int = 32,
        hidden: Sequence[int] = (300, 300), num_flow_layers: int = 2,
        flow_hidden: Sequence[int] = (64,), context_dim: int = 64,
        sigmoid_units: int = 16) -> VAE:
    """A :class:`VAE` for binary vectors of size ``data_dim``; arguments as its attributes.

    Raises:
      ValueError: ``posterior`` not one of ``"gaussian"``, ``"iaf_affine"``,
        ``"iaf_dsf"``; a size < 1 (``latent_dim < 2`` with an IAF posterior).
    """
    if posterior not in POSTERIORS:
        raise ValueError(f"vae: `posterior` must be one of {POSTERIORS}, got {posterior!r}.")
    for name, v in (("data_dim", data_dim), ("latent_dim", latent_dim),
                    ("num_flow_layers", num_flow_layers), ("context_dim", context_dim),
                    ("sigmoid_units", sigmoid_units)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"vae: `{name}` must be an int >= 1, got {v!r}.")
    if posterior != "gaussian" and latent_dim < 2:
        raise ValueError(f"vae: an IAF posterior needs `latent_dim` >= 2, got {latent_dim}.")
    return VAE(data_dim=data_dim, latent_dim=latent_dim, hidden=tuple(hidden),
               posterior=posterior, num_flow_layers=num_flow_layers,
               flow_hidden=tuple(flow_hidden), context_dim=context_dim,
               sigmoid_units=sigmoid_units)

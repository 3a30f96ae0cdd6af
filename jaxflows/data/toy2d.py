"""Two-dimensional toy densities for flows on vectors, and grid evaluation of a 2-D density.

Samplers (``sample(name, key, n) -> [n, 2] float32``), the standard set of the flow
literature (FFJORD's and NAF's toy experiments; sizes roughly within ``[-4, 4]^2``):

* ``"two_moons"``: two interleaved half circles with Gaussian noise (std 0.1), as
  scikit-learn's ``make_moons``, centred and scaled by 2;
* ``"8gaussians"``: FFJORD's mixture of 8 Gaussians, centres at radius 4 at multiples of
  45 degrees, std 0.5, all divided by 1.414 (radius 2.83, std 0.35);
* ``"grid_gaussians"``: NAF's grid of Gaussians (Huang et al. 2018, Fig. 6): a 5 x 5
  grid of equal Gaussians, centres ``{-2, -1, 0, 1, 2}^2``, std 0.1 -- the density on
  which an affine autoregressive flow visibly fails and DSF succeeds;
* ``"checkerboard"``: uniform on the dark squares of a 4 x 4 checkerboard on ``[-4, 4]^2``
  (FFJORD);
* ``"pinwheel"``: 5 radially stretched, rotated Gaussian arms (FFJORD: radial std 0.3,
  tangential std 0.1, rate 0.25);
* ``"spirals"``: two interleaved spirals (FFJORD's ``2spirals``: radius ``sqrt(u) * 540
  degrees``, noise 0.1 before scaling by 1/3).

:func:`grid_density` evaluates ``exp(log_prob)`` on a regular grid and returns the
integral (a Riemann sum), so tests can check that a learned density integrates to 1.
"""
from __future__ import annotations

import functools
import math
from typing import Callable, Tuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["TOY_DATASETS", "sample", "grid_density"]

Array = jax.Array


def _two_moons(key, n):
    k1, k2, k3 = jax.random.split(key, 3)
    t = jax.random.uniform(k1, (n,), minval=0.0, maxval=math.pi)
    upper = jax.random.bernoulli(k2, 0.5, (n,))
    outer = jnp.stack([jnp.cos(t), jnp.sin(t)], -1)
    inner = jnp.stack([1 - jnp.cos(t), 0.5 - jnp.sin(t)], -1)
    x = jnp.where(upper[:, None], outer, inner) + 0.1 * jax.random.normal(k3, (n, 2))
    return 2.0 * (x - jnp.asarray([0.5, 0.25]))


def _eight_gaussians(key, n):
    k1, k2 = jax.random.split(key)
    angles = jnp.arange(8) * (math.pi / 4)
    centres = 4.0 * jnp.stack([jnp.cos(angles), jnp.sin(angles)], -1)
    idx = jax.random.randint(k1, (n,), 0, 8)
    return (centres[idx] + 0.5 * jax.random.normal(k2, (n, 2))) / 1.414


def _grid_gaussians(key, n):
    k1, k2 = jax.random.split(key)
    g = jnp.arange(-2.0, 3.0)
    centres = jnp.stack(jnp.meshgrid(g, g), -1).reshape(-1, 2)
    idx = jax.random.randint(k1, (n,), 0, centres.shape[0])
    return centres[idx] + 0.1 * jax.random.normal(k2, (n, 2))


def _checkerboard(key, n):
    k1, k2, k3 = jax.random.split(key, 3)
    x1 = jax.random.uniform(k1, (n,), minval=-4.0, maxval=4.0)
    col = jnp.floor(x1 / 2.0 + 2.0)                    # column 0..3 of width 2
    row = jax.random.randint(k2, (n,), 0, 2) * 2 + (col.astype(jnp.int32) + 1) % 2
    x2 = row * 2.0 - 4.0 + jax.random.uniform(k3, (n,), minval=0.0, maxval=2.0)
    return jnp.stack([x1, x2], -1)


def _pinwheel(key, n, arms=5, radial_std=0.3, tangential_std=0.1, rate=0.25):
    k1, k2 = jax.random.split(key)
    labels = jax.random.randint(k1, (n,), 0, arms)
    feats = jax.random.normal(k2, (n, 2)) * jnp.asarray([radial_std, tangential_std])
    feats = feats + jnp.asarray([1.0, 0.0])
    angles = labels * (2 * math.pi / arms) + rate * jnp.exp(feats[:, 0])
    c, s = jnp.cos(angles), jnp.sin(angles)
    rot = jnp.stack([jnp.stack([c, -s], -1), jnp.stack([s, c], -1)], -2)  # [n, 2, 2]
    return 2.0 * jnp.einsum("nij,nj->ni", rot, feats)


def _spirals(key, n):
    k1, k2, k3 = jax.random.split(key, 3)
    t = jnp.sqrt(jax.random.uniform(k1, (n,))) * 540.0 * (2 * math.pi / 360)
    x = jnp.stack([-jnp.cos(t) * t, jnp.sin(t) * t], -1)
    sign = jnp.where(jax.random.bernoulli(k2, 0.5, (n,)), 1.0, -1.0)[:, None]
    x = sign * x + 0.1 * jax.random.normal(k3, (n, 2))
    return x / 3.0


TOY_DATASETS = {
    "two_moons": _two_moons,
    "8gaussians": _eight_gaussians,
    "grid_gaussians": _grid_gaussians,
    "checkerboard": _checkerboard,
    "pinwheel": _pinwheel,
    "spirals": _spirals,
}


def sample(name: str, key: Array, n: int) -> Array:
    """``n`` draws ``[n, 2]`` (float32) from the toy density ``name`` (module docstring).

    Raises:
      ValueError: unknown ``name`` (the message lists the known ones) or ``n < 1``.
    """
    if name not in TOY_DATASETS:
        raise ValueError(f"toy2d.sample: unknown dataset {name!r}; known: "
                         f"{sorted(TOY_DATASETS)}.")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"toy2d.sample: n must be a positive int, got {n!r}.")
    return _jitted(name)(key, int(n)).astype(jnp.float32)


@functools.lru_cache(maxsize=None)
def _jitted(name: str):
    return jax.jit(TOY_DATASETS[name], static_argnums=1)


def grid_density(log_prob: Callable[[Array], Array], *, limit: float = 5.0,
                 points: int = 201, chunk: int = 65536) -> Tuple[np.ndarray, float]:
    """``exp(log_prob)`` on a ``points x points`` grid over ``[-limit, limit]^2``.

    Args:
      log_prob: ``[m, 2] -> [m]`` log-density (e.g. ``lambda x: flow.apply(variables, x)``).
      limit: half-width of the square grid (> 0).
      points: grid points per axis (>= 2).
      chunk: evaluations per call (memory bound).

    Returns:
      ``(density, integral)``: the density as a ``[points, points]`` array (rows: second
      coordinate, as an image) and its Riemann sum times the cell area, which is close to
      the probability mass inside the square.
    """
    if not limit > 0 or points < 2:
        raise ValueError(f"grid_density: need limit > 0 and points >= 2, got limit={limit!r}, "
                         f"points={points!r}.")
    g = np.linspace(-limit, limit, points)
    grid = np.stack(np.meshgrid(g, g), -1).reshape(-1, 2).astype(np.float32)
    out = [np.exp(np.asarray(log_prob(jnp.asarray(grid[i:i + chunk]))))
           for i in range(0, grid.shape[0], chunk)]
    density = np.concatenate(out).reshape(points, points)
    return density, float(density.sum() * (g[1] - g[0]) ** 2)

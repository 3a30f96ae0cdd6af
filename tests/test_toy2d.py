"""2-D toy densities, and a learned 2-D density (a tiny MAF fitted to a toy set) that
integrates to 1 on a grid.
"""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxflows.data import toy2d
from jaxflows.models import maf


@pytest.mark.parametrize("name", sorted(toy2d.TOY_DATASETS))
def test_samplers_are_deterministic_finite_and_in_range(name):
    x = toy2d.sample(name, jax.random.PRNGKey(0), 2000)
    assert x.shape == (2000, 2) and x.dtype == jnp.float32
    np.testing.assert_array_equal(x, toy2d.sample(name, jax.random.PRNGKey(0), 2000))
    assert bool(jnp.all(jnp.isfinite(x))) and float(jnp.max(jnp.abs(x))) < 6.0
    assert float(jnp.min(jnp.std(x, axis=0))) > 0.3


def test_sampler_structure():
    grid = toy2d.sample("grid_gaussians", jax.random.PRNGKey(1), 4000)
    nearest = jnp.round(grid)
    assert float(jnp.max(jnp.abs(grid - nearest))) < 0.6
    assert len({tuple(v) for v in np.asarray(nearest).tolist()}) == 25
    board = toy2d.sample("checkerboard", jax.random.PRNGKey(2), 4000)
    cells = np.floor(np.asarray(board) / 2.0).astype(int)
    parity = (cells[:, 0] + cells[:, 1]) % 2
    assert np.all(parity == parity[0])                       # one colour of squares only
    assert len({tuple(c) for c in cells.tolist()}) == 8


def test_bad_arguments():
    with pytest.raises(ValueError, match="known"):
        toy2d.sample("swiss_roll", jax.random.PRNGKey(0), 10)
    with pytest.raises(ValueError, match="positive"):
        toy2d.sample("spirals", jax.random.PRNGKey(0), 0)


def test_a_learned_density_integrates_to_one():
    """A MAF trained briefly on two moons: its density over [-8, 8]^2 sums to 1."""
    flow = maf(2, num_layers=2, hidden_features=(16,))
    data = toy2d.sample("two_moons", jax.random.PRNGKey(3), 512)
    variables = flow.init(jax.random.PRNGKey(4), data[:8])   # masks live in "buffers"
    params = variables["params"]
    opt = optax.adam(3e-3)

    @jax.jit
    def train(params, data):
        def step(carry, _):
            p, s = carry
            loss, g = jax.value_and_grad(
                lambda p: -jnp.mean(flow.apply(dict(variables, params=p), data)))(p)
            u, s = opt.update(g, s, p)
            return (optax.apply_updates(p, u), s), loss
        (p, _), losses = jax.lax.scan(step, (params, opt.init(params)), None, length=150)
        return p, losses
    params, losses = train(params, data)
    assert float(losses[-1]) < float(losses[0]) - 0.3       # it learned something
    variables = dict(variables, params=params)
    _, total = toy2d.grid_density(jax.jit(lambda x: flow.apply(variables, x)), limit=8.0,
                                  points=321)
    assert abs(total - 1.0) < 1e-2, total

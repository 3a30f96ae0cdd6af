"""mAR-SCF interpolation: the mAR latent space, linear and optimised interpolation.

The optimised interpolation is our reading of mAR-SCF's Eq. 11 (see
``jaxflows/interpolation.py``): per interior point ``t``,
``-log p_mAR(l) + lambda1 (1 - t) ||l - l_A||^2 + lambda2 t ||l - l_B||^2`` with Adamax.
"""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxflows.interpolation import (
    linear_mar_interpolation,
    mar_decode,
    mar_latents,
    mar_log_prior,
    optimized_latent_interpolation,
)
from jaxflows.models import glow
from jaxflows.models.mar_scf import mar_scf
from jaxflows.testing import perturb_params

TINY = dict(levels=2, steps_per_level=1, hidden_channels=4, lstm_features=3, lstm_layers=1,
            kernel_sizes=3, dilations=1, embed_channels=2)
SHAPE = (4, 4, 1)


@pytest.fixture(scope="module")
def flows():
    """``(flow, trained-like variables, initial variables, images)``.

    At initialisation every prior's output convolution is zero, so ``p_mAR = N(0, I)``
    exactly: the optimised interpolation then has a closed form.
    """
    flow = mar_scf(SHAPE, num_bins=17, **TINY)
    x = jax.random.uniform(jax.random.PRNGKey(0), (4,) + SHAPE, maxval=17.0)
    v0 = jax.jit(flow.init)(jax.random.PRNGKey(1), x)
    v = perturb_params(v0, jax.random.PRNGKey(2), 0.05)
    return flow, v, v0, x


def test_mar_latents_decode_and_prior_density(flows):
    """Latents round-trip to x; log p(x) = log p_mAR(l(x)) + log-det of the flow layers alone."""
    flow, v, _, x = flows

    @jax.jit
    def run(v, x):
        l = mar_latents(flow, v, x)
        xr = mar_decode(flow, v, l)
        z = flow.apply(v, x, method=flow.forward)
        return l, xr, z, mar_log_prior(flow, v, l), flow.apply(v, x)

    l, xr, z, log_prior, log_px = run(v, x)
    np.testing.assert_allclose(xr, x, atol=2e-3)
    assert float(jnp.max(jnp.abs(l - z))) > 1e-2       # l is not the standardised z
    # the layers' own log-det: the forward pass with identity priors
    from jaxflows.interpolation import _identity_priors
    with _identity_priors():
        _, ld_layers = jax.jit(lambda v, x: flow.apply(v, x, method=flow.forward_and_log_det))(
            v, x)
    np.testing.assert_allclose(log_prior + ld_layers, log_px, rtol=1e-4, atol=1e-2)


def test_linear_mar_interpolation_is_linear_in_l(flows):
    flow, v, _, x = flows
    path = jax.jit(lambda v, a, b: linear_mar_interpolation(flow, v, a, b, 5))(v, x[0], x[1])
    assert path.shape == (5,) + SHAPE
    np.testing.assert_allclose(path[0], x[0], atol=2e-3)
    np.testing.assert_allclose(path[-1], x[1], atol=2e-3)
    l = jax.jit(lambda v, p: mar_latents(flow, v, p))(v, path)
    np.testing.assert_allclose(l[1], 0.75 * l[0] + 0.25 * l[-1], atol=2e-3)


def _optimize(flow, v, x, **kw):
    """Pairs (x0, x2) and (x1, x3), 4 points, 100 steps: one compiled optimiser for all
    calls of this module (the weights and the learning rate are traced).
    """
    return optimized_latent_interpolation(flow, v, x[:2], x[2:], 4, num_steps=100,
                                          return_info=True, **kw)


def test_optimized_interpolation_closed_form_under_a_standard_normal_prior(flows):
    """At initialisation p_mAR = N(0, I): per coordinate the optimum of
    ``l^2/2 + lambda1 (1-t)(l-a)^2 + lambda2 t (l-b)^2`` is
    ``2 (lambda1 (1-t) a + lambda2 t b) / (1 + 2 lambda1 (1-t) + 2 lambda2 t)``.
    """
    flow, _, v0, x = flows
    lam1, lam2, n = 0.3, 0.5, 4
    imgs, info = _optimize(flow, v0, x, lambda1=lam1, lambda2=lam2, learning_rate=0.1)
    assert imgs.shape == (2, n) + SHAPE
    l_ends = jax.jit(lambda v, x: mar_latents(flow, v, x))(v0, x)
    a, b = l_ends[:2], l_ends[2:]
    for k in (1, 2):
        t = k / (n - 1)
        w1, w2 = lam1 * (1 - t), lam2 * t
        expect = 2 * (w1 * a + w2 * b) / (1 + 2 * w1 + 2 * w2)
        np.testing.assert_allclose(info["latents"][:, k], expect, atol=2e-2)
    # the ends are the two images; the objective went down for each pair
    np.testing.assert_allclose(imgs[:, 0], x[:2], atol=2e-3)
    np.testing.assert_allclose(imgs[:, -1], x[2:], atol=2e-3)
    assert info["objective"].shape == (101, 2)
    assert bool(jnp.all(info["objective"][-1] < info["objective"][0]))


def test_optimized_interpolation_on_a_learned_prior(flows):
    """Perturbed (non-Gaussian) prior: 100 Adamax steps lower the objective and raise the
    prior density of the interior points, starting from the linear path; a large lambda
    stays near the linear path; the images are the decoded latents.
    """
    flow, v, _, x = flows
    lin = jax.jit(lambda v, a, b: linear_mar_interpolation(flow, v, a, b, 4))(v, x[:2], x[2:])
    lin_l = jax.jit(lambda v, p: mar_latents(flow, v, p.reshape((-1,) + SHAPE)))(v, lin)
    lin_lp = jax.jit(lambda v, l: mar_log_prior(flow, v, l))(v, lin_l).reshape(2, 4)
    imgs, info = _optimize(flow, v, x, lambda1=0.3)
    np.testing.assert_allclose(info["linear"], lin, atol=1e-4)
    np.testing.assert_allclose(info["linear_log_prior"], lin_lp, rtol=1e-5, atol=1e-3)
    obj = np.asarray(info["objective"])
    assert obj.shape == (101, 2) and np.all(obj[-1] < obj[0] - 1.0)
    assert np.all(np.diff(obj[:, 0])[:10] < 0)                # descends from the start
    assert np.all(np.asarray(info["log_prior"])[:, 1:-1] > np.asarray(lin_lp)[:, 1:-1])
    np.testing.assert_allclose(imgs[:, 0], x[:2], atol=2e-3)
    np.testing.assert_allclose(imgs[:, -1], x[2:], atol=2e-3)
    l = jax.jit(lambda v, p: mar_latents(flow, v, p.reshape((-1,) + SHAPE)))(v, imgs)
    np.testing.assert_allclose(l.reshape(info["latents"].shape), info["latents"], atol=5e-3)
    lin_l = lin_l.reshape(info["latents"].shape)
    assert float(jnp.max(jnp.abs(info["latents"] - lin_l))) > 0.1
    _, big = _optimize(flow, v, x, lambda1=1e3, learning_rate=1e-3)
    np.testing.assert_allclose(big["latents"], lin_l, atol=2e-2)


def test_bad_input(flows):
    flow, v, _, x = flows
    with pytest.raises(ValueError, match="num_points must be an int >= 2"):
        optimized_latent_interpolation(flow, v, x[0], x[1], 1)
    with pytest.raises(ValueError, match="lambda1 must be a finite number >= 0"):
        optimized_latent_interpolation(flow, v, x[0], x[1], 3, lambda1=-0.1)
    with pytest.raises(ValueError, match="learning_rate must be a finite number > 0"):
        optimized_latent_interpolation(flow, v, x[0], x[1], 3, learning_rate=0.0)
    with pytest.raises(ValueError, match="num_steps must be an int >= 0"):
        optimized_latent_interpolation(flow, v, x[0], x[1], 3, num_steps=-1)
    with pytest.raises(ValueError, match="event shape"):
        linear_mar_interpolation(flow, v, x[0, :2], x[1, :2], 3)
    g = glow(SHAPE, levels=2, steps_per_level=1, hidden_channels=4, num_bins=17)
    gv = jax.eval_shape(g.init, jax.random.PRNGKey(0), x)
    with pytest.raises(ValueError, match="no mAR prior"):
        jax.eval_shape(lambda gv: mar_latents(g, gv, x), gv)


def test_interpolate_launcher_writes_a_strip(tmp_path, capsys):
    """experiments/interpolate.py on a one-step mAR-SCF run (digits), and its refusals."""
    from experiments import interpolate as launcher
    from experiments.configs import mar_scf_mnist
    from jaxflows import train as jt
    c = mar_scf_mnist.get_config("small")
    c.model.update(dict(steps_per_level=1, hidden_channels=4, lstm_features=3,
                        lstm_layers=1))
    c.update(dict(batch_size=8, eval_batch_size=32, init_batch_size=16, num_train_steps=1,
                  log_every=1, eval_every=1, checkpoint_every=1, sample_temperatures=(),
                  eval_test_during_training=False, progress_bar=False))
    c.dataset.val_split = "train[:32]"
    c.dataset.test_split = "test[:16]"
    work = str(tmp_path / "run")
    jt.train_and_evaluate(c, work)
    png = str(tmp_path / "strip.png")
    capsys.readouterr()
    code = launcher.main(["interpolate.py", f"--workdir={work}", "--num_pairs=2",
                          "--num_points=4", "--num_steps=3", f"--out={png}"])
    assert code == 0, capsys.readouterr().err
    from PIL import Image
    img = np.asarray(Image.open(png))
    # 2 pairs x 2 rows of 4 digits (8x8 padded by c.dataset.pad) with 1-pixel borders,
    # upscaled by an integer
    side = 8 + 2 * c.dataset.pad
    h = w = 4 * (side + 1) + 1
    assert img.shape == (h * (512 // h), w * (512 // w))
    import json
    summary = json.load(open(str(tmp_path / "strip.json")))
    assert len(summary["pairs"]) == 2 and summary["num_steps"] == 3
    assert all(e <= s for s, e in zip(summary["objective_start"], summary["objective_end"]))
    # refusals: one error line, exit code 2
    for args, match in ((["--workdir=" + str(tmp_path / "none")], "config.json"),
                        ([f"--workdir={work}", "--num_points=2"], "--num_points"),
                        ([f"--workdir={work}", "--lambda1=-1"], "--lambda1")):
        code = launcher.main(["interpolate.py"] + args)
        err = [line for line in capsys.readouterr().err.splitlines()
               if line.startswith("error: ")]
        assert code == 2 and len(err) == 1 and match in err[0], err
    cfg = json.load(open(os.path.join(work, "config.json")))
    cfg["model"]["name"] = "glow"
    other = tmp_path / "glow_run"
    other.mkdir()
    json.dump(cfg, open(other / "config.json", "w"))
    code = launcher.main(["interpolate.py", f"--workdir={other}"])
    err = capsys.readouterr().err
    assert code == 2 and "needs an mAR-SCF run" in err, err

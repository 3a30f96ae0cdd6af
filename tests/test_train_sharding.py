"""Data parallelism: the same loss and gradients on 2 (fake CPU) devices as on 1.

``--xla_force_host_platform_device_count`` must be set before JAX initialises, so the
comparison runs in a subprocess. There, one tiny Glow is initialised (ActNorm on the
global batch) and stepped once with plain SGD (learning rate 1, so the parameter change
is minus the gradient) on a mesh of 1 device and on a mesh of both devices, for the
same global batch; the subprocess prints the comparisons as JSON.
"""
import json
import os
import subprocess
import sys

SCRIPT = r"""
import json, numpy as np, jax, jax.numpy as jnp, optax
from jaxflows import train as jt
from jaxflows import models, data
assert jax.device_count() == 2, jax.devices()
info = data.get_info("digits")
flow = models.glow(info.image_shape, num_bins=info.num_bins, levels=1, steps_per_level=1,
                   hidden_channels=8, preprocessing="logit", dropout=0.1)
src = data.get_source("digits", "train[:64]")
images = np.stack([src[i]["image"] for i in range(16)])
tx = optax.sgd(1.0)
out = {}
for n in (1, 2):
    mesh = jt.make_mesh(jax.devices()[:n])
    steps = jt.make_steps(flow, tx, mesh, num_dims=64, ema_decay=0.0, use_ema=False,
                          num_samples=2)
    batch = jt.global_batch(images, mesh)
    state = steps.init(batch, np.int32(0))
    p0 = jax.device_get(state.params)
    new, m = steps.train(state, batch)
    grads = jax.tree_util.tree_map(lambda a, b: a - b, p0, jax.device_get(new.params))
    mask = jt.global_batch(np.ones(16, np.float32), mesh)
    ev = jax.device_get(steps.evaluate(new, batch, mask, np.array([0, 1], np.int32)))
    out[n] = dict(p0=p0, grads=grads, loss=float(m["loss"]), gnorm=float(m["grad_norm"]),
                  ev=float(ev[0]), nshards=len(batch.addressable_shards),
                  replicated=all(x.sharding.is_fully_replicated
                                  for x in jax.tree_util.tree_leaves(new.params)))
flat = lambda t: np.concatenate([np.ravel(x) for x in jax.tree_util.tree_leaves(t)])
res = dict(
    loss=[out[1]["loss"], out[2]["loss"]], gnorm=[out[1]["gnorm"], out[2]["gnorm"]],
    ev=[out[1]["ev"], out[2]["ev"]], nshards=[out[1]["nshards"], out[2]["nshards"]],
    init_maxdiff=float(np.max(np.abs(flat(out[1]["p0"]) - flat(out[2]["p0"])))),
    grad_maxdiff=float(np.max(np.abs(flat(out[1]["grads"]) - flat(out[2]["grads"])))),
    grad_maxabs=float(np.max(np.abs(flat(out[1]["grads"])))),
    replicated=out[2]["replicated"])
try:
    c = jt.default_config(); c.model.levels = 1; c.batch_size = 15
    jt.validate_config(c, num_devices=jax.device_count())
    res["bad_batch_error"] = None
except ValueError as e:
    res["bad_batch_error"] = str(e)
print("RESULT " + json.dumps(res))
"""


def run_script():
    """Runs ``SCRIPT`` on 2 fake CPU devices; its JSON result."""
    env = dict(os.environ)
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") +
                        " --xla_force_host_platform_device_count=2").strip()
    env["JAX_PLATFORMS"] = "cpu"
    proc = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True,
                          text=True, timeout=600,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    return json.loads(lines[-1][len("RESULT "):])


def test_two_devices_equal_one():
    # One test for the one subprocess: as separate tests sharing a module fixture,
    # pytest-xdist would start it once on each worker that got one of them.
    result = run_script()
    check_batch_is_split_over_both_devices(result)
    check_same_init_loss_and_gradients(result)
    check_batch_not_divisible_by_device_count_is_refused(result)


def check_batch_is_split_over_both_devices(result):
    assert result["nshards"] == [1, 2]
    assert result["replicated"]          # parameters replicated on both devices


def check_same_init_loss_and_gradients(result):
    assert result["init_maxdiff"] < 1e-5          # ActNorm init on the global batch
    l1, l2 = result["loss"]
    assert abs(l1 - l2) < 1e-5 * abs(l1)
    g1, g2 = result["gnorm"]
    assert g1 > 0 and abs(g1 - g2) < 1e-4 * g1
    assert result["grad_maxdiff"] < 1e-4 * max(1.0, result["grad_maxabs"])
    e1, e2 = result["ev"]
    assert abs(e1 - e2) < 1e-5 * abs(e1)


def check_batch_not_divisible_by_device_count_is_refused(result):
    msg = result["bad_batch_error"]
    assert msg is not None and "batch_size=15" in msg and "divisible" in msg

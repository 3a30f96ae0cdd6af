r"""Lipschitz-constrained layers: spectrally normalised convolutions and dense layers,
LipSwish and CLipSwish.

These are the building blocks of contractive residual branches ``g`` (i-ResNet,
Residual Flows, i-DenseNets), whose Lipschitz constant must stay below 1 for
``x + g(x)`` to be invertible.

Spectral normalisation by the operator norm
-------------------------------------------
A layer ``x -> A_W x + b`` is Lipschitz (in the Euclidean norm) with constant
``||A_W||_2``, the largest singular value of the **linear operator** ``A_W``. For a
dense layer ``A_W = W``. For a convolution ``A_W`` is the whole convolution acting
on an image of the actual input shape ``H x W x C_in`` (with its zero padding), a
``(H W C_out) x (H W C_in)`` matrix that is never formed; its norm is *not* the norm
of the reshaped ``k*k*C_in x C_out`` kernel (that can be smaller than the true
operator norm by up to a factor ``k``), nor the Frobenius norm of the kernel. It is
estimated here by power iteration through the convolution and its transpose
(Gouk et al. 2018; Behrmann et al. 2019; Chen et al. 2019):

.. math::

    v \leftarrow A u / \|A u\|, \qquad u \leftarrow A^\top v / \|A^\top v\|,
    \qquad \hat\sigma = \|A u\|,

where ``u`` has the shape of one input example and ``A^T`` is obtained exactly with
:func:`jax.linear_transpose`. ``\hat\sigma <= \sigma_{max}`` always (``u`` is a unit
vector) and converges to it quadratically in the error of ``u``. The weight is
then soft-scaled (Behrmann et al. 2019; Chen et al. 2019):

.. math::

    \tilde W = W / \max(1, \hat\sigma / c),

so ``Lip(layer) <= c`` (up to the power-iteration error), with ``c`` the
coefficient in ``(0, 1)``.

Persistent state
----------------
``u`` lives in the Flax variable collection ``"lipschitz"`` (one unit vector per
layer, float32). At ``init`` it starts from a random vector and runs
``init_iterations`` iterations (accurate from the start). During training
(``train=True`` **and** the collection mutable, ``apply(..., mutable=["lipschitz"])``)
each call runs ``n_iterations`` more (warm-started, so a few suffice as the weights
move slowly) and stores the result. With ``train=False`` (or an immutable
collection) the stored ``u`` is used as is: ``\hat\sigma = \|A_W u\|`` is recomputed
with the current weights (cheap, deterministic, and differentiable in ``W`` with
``u`` held fixed, as in Miyato et al. 2018). :func:`update_lipschitz_state` runs
many training-mode updates, e.g. after loading or perturbing weights.

Activations
-----------
``LipSwish(x) = x sigmoid(beta x) / 1.1`` with ``beta = softplus(b)`` learnable
(Chen et al. 2019): ``d/dx [x sigmoid(beta x)]`` lies in
``[-0.0998, 1.0998]`` for every ``beta > 0``, so dividing by 1.1 gives Lipschitz
constant < 1 without the derivative saturation of ELU/tanh.

``CLipSwish(x) = [LipSwish(x), LipSwish(-x)] / L`` (concatenated along the channel
axis, Perugachi-Diaz et al. 2021). With ``s(t) = t sigmoid(t)`` one has
``s(t) - s(-t) = t``, so per coordinate the Jacobian column is
``(s'(t), s'(t) - 1) / 1.1``, of norm ``sqrt(s'^2 + (1 - s')^2) / 1.1``; its maximum
over ``t`` (about 1.0039, independent of ``beta``) is ``L``, computed numerically
at import (:data:`CLIPSWISH_LIPSCHITZ`). Dividing by it makes CLipSwish 1-Lipschitz
from ``C`` to ``2C`` channels.

References:
  Behrmann, Grathwohl, Chen, Duvenaud, Jacobsen. Invertible Residual Networks. ICML 2019.
  Chen, Behrmann, Duvenaud, Jacobsen. Residual Flows for Invertible Generative Modeling.
  NeurIPS 2019.
  Perugachi-Diaz, Tomczak, Bhulai. Invertible DenseNets with Concatenated LipSwish. NeurIPS 2021.
  Gouk, Frank, Pfahringer, Cree. Regularisation of Neural Networks by Enforcing Lipschitz
  Continuity. 2018.
  Miyato, Kataoka, Koyama, Yoshida. Spectral Normalization for GANs. ICLR 2018.
"""
from __future__ import annotations

from typing import Callable, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxflows.nn.conv import conv2d_same

__all__ = [
    "SpectralConv",
    "SpectralDense",
    "LipSwish",
    "CLipSwish",
    "CLIPSWISH_LIPSCHITZ",
    "check_coefficient",
    "conv_operator_norm",
    "power_iteration",
    "update_lipschitz_state",
]

Array = jax.Array
LIPSCHITZ = "lipschitz"


def check_coefficient(coeff: float, owner: str) -> float:
    """Raises ``ValueError`` unless ``0 < coeff < 1``; returns it as a float."""
    if not isinstance(coeff, (int, float, np.floating)) or not (0.0 < float(coeff) < 1.0):
        raise ValueError(f"{owner}: the Lipschitz coefficient `coeff` must be a number in (0, 1) "
                         f"(strictly), got {coeff!r}.")
    return float(coeff)


def _unit(v: Array) -> Array:
    norm = jnp.sqrt(jnp.sum(jnp.square(v)))
    return v / jnp.maximum(norm, jnp.finfo(v.dtype).tiny ** 0.5)


def power_iteration(op: Callable[[Array], Array], u: Array, num_iterations: int) -> Array:
    """``num_iterations`` steps of ``u <- A^T A u / ||A^T A u||`` for a linear ``op = A``.

    ``A^T`` is the exact transpose (:func:`jax.linear_transpose`) on ``u``'s shape.
    Returns the new unit vector ``u`` (the estimate of the top right singular vector);
    ``||op(u)||`` is then the estimate of the operator norm (a lower bound).
    """
    op_t = jax.linear_transpose(op, jax.ShapeDtypeStruct(u.shape, u.dtype))

    def body(_, u):
        v = _unit(op(u))
        return _unit(op_t(v)[0])

    return lax.fori_loop(0, int(num_iterations), body, _unit(u))


def _conv(x: Array, kernel: Array, padding) -> Array:
    if (kernel.ndim == 4 and padding == "SAME" and kernel.shape[0] % 2
            and kernel.shape[1] % 2):
        # Same maths; matrix products on CPU where XLA's native convolution is slow
        # (jaxflows.nn.conv), lax.conv_general_dilated on GPU/TPU.
        return conv2d_same(x, kernel, "auto")
    return lax.conv_general_dilated(
        x, kernel, window_strides=(1,) * (kernel.ndim - 2), padding=padding,
        dimension_numbers=("NHWC", "HWIO", "NHWC") if kernel.ndim == 4 else None)


def _conv_op(kernel: Array) -> Callable[[Array], Array]:
    return lambda z: _conv(z, kernel, "SAME")


def _dense_op(kernel: Array) -> Callable[[Array], Array]:
    return lambda z: z @ kernel


# Jitted (and so cached) power iterations: one compiled loop per shape, also when the
# layers run eagerly (outside jit); inside an outer jit they are simply inlined.
@jax.jit
def _operator_norm(kernel: Array, u: Array) -> Array:
    op = _conv_op(kernel) if kernel.ndim == 4 else _dense_op(kernel)
    return jnp.sqrt(jnp.sum(jnp.square(op(u))))


def _iterate(kernel: Array, u: Array, num_iterations: int) -> Array:
    op = _conv_op(kernel) if kernel.ndim == 4 else _dense_op(kernel)
    return power_iteration(op, u, num_iterations)


_iterate_jit = jax.jit(_iterate, static_argnums=2)


def conv_operator_norm(kernel: Array, spatial_shape: Sequence[int], *, padding="SAME",
                       num_iterations: int = 500, seed: int = 0) -> Array:
    """Operator 2-norm of the stride-1 convolution by ``kernel`` (HWIO) on images of
    ``spatial_shape``, by power iteration from a random start (a helper for checks).
    """
    shape = (1, *spatial_shape, kernel.shape[-2])
    u = jax.random.normal(jax.random.PRNGKey(seed), shape, kernel.dtype)
    op = lambda z: _conv(z, kernel, padding)
    u = power_iteration(op, u, num_iterations)
    return jnp.sqrt(jnp.sum(jnp.square(op(u))))


class _SpectralBase(nn.Module):
    """Shared logic: persistent power-iteration vector and soft rescaling of the weight."""

    def _normalised(self, kernel: Array, u_shape: Tuple[int, ...], train: bool) -> Array:
        coeff = check_coefficient(self.coeff, type(self).__name__)
        for name in ("n_iterations", "init_iterations"):
            val = getattr(self, name)
            if not (isinstance(val, int) and val >= 0):
                raise ValueError(
                    f"{type(self).__name__}: `{name}` must be an integer >= 0, got {val!r}.")
        k32 = lax.stop_gradient(kernel.astype(jnp.float32))

        def init_u():
            u0 = jax.random.normal(self.make_rng("params"), u_shape, jnp.float32)
            return _iterate_jit(k32, u0, max(self.init_iterations, 1))

        u_var = self.variable(LIPSCHITZ, "u", init_u)
        if tuple(u_var.value.shape) != tuple(u_shape):
            raise ValueError(
                f"{type(self).__name__}: the stored power-iteration vector has shape "
                f"{tuple(u_var.value.shape)} but this input needs {tuple(u_shape)}; a spectrally "
                "normalised layer is tied to the input shape it was initialised with.")
        if (train and self.n_iterations > 0 and not self.is_initializing()
                and self.is_mutable_collection(LIPSCHITZ)):
            u_var.value = _iterate_jit(k32, u_var.value, self.n_iterations)
        u = lax.stop_gradient(u_var.value).astype(kernel.dtype)
        sigma = _operator_norm(kernel, u)
        return kernel / jnp.maximum(1.0, sigma / coeff)


class SpectralConv(_SpectralBase):
    """Stride-1 ``SAME`` convolution (NHWC) whose operator norm is kept ``<= coeff``.

    ``y = conv(x, W / max(1, sigma_hat / coeff)) + b`` with ``sigma_hat`` the
    power-iteration estimate of the operator norm of ``conv(., W)`` on inputs of
    ``x``'s spatial shape (module docstring).

    Attributes:
      features: output channels.
      kernel_size: e.g. ``(3, 3)``.
      coeff: target Lipschitz constant in ``(0, 1)``.
      n_iterations: power iterations per call in training mode (state mutable).
      init_iterations: power iterations at ``init``.
      use_bias: add a bias (does not change the Lipschitz constant).
      kernel_init, bias_init: initialisers.
    """

    features: int
    kernel_size: Sequence[int] = (3, 3)
    coeff: float = 0.98
    n_iterations: int = 2
    init_iterations: int = 200
    use_bias: bool = True
    kernel_init: Callable = nn.initializers.lecun_normal()
    bias_init: Callable = nn.initializers.zeros

    @nn.compact
    def __call__(self, x: Array, train: bool = False) -> Array:
        check_coefficient(self.coeff, "SpectralConv")
        if x.ndim != 4:
            raise ValueError(f"SpectralConv: x must be NHWC [batch, height, width, channels], "
                             f"got shape {x.shape}.")
        ks = tuple(int(k) for k in self.kernel_size)
        kernel = self.param("kernel", self.kernel_init, ks + (x.shape[-1], self.features),
                            jnp.float32).astype(x.dtype)
        k_hat = self._normalised(kernel, (1,) + tuple(x.shape[1:]), train)
        y = _conv(x, k_hat, "SAME")
        if self.use_bias:
            bias = self.param("bias", self.bias_init, (self.features,), jnp.float32)
            y = y + bias.astype(x.dtype)
        return y


class SpectralDense(_SpectralBase):
    """Dense layer on the last axis with spectral norm kept ``<= coeff``.

    ``y = x W / max(1, sigma_hat / coeff) + b``; attributes as :class:`SpectralConv`.
    """

    features: int
    coeff: float = 0.98
    n_iterations: int = 2
    init_iterations: int = 200
    use_bias: bool = True
    kernel_init: Callable = nn.initializers.lecun_normal()
    bias_init: Callable = nn.initializers.zeros

    @nn.compact
    def __call__(self, x: Array, train: bool = False) -> Array:
        check_coefficient(self.coeff, "SpectralDense")
        kernel = self.param("kernel", self.kernel_init, (x.shape[-1], self.features),
                            jnp.float32).astype(x.dtype)
        k_hat = self._normalised(kernel, (x.shape[-1],), train)
        y = x @ k_hat
        if self.use_bias:
            bias = self.param("bias", self.bias_init, (self.features,), jnp.float32)
            y = y + bias.astype(x.dtype)
        return y


def _lipswish(x: Array, beta_raw: Array) -> Array:
    beta = jax.nn.softplus(beta_raw.astype(x.dtype))
    return x * jax.nn.sigmoid(beta * x) / 1.1


class LipSwish(nn.Module):
    """``x sigmoid(softplus(b) x) / 1.1``, 1-Lipschitz for every ``b`` (Chen et al. 2019).

    ``b`` is a learnable scalar (param ``"beta"``, initialised at 0.5 as in the reference).
    """

    beta_init: float = 0.5

    @nn.compact
    def __call__(self, x: Array) -> Array:
        b = self.param("beta", nn.initializers.constant(self.beta_init), (), jnp.float32)
        return _lipswish(x, b)


def _clipswish_constant() -> float:
    """``max_t sqrt(s'(t)^2 + (1 - s'(t))^2) / 1.1`` with ``s(t) = t sigmoid(t)``.

    ``sqrt(a^2 + (1-a)^2)`` grows with ``|a - 1/2|``; ``s'`` is symmetric about 1/2
    (``s'(t) + s'(-t) = 1``), so the maximum is at the maximum of ``s'`` (t ~ 2.4).
    Dense grid (spacing 1e-5) then a small relative safety margin.
    """
    t = np.linspace(0.0, 10.0, 1_000_001)
    sig = 1.0 / (1.0 + np.exp(-t))
    ds = sig * (1.0 + t * (1.0 - sig))
    val = np.sqrt(ds ** 2 + (1.0 - ds) ** 2) / 1.1
    return float(val.max()) * (1.0 + 1e-6)


#: Lipschitz constant of ``[LipSwish(x), LipSwish(-x)]`` (about 1.0039; 1.004 in the paper).
CLIPSWISH_LIPSCHITZ: float = _clipswish_constant()


class CLipSwish(nn.Module):
    """Concatenated LipSwish, ``C -> 2C`` channels (last axis), 1-Lipschitz.

    ``[LipSwish(x), LipSwish(-x)] / L`` with one learnable ``beta`` shared by both
    halves and ``L = CLIPSWISH_LIPSCHITZ`` (Perugachi-Diaz et al. 2021).
    """

    beta_init: float = 0.5

    @nn.compact
    def __call__(self, x: Array) -> Array:
        b = self.param("beta", nn.initializers.constant(self.beta_init), (), jnp.float32)
        z = jnp.concatenate([x, -x], axis=-1)
        return _lipswish(z, b) / jnp.asarray(CLIPSWISH_LIPSCHITZ, x.dtype)


def _refresh_rounds(module, lip, variables, args, kwargs, rngs, *, num_rounds, method,
                    static_kwargs):
    """``num_rounds`` training-mode applications updating the ``"lipschitz"`` state."""
    def one(lip, _):
        _, upd = module.apply(dict(variables, **{LIPSCHITZ: lip}), *args, train=True,
                              mutable=[LIPSCHITZ], rngs=rngs, method=method, **kwargs,
                              **dict(static_kwargs))
        return upd[LIPSCHITZ], None

    return lax.scan(one, lip, None, length=num_rounds)[0]


# One compiled program per (hashable) module, shapes and settings, so repeated refreshes
# (every registry seed, every evaluation) compile once.
_refresh = jax.jit(_refresh_rounds, static_argnames=("module", "num_rounds", "method",
                                                     "static_kwargs"))


def update_lipschitz_state(module: nn.Module, variables, *args, num_rounds: int = 50,
                           rngs=None, method=None, **kwargs):
    """Refreshes every power-iteration vector of ``module`` for the current weights.

    Runs ``num_rounds`` training-mode applications (``train=True``, collection
    ``"lipschitz"`` mutable; each runs the layers' ``n_iterations``) and returns
    ``variables`` with the new ``"lipschitz"`` state. Use it after changing weights
    by other means than training (loading, perturbing, swapping in EMA weights).
    ``args``/``kwargs`` are the call arguments (an input of the right shape).
    """
    if not (isinstance(num_rounds, int) and num_rounds >= 1):
        raise ValueError(
            f"update_lipschitz_state: num_rounds must be an integer >= 1, got {num_rounds!r}")
    variables = dict(variables)
    arrays = {k: v for k, v in kwargs.items() if isinstance(v, (jax.Array, np.ndarray))}
    static = tuple(sorted((k, v) for k, v in kwargs.items() if k not in arrays))
    rest = {k: v for k, v in variables.items() if k != LIPSCHITZ}
    try:
        hash(module)
    except TypeError:
        # A module with list attributes (a Chain, a whole Flow) cannot key jit's cache:
        # this call compiles its own program.
        def run(lip, rest, args, arrays, rngs):
            return _refresh_rounds(module, lip, rest, args, arrays, rngs,
                                   num_rounds=num_rounds, method=method,
                                   static_kwargs=static)
        lip = jax.jit(run)(variables[LIPSCHITZ], rest, args, arrays, rngs)
    else:
        lip = _refresh(module, variables[LIPSCHITZ], rest, args, arrays, rngs,
                       num_rounds=num_rounds, method=method, static_kwargs=static)
    variables[LIPSCHITZ] = lip
    return variables

r"""'SAME' stride-1 2-D convolutions written as matrix products (fast on CPU).

XLA's CPU backend runs ``lax.conv_general_dilated`` single-threaded, and its weight
gradient is the most expensive part of a conv layer's training step, whereas its matrix
products use every core (timings in ``docs/performance.md``). A stride-1
``'SAME'`` convolution of ``x`` ``[B, H, W, C_in]`` with a kernel ``K`` ``[k, k, C_in,
C_out]`` (HWIO, odd ``k``, padding ``p = k // 2``),

.. math::

    y_{b,h,w,o} = \sum_{i,j < k} \sum_c x_{b,\,h+i-p,\,w+j-p,\,c}\; K_{i,j,c,o},

is computed here as **one** matrix product in one of two ways, chosen so that the
``k^2``-fold intermediate is on the side with fewer channels:

* ``"im2col"`` (input side, for ``C_in <= C_out``): the ``k^2`` shifted copies of the
  zero-padded ``x`` are concatenated on the channel axis (the patches ``P(x)``,
  ``[B H W, k^2 C_in]``) and ``y = P(x) \cdot \mathrm{reshape}(K, [k^2 C_in, C_out])``;
* ``"shift"`` (output side, for ``C_in > C_out``): ``z = x \cdot \mathrm{reshape}(K^\top,
  [C_in, k^2 C_out])`` gives every tap's contribution at once, and ``y`` is the sum of
  the ``k^2`` shifted ``[B, H, W, C_out]`` slices of the zero-padded ``z``:
  ``y_{h,w} = \sum_{i,j} z_{h+i-p,\,w+j-p,\,(i,j)}``.

Their gradients (by autodiff through pad/slice/concatenate/matmul) are matrix products
too: for im2col ``dK = P(x)^\top g`` and ``dx = P^\top(g K^\top)``; for shift
``dK = x^\top P(g)`` and ``dx = P(g) K^\top`` where ``P(g)`` is the patch matrix of
the output gradient. No convolution is left in the forward or backward pass.

``impl="auto"`` uses these on the CPU backend only; on GPU/TPU (cuDNN / the TPU
convolution units are the fast path there) it keeps ``lax.conv_general_dilated``.
1x1 kernels are always a plain matrix product over the channel axis.

The choice is a backend detail, not part of the modelling API: no bijector, conditioner
or factory takes it. Modules call :func:`conv2d_same` with ``impl="auto"``, which
resolves (at trace time) to the override in force, if any, and otherwise to
:func:`choose_impl`. The one override, for benchmarks and kernel tests, is either the
environment variable ``JAXFLOWS_CONV_IMPL`` (read at each trace) or, taking precedence,
the context manager :func:`conv_impl`::

    with jaxflows.nn.conv_impl("native"):
        step = jax.jit(train_step)          # traced (and compiled) inside the block
        step(state, batch)

A function already compiled keeps the implementation it was traced with (``jax.jit``
caches by argument shapes, not by this setting). Measured speeds are in
``docs/performance.md``.

Precision policy (``compute_dtype``): ``None`` (default) computes in the dtype of
``x``. ``jnp.bfloat16`` casts both matmul operands to bfloat16 and accumulates in
float32 (``preferred_element_type``), the output in ``x``'s dtype: on CPUs with AMX /
AVX512-BF16 units and on GPU/TPU this is several times the float32 throughput for
large products, at ~3 significant digits per product. Used in a coupling's conditioner
it keeps the flow an exact bijection with an exact log-det (the forward and the
inverse evaluate the same conditioner on the same unchanged half), only the function
learned is computed at lower precision. Do not use it in residual-flow branches, whose
fixed-point inverse and Lipschitz bound assume the exact function.
"""
from __future__ import annotations

import contextlib
import functools
import os
import threading
from typing import Iterator, Optional

import jax
import jax.numpy as jnp

__all__ = ["conv2d_same", "choose_impl", "conv_impl", "current_impl", "CONV_IMPLS", "ENV_VAR"]

CONV_IMPLS = ("auto", "native", "im2col", "shift")
ENV_VAR = "JAXFLOWS_CONV_IMPL"

_override = threading.local()


def _check_impl(impl: str, who: str) -> None:
    if impl not in CONV_IMPLS:
        raise ValueError(f"{who}: the convolution implementation must be one of {CONV_IMPLS}, "
                         f"got {impl!r}.")


@contextlib.contextmanager
def conv_impl(impl: str) -> Iterator[None]:
    """Within the block, every ``impl="auto"`` convolution traced uses ``impl``.

    For benchmarks and tests; ``"auto"`` restores the backend's choice inside the block.
    Overrides the environment variable :data:`ENV_VAR`. Not part of any model's
    parameters or configuration: checkpoints are interchangeable between choices.
    """
    _check_impl(impl, "conv_impl")
    previous = getattr(_override, "impl", None)
    _override.impl = impl
    try:
        yield
    finally:
        _override.impl = previous


def current_impl() -> str:
    """The override in force: the :func:`conv_impl` block's, else ``$JAXFLOWS_CONV_IMPL``,
    else ``"auto"``.
    """
    impl = getattr(_override, "impl", None)
    if impl is None:
        impl = os.environ.get(ENV_VAR, "") or "auto"
        _check_impl(impl, f"${ENV_VAR}")
    return impl


def choose_impl(kernel_shape, backend: Optional[str] = None) -> str:
    """The implementation ``impl="auto"`` picks for a ``[k, k, C_in, C_out]`` kernel.

    ``"native"`` off CPU (GPU/TPU convolutions are fast) and for 1x1 kernels (which
    :func:`conv2d_same` computes as a plain matrix product anyway). On CPU, the
    ``k^2``-fold intermediate goes on the narrower side: ``"im2col"`` if the
    convolution widens the channels at least 4-fold, ``"shift"`` if it narrows them
    at least 4-fold, ``"native"`` in between (where the intermediate is as large as
    a native convolution's own work and the gain was not measured to be reliable).
    """
    kh, kw, cin, cout = kernel_shape
    backend = jax.default_backend() if backend is None else backend
    if backend != "cpu" or (kh == 1 and kw == 1):
        return "native"
    if 4 * cin <= cout:
        return "im2col"
    if 4 * cout <= cin:
        return "shift"
    return "native"


def _matmul(a: jax.Array, b: jax.Array, out_dtype, compute_dtype) -> jax.Array:
    if compute_dtype is None:
        return jnp.matmul(a, b.astype(a.dtype)).astype(out_dtype)
    return jnp.matmul(a.astype(compute_dtype), b.astype(compute_dtype),
                      preferred_element_type=jnp.promote_types(out_dtype, jnp.float32)
                      ).astype(out_dtype)


def _im2col(x, kernel, compute_dtype):
    kh, kw, cin, cout = kernel.shape
    b, h, w, _ = x.shape
    out_dtype = x.dtype
    if compute_dtype is not None:  # build the (k^2-fold) patches in the compute dtype
        x = x.astype(compute_dtype)
    xp = jnp.pad(x, ((0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0)))
    cols = jnp.concatenate([xp[:, i:i + h, j:j + w, :] for i in range(kh) for j in range(kw)],
                           axis=-1)
    out = _matmul(cols.reshape(b * h * w, kh * kw * cin), kernel.reshape(kh * kw * cin, cout),
                  out_dtype, compute_dtype)
    return out.reshape(b, h, w, cout)


def _shift(x, kernel, compute_dtype):
    kh, kw, cin, cout = kernel.shape
    b, h, w, _ = x.shape
    # [C_in, (i, j, o)]: every tap's output channels side by side.
    k2 = jnp.transpose(kernel, (2, 0, 1, 3)).reshape(cin, kh * kw * cout)
    z = _matmul(x.reshape(b * h * w, cin), k2, x.dtype, compute_dtype)
    z = z.reshape(b, h, w, kh * kw, cout)
    zp = jnp.pad(z, ((0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0), (0, 0)))
    y = None
    for i in range(kh):
        for j in range(kw):
            term = zp[:, i:i + h, j:j + w, i * kw + j, :]
            y = term if y is None else y + term
    return y


def conv2d_same(x: jax.Array, kernel: jax.Array, impl: str = "auto",
                compute_dtype=None) -> jax.Array:
    """'SAME' stride-1 convolution of NHWC ``x`` with an HWIO ``kernel`` (odd size).

    Args:
      x: ``[B, H, W, C_in]``.
      kernel: ``[k_h, k_w, C_in, C_out]``, cast to ``x.dtype``.
      impl: ``"auto"`` (the override of :func:`conv_impl` / ``$JAXFLOWS_CONV_IMPL`` if
        one is in force, else :func:`choose_impl`), ``"native"``
        (``lax.conv_general_dilated``), ``"im2col"`` or ``"shift"`` (module docstring).
      compute_dtype: ``None`` or e.g. ``jnp.bfloat16``: dtype of the matmul operands
        (float32 accumulation); see the precision policy in the module docstring.

    Returns:
      ``[B, H, W, C_out]`` in ``x.dtype``.

    Jitted: one dispatch when called eagerly, inlined under an outer ``jit``.
    """
    _check_impl(impl, "conv2d_same")
    if impl == "auto":
        impl = current_impl()
    return _conv2d_same(x, kernel, impl, compute_dtype)


@functools.partial(jax.jit, static_argnames=("impl", "compute_dtype"))
def _conv2d_same(x, kernel, impl, compute_dtype):
    if x.ndim != 4 or kernel.ndim != 4:
        raise ValueError(f"conv2d_same: `x` must be NHWC (rank 4) and `kernel` HWIO (rank 4); "
                         f"got shapes {tuple(x.shape)} and {tuple(kernel.shape)}.")
    kh, kw, cin, cout = kernel.shape
    if x.shape[-1] != cin:
        raise ValueError(f"conv2d_same: `x` has {x.shape[-1]} channels but `kernel` expects "
                         f"{cin} (kernel shape {tuple(kernel.shape)}).")
    if kh % 2 == 0 or kw % 2 == 0:
        raise ValueError(f"conv2d_same: kernel size must be odd for 'SAME' padding, "
                         f"got {(kh, kw)}.")
    kernel = kernel.astype(x.dtype)
    if kh == 1 and kw == 1:
        out = _matmul(x.reshape(-1, cin), kernel.reshape(cin, cout), x.dtype, compute_dtype)
        return out.reshape(x.shape[:-1] + (cout,))
    if impl == "auto":
        impl = choose_impl(kernel.shape)
    if impl == "im2col":
        return _im2col(x, kernel, compute_dtype)
    if impl == "shift":
        return _shift(x, kernel, compute_dtype)
    if compute_dtype is not None:
        out = jax.lax.conv_general_dilated(
            x.astype(compute_dtype), kernel.astype(compute_dtype), (1, 1), "SAME",
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
            preferred_element_type=jnp.promote_types(x.dtype, jnp.float32))
        return out.astype(x.dtype)
    return jax.lax.conv_general_dilated(x, kernel, (1, 1), "SAME",
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))

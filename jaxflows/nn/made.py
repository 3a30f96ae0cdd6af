r"""MADE: masked autoencoder for distribution estimation (Germain et al. 2015).

A MADE is a multilayer perceptron on ``x in R^D`` whose weight matrices are multiplied by
binary masks so that output ``i`` depends only on the inputs that come *before* ``x_i`` in
a chosen order: it computes all conditioners ``c(x_{<i})`` of an autoregressive model in
one pass. Masks follow from *degrees* (Germain et al. 2015, Sec. 4):

* input ``i`` has degree ``m(i) in {1 .. D}``, its position in the order;
* hidden unit ``k`` has a degree ``m(k) in {1 .. D - 1}``; it may see the inputs and
  previous hidden units of degree ``<= m(k)`` (mask ``m_in <= m_out``);
* output ``(i, p)`` (parameter ``p`` of entry ``i``) may see the hidden units of degree
  ``< m(i)`` (strict, Eq. 13), so it depends on ``x_{<i}`` only.

Hidden degrees are *balanced* rather than random, as in the MAF and NAF reference code
(``gpapamak/maf`` ``mades.py``, ``CW-Huang/torchkit`` ``get_rank``): unit ``k`` of a layer
gets ``1 + (k mod (D - 1))``, so every degree is used about equally often and no output
loses its inputs by chance.

Orders: ``"sequential"`` (``x_1`` first), ``"reversed"``, ``"random"`` (a permutation drawn
at ``init`` from the ``"params"`` rng stream, or fixed by ``seed``), or an explicit
sequence, the input indices in autoregressive order (``order[0]`` comes first).

Context (conditional MADE). A context ``c in R^K`` is treated as inputs of degree ``0``:
it enters the first hidden layer unmasked, and hidden degrees then run over ``0 .. D - 1``
(``k mod D``), so that the first entry of the order, which sees no input, still sees the
context through the degree-0 units (with degrees starting at 1, as in nflows, the first
entry's parameters would be an affine function of the context at best).

Residual variant (``residual=True``, as nflows' ``ResidualMADE``): after the first masked
layer, each further layer is ``h + MaskedDense(act(h))`` with the same degrees (allowed
by ``m_in <= m_out``), so all hidden sizes must be equal.

The masks are fixed buffers, not parameters: they live in the ``"buffers"`` collection
(``mask_0 .. mask_L``, **bool**, ``[in, out]``), and the random order in ``"buffers"``
``order`` (int32), so a checkpoint restores them, and differentiating or optimising the
whole ``variables`` dict by mistake is an error instead of silently training the masks
(which would break the autoregressive property). The output
layer is zero-initialised (``output_init_scale=0``: every parameter is 0 at init, so a
transformer that is the identity at zero parameters starts the flow at the identity) or
drawn from ``U(-s, s)`` (NAF's reference initialisation, needed where zero parameters
would leave interchangeable components, e.g. the sigmoids of DSF, forever equal).

Output: ``[batch, D, num_params]``, parameter ``p`` of entry ``i`` at ``[:, i, p]``.
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxflows.nn.utils import param_dtype

__all__ = ["MADE", "made_degrees", "made_masks"]

Array = jax.Array
_ORDERS = ("sequential", "reversed", "random")


def check_order(order, dim: int, who: str) -> None:
    """Raises a ``ValueError`` unless ``order`` is a known name or a permutation of ``dim``."""
    if isinstance(order, str):
        if order not in _ORDERS:
            raise ValueError(f"{who}: `order` must be one of {_ORDERS} or a permutation of "
                             f"range(D), got {order!r}.")
        return
    try:
        arr = np.asarray(order)
    except Exception:  # noqa: BLE001 - any conversion failure is a bad order
        arr = None
    if (arr is None or arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer)
            or sorted(arr.tolist()) != list(range(dim))):
        raise ValueError(f"{who}: `order` must be one of {_ORDERS} or a permutation of "
                         f"range(D) = range({dim}), got {order!r}.")


def made_degrees(order: Array, hidden_sizes: Sequence[int], has_context: bool):
    """Degrees of the inputs and of each hidden layer.

    Args:
      order: ``[D]`` int array, the input indices in autoregressive order.
      hidden_sizes: widths of the hidden layers.
      has_context: whether a context (degree 0) is present; hidden degrees then start at 0.

    Returns:
      ``[input_degrees, hidden_degrees_1, ...]``: ``input_degrees[order[j]] = j + 1``;
      hidden layer degrees are balanced (module docstring).
    """
    dim = order.shape[0]
    inputs = jnp.zeros((dim,), jnp.int32).at[order].set(jnp.arange(1, dim + 1, dtype=jnp.int32))
    degrees = [inputs]
    for n in hidden_sizes:
        k = np.arange(n)
        if has_context:
            hid = k % dim
        else:
            hid = k % max(1, dim - 1) + min(1, dim - 1)
        degrees.append(jnp.asarray(hid, jnp.int32))
    return degrees


def made_masks(degrees, num_params: int):
    """The masks ``[in, out]`` of every hidden layer and of the output layer.

    Hidden: ``m_in <= m_out``; output ``(i, p)`` (unit ``i * num_params + p``):
    ``m_last < m(i)``.
    """
    masks = [(d_in[:, None] <= d_out[None, :]) for d_in, d_out in zip(degrees[:-1], degrees[1:])]
    out_deg = jnp.repeat(degrees[0], num_params)
    masks.append(degrees[-1][:, None] < out_deg[None, :])
    return masks


class MaskedDense(nn.Module):
    """``x @ (mask * W) + b``: a dense layer with a fixed (bool) mask given at call time."""

    features: int
    kernel_init: nn.initializers.Initializer = nn.initializers.lecun_normal()
    bias_init: nn.initializers.Initializer = nn.initializers.zeros

    @nn.compact
    def __call__(self, x: Array, mask: Array) -> Array:
        pdt = param_dtype(x.dtype)
        kernel = self.param("kernel", self.kernel_init, (x.shape[-1], self.features), pdt)
        bias = self.param("bias", self.bias_init, (self.features,), pdt)
        kernel = jnp.where(mask, kernel.astype(x.dtype), jnp.zeros((), x.dtype))
        return x @ kernel + bias.astype(x.dtype)


class MADE(nn.Module):
    """Masked autoregressive network, ``x: [B, D] -> params: [B, D, num_params]``.

    Output ``[:, i, :]`` depends only on ``x[:, order[:j]]`` where ``order[j] = i`` (and on
    ``context``). See the module docstring.

    Example::

        made = MADE(hidden_features=(64, 64), num_params=2, order="reversed")
        variables = made.init(jax.random.PRNGKey(0), x)        # x: [B, D]
        params = made.apply(variables, x)                       # [B, D, 2]

    Args:
      hidden_features: widths of the hidden layers (>= 1 layer), or one int for one layer.
      num_params: outputs per input dimension (e.g. a transformer's ``num_params``).
      order: ``"sequential"``, ``"reversed"``, ``"random"`` or an explicit permutation of
        ``range(D)`` (input indices in autoregressive order).
      seed: for ``order="random"``: ``None`` draws the permutation from the ``"params"``
        rng stream at ``init``; an int fixes it (``jax.random.permutation(PRNGKey(seed),
        D)``).
      residual: residual hidden layers (all widths equal).
      activation: hidden nonlinearity.
      dropout: dropout rate after each hidden layer (``train=True``, rng ``"dropout"``).
      output_init_scale: ``0`` zero-initialises the output layer; ``s > 0`` draws its
        kernel and bias from ``U(-s, s)``.
    """

    hidden_features: Union[int, Sequence[int]] = (64, 64)
    num_params: int = 1
    order: Union[str, Sequence[int]] = "sequential"
    seed: Optional[int] = None
    residual: bool = False
    activation: str = "relu"
    dropout: float = 0.0
    output_init_scale: float = 0.0

    def hidden_sizes(self):
        h = self.hidden_features
        return (int(h),) if isinstance(h, (int, np.integer)) else tuple(int(n) for n in h)

    def _validate(self, x: Array, context: Optional[Array]) -> None:
        who = "MADE"
        if x.ndim != 2:
            raise ValueError(f"{who}: input `x` must be [batch, D] (rank 2); got shape "
                             f"{tuple(x.shape)}.")
        sizes = self.hidden_sizes()
        if not sizes or any(n < 1 for n in sizes):
            raise ValueError(f"{who}: `hidden_features` must be one or more widths >= 1, got "
                             f"{self.hidden_features!r}.")
        if self.residual and len(set(sizes)) != 1:
            raise ValueError(f"{who}: residual=True needs equal hidden widths, got {sizes}.")
        if isinstance(self.num_params, bool) or not isinstance(self.num_params, int) \
                or self.num_params < 1:
            raise ValueError(f"{who}: `num_params` must be an int >= 1, got "
                             f"{self.num_params!r}.")
        if self.activation not in _ACTIVATIONS:
            raise ValueError(f"{who}: `activation` must be one of {tuple(_ACTIVATIONS)}, got "
                             f"{self.activation!r}.")
        if not (0.0 <= self.dropout < 1.0):
            raise ValueError(f"{who}: `dropout` must be in [0, 1), got {self.dropout!r}.")
        if not self.output_init_scale >= 0:
            raise ValueError(f"{who}: `output_init_scale` must be >= 0, got "
                             f"{self.output_init_scale!r}.")
        check_order(self.order, x.shape[-1], who)
        if context is not None:
            if context.ndim != 2 or context.shape[0] != x.shape[0]:
                raise ValueError(f"{who}: `context` must be [batch, K] with the batch size of "
                                 f"`x` {x.shape[0]}; got shape {tuple(context.shape)}.")

    def _check_context(self, context: Optional[Array]) -> None:
        """A context must be given iff the module was initialised with one, of that width."""
        if self.is_initializing():
            return
        params = self.variables.get("params", {})
        initialised_with = "context" in params
        if context is None and initialised_with:
            raise ValueError("MADE: the module was initialised with a context; `context` is "
                             "required.")
        if context is not None and not initialised_with:
            raise ValueError(f"MADE: got a `context` of shape {tuple(context.shape)}, but the "
                             f"module was initialised without one.")
        if context is not None:
            width = params["context"]["kernel"].shape[0]
            if context.shape[-1] != width:
                raise ValueError(f"MADE: `context` has {context.shape[-1]} features (shape "
                                 f"{tuple(context.shape)}), but the module was initialised "
                                 f"with {width}.")

    def _order(self, dim: int) -> Array:
        if isinstance(self.order, str):
            if self.order == "sequential":
                return jnp.arange(dim, dtype=jnp.int32)
            if self.order == "reversed":
                return jnp.arange(dim - 1, -1, -1, dtype=jnp.int32)

            def draw():
                key = (self.make_rng("params") if self.seed is None
                       else jax.random.PRNGKey(self.seed))
                return jax.random.permutation(key, dim).astype(jnp.int32)
            return self.variable("buffers", "order", draw).value
        return jnp.asarray(np.asarray(self.order), jnp.int32)

    def autoregressive_order(self, dim: int) -> Array:
        """The input indices in autoregressive order (``[D]`` int32)."""
        return self._order(dim)

    @nn.compact
    def __call__(self, x: Array, context: Optional[Array] = None,
                 train: bool = False) -> Array:
        self._validate(x, context)
        dim = x.shape[-1]
        sizes = self.hidden_sizes()
        order = self._order(dim)
        if self.has_variable("buffers", "mask_0") and \
                self.get_variable("buffers", "mask_0").shape[0] != dim:
            raise ValueError(f"MADE: input `x` has {dim} features (shape {tuple(x.shape)}), "
                             f"but the module was initialised with "
                             f"{self.get_variable('buffers', 'mask_0').shape[0]}.")
        self._check_context(context)
        masks = []
        for i in range(len(sizes) + 1):
            # Masks are computed at init and stored as fixed buffers.
            def make(i=i):
                degrees = made_degrees(order, sizes, context is not None)
                return made_masks(degrees, self.num_params)[i]
            masks.append(self.variable("buffers", f"mask_{i}", make).value)
        act = _ACTIVATIONS[self.activation]
        drop = nn.Dropout(self.dropout, deterministic=not train)
        h = MaskedDense(sizes[0], name="dense_0")(x, masks[0])
        if context is not None:
            h = h + nn.Dense(sizes[0], use_bias=False, dtype=x.dtype,
                             param_dtype=param_dtype(x.dtype), name="context")(
                context.astype(x.dtype))
        for i in range(1, len(sizes)):
            branch = MaskedDense(sizes[i], name=f"dense_{i}")(drop(act(h)), masks[i])
            h = h + branch if self.residual else branch
        h = drop(act(h))
        s = self.output_init_scale
        init = (nn.initializers.zeros if s == 0
                else lambda key, shape, dtype: jax.random.uniform(key, shape, dtype, -s, s))
        out = MaskedDense(dim * self.num_params, kernel_init=init, bias_init=init,
                          name="dense_out")(h, masks[-1])
        return out.reshape(x.shape[:1] + (dim, self.num_params))


_ACTIVATIONS = {"relu": nn.relu, "tanh": jnp.tanh, "elu": nn.elu, "gelu": nn.gelu,
                "silu": nn.silu}

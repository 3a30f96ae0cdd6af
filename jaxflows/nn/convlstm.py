"""Convolutional LSTM (Shi et al. 2015), the recurrent core of mAR-SCF's channel prior.

One cell maps an input ``x_t`` ``[B, H, W, C_in]`` and the state ``(h, c)`` (each
``[B, H, W, F]``) to

    [i, f, o, g] = conv_{k, d}([x_t, h])              (one convolution, 4F outputs)
    c' = sigmoid(f) * c + sigmoid(i) * tanh(g)
    h' = sigmoid(o) * tanh(c')

with a ``k x k`` kernel of dilation ``d`` and ``"SAME"`` padding, so the spatial size is
kept. :class:`ConvLSTM` stacks ``num_layers`` cells, the hidden output of layer ``n``
being the input of layer ``n + 1`` (as ``Conv2dLSTM(num_layers=3)`` in the mAR-SCF
reference code, ``mar_prior/lstm.py``). The forget-gate bias starts at 1 (Jozefowicz et
al. 2015), the only departure from a zero bias; it keeps the state early in training.

Nothing is tied to a batch size: :func:`zero_state` builds the initial state from the
input's shape.
"""
from __future__ import annotations

from typing import Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

__all__ = ["ConvLSTMCell", "ConvLSTM", "zero_state"]

Array = jax.Array
State = Tuple[Tuple[Array, Array], ...]


def zero_state(x: Array, features: int, num_layers: int) -> State:
    """The all-zero state ``((h, c), ...)`` of ``num_layers`` cells for inputs like ``x``."""
    z = jnp.zeros(x.shape[:3] + (features,), x.dtype)
    return tuple((z, z) for _ in range(num_layers))


def _forget_bias(key, shape, dtype=jnp.float32):
    """Bias of the 4 gates ``[i, f, o, g]``: 1 for the forget gate, 0 elsewhere."""
    del key
    f = shape[0] // 4
    return jnp.zeros(shape, dtype).at[f:2 * f].set(1.0)


class ConvLSTMCell(nn.Module):
    """One ConvLSTM cell (see the module docstring).

    Attributes:
      features: hidden channels ``F`` of ``h`` and ``c``.
      kernel_size: spatial size ``k`` of the gate convolution.
      dilation: dilation ``d`` of the gate convolution.
    """

    features: int
    kernel_size: int = 3
    dilation: int = 1

    @nn.compact
    def __call__(self, x: Array, state: Tuple[Array, Array]) -> Tuple[Array, Tuple[Array, Array]]:
        h, c = state
        if h.shape[:3] != x.shape[:3] or h.shape[-1] != self.features:
            raise ValueError(
                f"ConvLSTMCell: state shape {tuple(h.shape)} does not match the input "
                f"{tuple(x.shape)} with {self.features} features.")
        k, d = self.kernel_size, self.dilation
        gates = nn.Conv(4 * self.features, (k, k), kernel_dilation=(d, d), padding="SAME",
                        bias_init=_forget_bias, dtype=x.dtype, name="gates")(
            jnp.concatenate([x, h], axis=-1))
        i, f, o, g = jnp.split(gates, 4, axis=-1)
        c_new = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
        h_new = jax.nn.sigmoid(o) * jnp.tanh(c_new)
        return h_new, (h_new, c_new)


class ConvLSTM(nn.Module):
    """``num_layers`` stacked :class:`ConvLSTMCell` s, one time step per call.

    Call: ``lstm(x, state) -> (h_top, new_state)`` with ``state`` from
    :func:`zero_state` (``num_layers`` pairs ``(h, c)``).

    Attributes:
      features: hidden channels of every layer.
      num_layers: number of stacked cells (mAR-SCF: 3).
      kernel_size: gate convolution size of every layer.
      dilation: gate convolution dilation of every layer.
    """

    features: int = 32
    num_layers: int = 3
    kernel_size: int = 3
    dilation: int = 1

    @nn.compact
    def __call__(self, x: Array, state: State) -> Tuple[Array, State]:
        if len(state) != self.num_layers:
            raise ValueError(f"ConvLSTM: expected a state of {self.num_layers} layers, got "
                             f"{len(state)}.")
        new_state = []
        h = x
        for n in range(self.num_layers):
            h, s = ConvLSTMCell(self.features, self.kernel_size, self.dilation,
                                name=f"cell_{n}")(h, state[n])
            new_state.append(s)
        return h, tuple(new_state)

r"""mAR: the multi-scale autoregressive channel prior of mAR-SCF.

Bhattacharyya, Mahajan, Fritz, Schiele & Roth, "Normalizing Flows with Multi-Scale
Autoregressive Priors" (CVPR 2020; supplement Sec. B, Fig. 6). At every level ``i`` of a
multi-scale flow the factored-out half ``l_i`` (``[B, H, W, C]``) gets a prior that is
autoregressive **over channels** given the kept half ``r_i``:

.. math::

    p(l_i \mid r_i) = \prod_{j=1}^{C} \mathcal N\big(l_i^j;\ \mu_i^j, (\sigma_i^j)^2\big),
    \qquad (\mu_i^j, \log\sigma_i^j) = \mathrm{out}\big(\mathrm{LSTM}(
        [l_i^{j-1}, e(r_i)])\big),

where ``l_i^0 = 0``, the ConvLSTM (:mod:`jaxflows.nn.convlstm`; 3 layers of 32 channels)
carries its state from channel to channel, ``e(r_i)`` is a convolutional embedding of
the kept half (``5x5 conv(32) -> ReLU -> 5x5 conv(4)``, the same at every step) and
``out`` is a ``3x3`` convolution to 2 channels. Each step's input is first embedded by a
``k x k`` convolution to the LSTM width (``conv_embed`` of the reference code). The top
level has no kept half: its prior is unconditional (input: the previous channel only).

As a change of variables. The prior is a Gaussian autoregressive map: with
``eps^j = (l^j - mu^j) / sigma^j``, ``p(l | r) = N(eps; 0, I) prod_j 1/sigma^j``, so
:meth:`MARPrior.standardize` (``l -> eps``, log-det ``-sum log sigma``) is a bijector with a
triangular Jacobian and :meth:`MARPrior.generate` (``eps -> l``) its inverse. Both are one
``nn.scan`` over channels carrying the LSTM state: teacher forcing for the density (the
true ``l^{j-1}`` is the input of step ``j``), and MARPS sampling (mAR-SCF Algorithm 1) for
``generate`` (the generated ``l^{j-1}`` is the input). Temperature therefore scales the
noise ``eps`` of every step. :class:`~jaxflows.bijectors.mar.MARSplit` puts this prior
into a multi-scale flow.

Training speed. The density (teacher forcing) does not run the step module ``C`` times.
Everything that does not depend on the recurrent state is batched over the channels:
the step input ``[l^{j-1}, e(r)]`` enters the network only through the linear input
embedding and the input-to-hidden half of the first LSTM layer's gate convolution, so
the embedding of ``e(r)`` is computed once (it is the same at every step), that of the
``C`` known inputs ``l^{j-1}`` in one convolution over a ``C``-fold batch, and so are the
first layer's input gates; the output convolution reads the top hidden states of all
steps after the scan. The ``lax.scan`` over channels keeps only the hidden-to-hidden
convolutions, and with constant kernels: parameter gradients accumulated inside a scan
are 20-70x slower on XLA's CPU backend than the scan itself, so a first, gradient-free
pass records the inputs ``X_n`` of every layer's recurrent convolution, and the scan that
is differentiated adds ``e_n = conv(X_n, W_n) - conv(X_n, stop_gradient(W_n))`` (exactly
zero, computed for all steps in one batched convolution) to the gates; the weight
gradients then come out of that one batched convolution. It uses the parameters of the
step module as they are (same tree, same checkpoints), with XLA's native convolutions:
:func:`jaxflows.nn.conv.conv2d_same` (convolutions as matrix products) was measured slower
at the prior's sizes (``_MATMUL_CONV`` switches it on for the undilated ones). The maths
is the same as :meth:`MARPrior.standardize_sequential`
(the straightforward scan over the step module, also used at ``init`` and by MARPS);
only the summation order of the convolutions differs (float32 rounding).

Departures from the reference code (``visinf/mar-scf``, ``mar_prior/``): nothing is tied to a
batch or image size (the reference hard-codes both); the output convolution starts at
zero, so the prior starts as ``N(0, I)`` (the flow starts as a plain factor-out), and the
LSTM's forget-gate bias starts at 1; an optional ``context`` (e.g. a class embedding or a
conditioning image) is concatenated to the kept half before the embedding.
"""
from __future__ import annotations

from typing import Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxflows.bijectors.base import sum_except_batch
from jaxflows.nn.conv import conv2d_same
from jaxflows.nn.convlstm import ConvLSTM, zero_state
from jaxflows.nn.utils import check_int_args, param_dtype

__all__ = ["MARPrior"]

Array = jax.Array

# Whether the batched density uses jaxflows.nn.conv.conv2d_same (convolutions as matrix
# products on CPU) for its undilated convolutions. Off: at the prior's sizes (2x2 to 16x16
# maps, 1 to 64 channels) XLA's native convolutions measured faster, with gradients, here.
_MATMUL_CONV = False


class _MARStep(nn.Module):
    """One time step: ``(previous channel, embedding of r, state) -> (mu, log sigma, state)``."""

    features: int
    num_layers: int
    kernel_size: int
    dilation: int
    out_kernel: int

    @nn.compact
    def __call__(self, prev: Array, cond: Array, state):
        x = jnp.concatenate([prev, cond], axis=-1)
        pd = param_dtype(x.dtype)
        k = self.kernel_size
        x = nn.Conv(self.features, (k, k), padding="SAME", dtype=x.dtype, param_dtype=pd,
                    name="embed")(x)
        h, state = ConvLSTM(self.features, self.num_layers, self.kernel_size, self.dilation,
                            name="lstm")(x, state)
        o = self.out_kernel
        out = nn.Conv(2, (o, o), padding="SAME", kernel_init=nn.initializers.zeros,
                      bias_init=nn.initializers.zeros, dtype=x.dtype, param_dtype=pd,
                      name="out")(h)
        return out[..., :1], out[..., 1:], state


class MARPrior(nn.Module):
    """The mAR channel prior ``p(l | r)`` of one level (see the module docstring).

    Methods (all take ``l`` or ``eps`` of shape ``[B, H, W, C]`` and, when
    ``conditional``, the kept half ``r`` ``[B, H, W, C_r]``):

    * ``standardize(l, r) -> (eps, log_det)``: ``eps^j = (l^j - mu^j) / sigma^j`` by
      teacher forcing, ``log_det = -sum log sigma`` (``[B]``);
    * ``generate(eps, r) -> (l, log_det)``: MARPS, one channel per step;
      ``log_det = +sum log sigma`` is that of ``eps -> l``;
    * ``log_prob(l, r) -> [B]``: ``log N(eps; 0, I) + log_det``;
    * ``sample(shape, r, temperature) -> l``: ``generate`` of ``eps ~ N(0, T^2 I)``
      (rng stream ``"sample"``); ``shape`` is ``(B, H, W, C)``.

    ``standardize`` and ``generate`` sow the mean ``log sigma`` of every channel
    (collection ``"intermediates"``, name ``"channel_log_sigma"``, shape ``[C]``): one
    entry per sequential step of MARPS.

    Attributes:
      conditional: whether the prior reads a kept half ``r`` (every level but the top).
      features: width of the ConvLSTM (mAR-SCF: 32).
      num_layers: stacked ConvLSTM layers (mAR-SCF: 3).
      kernel_size: kernel of the step's input embedding and of the LSTM gates.
      dilation: dilation of the LSTM gate convolutions.
      embed_features: hidden width of the embedding of ``r`` (reference: 32).
      embed_channels: output channels of the embedding of ``r`` (reference: 4).
      embed_kernel: kernel of the two embedding convolutions (reference: 5).
      out_kernel: kernel of the output convolution (reference: 3).
    """

    conditional: bool = True
    features: int = 32
    num_layers: int = 3
    kernel_size: int = 3
    dilation: int = 1
    embed_features: int = 32
    embed_channels: int = 4
    embed_kernel: int = 5
    out_kernel: int = 3

    def setup(self):
        check_int_args("MARPrior", {name: getattr(self, name) for name in (
            "features", "num_layers", "kernel_size", "dilation", "embed_features",
            "embed_channels", "embed_kernel", "out_kernel")})
        self.step = _MARStep(self.features, self.num_layers, self.kernel_size, self.dilation,
                             self.out_kernel)
        if self.conditional:
            k = self.embed_kernel
            self.embed_in = nn.Conv(self.embed_features, (k, k), padding="SAME", name="embed_in")
            self.embed_out = nn.Conv(self.embed_channels, (k, k), padding="SAME",
                                     name="embed_out")

    def _condition(self, x: Array, r: Optional[Array], arg: str) -> Array:
        """The embedding ``e(r)`` (``[B, H, W, embed_channels]``), or an empty map."""
        if x.ndim != 4:
            raise ValueError(f"MARPrior: `{arg}` must be an NHWC batch of rank 4, got shape "
                             f"{tuple(x.shape)}.")
        if not self.conditional:
            if r is not None:
                raise ValueError("MARPrior: this prior is unconditional (the top level); got "
                                 "a kept half `r`.")
            return jnp.zeros(x.shape[:3] + (0,), x.dtype)
        if r is None:
            raise ValueError("MARPrior: a conditional prior needs the kept half `r`.")
        if r.ndim != 4 or r.shape[:3] != x.shape[:3]:
            raise ValueError(f"MARPrior: `r` must be [B, H, W, C_r] with the batch and spatial "
                             f"size of `{arg}` {tuple(x.shape)}; got shape {tuple(r.shape)}.")
        r = r.astype(x.dtype)
        h = nn.relu(self.embed_in(r))
        return self.embed_out(h).astype(x.dtype)

    def _scan(self, x: Array, cond: Array, generate: bool) -> Tuple[Array, Array]:
        """One pass over the channels of ``x`` (``l``, or ``eps`` if ``generate``).

        Returns the other one (``eps``, or ``l``) and ``log sigma`` of every channel.
        """
        state0 = zero_state(x, self.features, self.num_layers)
        prev0 = jnp.zeros(x.shape[:3] + (1,), x.dtype)
        xs = jnp.moveaxis(x, -1, 0)[..., None]            # [C, B, H, W, 1]

        def body(step, carry, x_j, cond):
            state, prev = carry
            mu, log_sigma, state = step(prev, cond, state)
            if generate:
                l_j = mu + jnp.exp(log_sigma) * x_j
                out = l_j
            else:
                l_j = x_j
                out = (x_j - mu) * jnp.exp(-log_sigma)
            return (state, l_j), (out, log_sigma)

        scan = nn.scan(body, variable_broadcast="params", split_rngs={"params": False},
                       in_axes=(0, nn.broadcast), out_axes=0)
        _, (out, log_sigma) = scan(self.step, (state0, prev0), xs, cond)
        return jnp.moveaxis(out[..., 0], 0, -1), jnp.moveaxis(log_sigma[..., 0], 0, -1)

    def _teacher_forced(self, l: Array, r: Optional[Array]) -> Tuple[Array, Array]:
        """``(eps, log sigma)`` by teacher forcing, batched over channels (module docstring)."""
        b, h, w, c = l.shape
        dt = l.dtype
        params = self.step.variables["params"]
        f = self.features

        def conv(x, kernel, dilation=1):
            kernel = kernel.astype(dt)
            if _MATMUL_CONV and dilation == 1 and kernel.shape[0] % 2 and kernel.shape[1] % 2:
                return conv2d_same(x, kernel)
            return jax.lax.conv_general_dilated(
                x, kernel, (1, 1), "SAME", rhs_dilation=(dilation, dilation),
                dimension_numbers=("NHWC", "HWIO", "NHWC"))

        # Step input embedding: conv_k([l^{j-1}, e(r)]) = conv(l^{j-1}) + conv(e(r)) + b.
        emb = params["embed"]
        w_emb = emb["kernel"]                             # [k, k, 1 + E, F]
        prev = jnp.concatenate([jnp.zeros((b, h, w, 1), dt), l[..., :-1]], axis=-1)
        prev = jnp.moveaxis(prev, -1, 0).reshape(c * b, h, w, 1)
        x = conv(prev, w_emb[:, :, :1]).reshape(c, b, h, w, f)
        fixed = emb["bias"].astype(dt)
        if w_emb.shape[2] > 1:
            cond = self._condition(l, r, "l")             # e(r): once, not per step
            fixed = fixed + conv(cond, w_emb[:, :, 1:])
        x = x + fixed
        # The first LSTM layer's input-to-hidden gates of every step at once.
        cells = [params["lstm"][f"cell_{n}"]["gates"] for n in range(self.num_layers)]
        w0 = cells[0]["kernel"]                           # [k, k, F + F, 4F]
        gx = conv(x.reshape(c * b, h, w, f), w0[:, :, :f], self.dilation)
        gx = (gx + cells[0]["bias"].astype(dt)).reshape(c, b, h, w, 4 * f)

        def update(gates, cell):
            i, fg, o, g = jnp.split(gates, 4, axis=-1)
            cell = jax.nn.sigmoid(fg) * cell + jax.nn.sigmoid(i) * jnp.tanh(g)
            return jax.nn.sigmoid(o) * jnp.tanh(cell), cell

        # Hidden-to-hidden kernels of every layer (layer 0: its hidden half; layers n > 0:
        # the whole kernel over [h^{n-1}_j, h^n_{j-1}]) and the biases of layers n > 0.
        sg = jax.lax.stop_gradient
        kernels = [w0[:, :, f:]] + [cells[n]["kernel"] for n in range(1, self.num_layers)]
        biases = [None] + [cells[n]["bias"] for n in range(1, self.num_layers)]

        def body(state, xs, kernels, biases, extra):
            """One channel step; returns the new state, the top hidden state and the
            inputs of every layer's recurrent convolution.
            """
            gx_j = xs[0]
            new, inputs = [], []
            below = None
            for n in range(self.num_layers):
                hid, cell = state[n]
                inp = hid if n == 0 else jnp.concatenate([below, hid], axis=-1)
                gates = conv(inp, kernels[n], self.dilation)
                gates = gates + (gx_j if n == 0 else biases[n].astype(dt))
                if extra:
                    gates = gates + xs[1][n]
                hid, cell = update(gates, cell)
                new.append((hid, cell))
                inputs.append(inp)
                below = hid
            return tuple(new), (below, tuple(inputs))

        state0 = zero_state(l, f, self.num_layers)
        # Parameter gradients accumulated inside a scan are very slow on XLA's CPU backend
        # (measured 20-70x the cost of the same scan without them). So the scan runs with
        # constant (stop_gradient) kernels and biases, and their gradients come from
        # e_n = conv(X_n, W_n) + b_n - (the same with W_n, b_n constant), which is exactly
        # zero, computed for all steps at once outside the scan from the recurrent
        # convolutions' inputs X_n of a first, gradient-free pass, and added to the gates
        # inside: the cotangent of e_n at step j is dL/d(gates_j) (all later steps
        # included), so the batched convolution yields sum_j dL/d(gates_j) d(gates_j)/dW_n.
        k_sg = [sg(k) for k in kernels]
        b_sg = [None if bb is None else sg(bb) for bb in biases]
        _, (_, x_rec) = jax.lax.scan(
            lambda st, g: body(st, (g,), k_sg, b_sg, False), sg(state0), sg(gx))
        extras = []
        for n in range(self.num_layers):
            xn = sg(x_rec[n]).reshape((c * b,) + x_rec[n].shape[2:])
            e = conv(xn, kernels[n], self.dilation) - conv(xn, k_sg[n], self.dilation)
            if n > 0:
                e = e + (biases[n] - b_sg[n]).astype(dt)
            extras.append(e.reshape(c, b, h, w, 4 * f))
        _, (tops, _) = jax.lax.scan(
            lambda st, xs: body(st, xs, k_sg, b_sg, True), state0, (gx, tuple(extras)))
        out = params["out"]
        o = conv(tops.reshape(c * b, h, w, f), out["kernel"]) + out["bias"].astype(dt)
        o = jnp.moveaxis(o.reshape(c, b, h, w, 2), 0, -2)    # [B, H, W, C, 2]
        mu, log_sigma = o[..., 0], o[..., 1]
        return (l - mu) * jnp.exp(-log_sigma), log_sigma

    def _sow(self, log_sigma: Array) -> None:
        """Sows the mean ``log sigma`` of every channel (``"intermediates"``,
        ``"channel_log_sigma"``, shape ``[C]``): one entry per sequential step.
        """
        self.sow("intermediates", "channel_log_sigma", jnp.mean(log_sigma, axis=(0, 1, 2)))

    def standardize(self, l: Array, r: Optional[Array] = None) -> Tuple[Array, Array]:
        """``l -> eps`` by teacher forcing; returns ``(eps, -sum log sigma)``.

        Batched over channels wherever the recurrence allows (module docstring); at
        ``init`` it runs :meth:`standardize_sequential`, which creates the parameters.
        """
        if self.is_initializing():
            return self.standardize_sequential(l, r)
        if l.ndim != 4:
            raise ValueError(f"MARPrior: `l` must be an NHWC batch of rank 4, got shape "
                             f"{tuple(l.shape)}.")
        if not self.conditional:
            self._condition(l, r, "l")                    # argument checks only
        eps, log_sigma = self._teacher_forced(l, r)
        self._sow(log_sigma)
        return eps, -sum_except_batch(log_sigma)

    def standardize_sequential(self, l: Array, r: Optional[Array] = None
                               ) -> Tuple[Array, Array]:
        """:meth:`standardize` as one scan over the step module (the reference form)."""
        cond = self._condition(l, r, "l")
        eps, log_sigma = self._scan(l, cond, generate=False)
        self._sow(log_sigma)
        return eps, -sum_except_batch(log_sigma)

    def generate(self, eps: Array, r: Optional[Array] = None) -> Tuple[Array, Array]:
        """``eps -> l`` channel by channel (MARPS); returns ``(l, +sum log sigma)``."""
        cond = self._condition(eps, r, "eps")
        l, log_sigma = self._scan(eps, cond, generate=True)
        self._sow(log_sigma)
        return l, sum_except_batch(log_sigma)

    def log_prob(self, l: Array, r: Optional[Array] = None) -> Array:
        """``log p(l | r)`` in nats, ``[B]``."""
        eps, log_det = self.standardize(l, r)
        log_normal = -0.5 * (eps ** 2 + jnp.log(2 * jnp.pi))
        return sum_except_batch(log_normal) + log_det

    def sample(self, shape, r: Optional[Array] = None, temperature: float = 1.0) -> Array:
        """``l ~ p(l | r)`` with the noise of every step scaled by ``temperature``."""
        shape = tuple(int(s) for s in shape)
        if len(shape) != 4:
            raise ValueError(f"MARPrior.sample: `shape` must be (B, H, W, C), got {shape}.")
        t = float(temperature)
        if not (t > 0 and t < float("inf")):
            raise ValueError(f"MARPrior.sample: `temperature` must be finite and > 0, got "
                             f"{temperature!r}.")
        eps = t * jax.random.normal(self.make_rng("sample"), shape)
        return self.generate(eps, r)[0]

r"""Pieces shared by the experiment configs, and the conventions every config follows.

Conventions
-----------
* A config is a module ``experiments/configs/<name>.py`` of the installed ``experiments``
  package with a function ``get_config(arg="") -> ml_collections.ConfigDict`` built from
  ``jaxflows.train.default_config()`` (the schema is documented in ``glow_digits.py``).
* It declares the variants ``get_config`` accepts in a module-level tuple
  ``VARIANTS``, the default ``""`` first, e.g. ``VARIANTS = ("", "small")``;
  ``--config=experiments/configs/<name>.py:<variant>`` selects one. Any other ``arg`` is
  a ``ValueError`` (:func:`check_variant`). ``tests/test_configs.py`` finds every config
  by glob and builds the model of every variant in ``VARIANTS`` (shapes only), and checks
  that an unknown variant is refused: a new config is covered without editing a test.
* Shared pieces are imported one way, as modules of the package:
  ``from experiments.configs import common`` (and ``from experiments.configs import
  resflow_mnist`` where a config extends another); never by editing the import path or by
  loading files by path.
* ``config.model`` states only what differs from the defaults of the model factory
  (``jaxflows.models.<name>``), whose defaults are the papers' settings; the config's
  docstring states everything the paper states, with the reference. Residual flows
  write their numerical settings as dicts (``c.model.estimator = dict(kind="series")``),
  which override the fields of the factory's defaults
  (:mod:`jaxflows.bijectors.residual_settings`).
* The ``small`` variants run on a laptop CPU in minutes on offline data: ``digits``
  (scikit-learn's 8x8 digits, :func:`digits_splits`) or ``mnist_8k`` (8,000 real MNIST
  digits shipped in ``jaxflows.data``, :func:`mnist_8k_splits`).
"""
from __future__ import annotations

from typing import Sequence

import ml_collections

from jaxflows.train import default_config

__all__ = ["check_variant", "digits_splits", "mnist_8k_splits", "residual_small",
           "with_attention", "acf_small", "attnflow_digits_small"]


def check_variant(name: str, arg: str, variants: Sequence[str]) -> None:
    """Raises a ``ValueError`` naming config ``name`` unless ``arg`` is one of ``variants``."""
    if arg not in variants:
        raise ValueError(f"{name}: unknown config variant {arg!r}; use one of "
                         f"{', '.join(repr(v) for v in variants)}.")


def digits_splits(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """``digits`` (8x8, 17 levels): 1,350 train / 150 validation / 297 test images."""
    c.dataset.name = "digits"
    c.dataset.train_split = "train[:90%]"   # 1,350 images
    c.dataset.val_split = "train[90%:]"     # 150 images, best-checkpoint selection
    c.dataset.test_split = "test"           # 297 images
    return c


def mnist_8k_splits(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """``mnist_8k`` (28x28, 256 levels): 6,480 train / 720 validation / 800 test digits.

    The dataset's ``train`` split is its first 7,200 digits and ``test`` the last 800.
    """
    c.dataset.name = "mnist_8k"
    c.dataset.train_split = "train[:90%]"   # 6,480 digits
    c.dataset.val_split = "train[90%:]"     # 720 digits
    c.dataset.test_split = "test"           # 800 digits
    return c


def residual_small(c: ml_collections.ConfigDict, model_name: str) -> ml_collections.ConfigDict:
    """Shrinks a residual-flow config (``resflow``, ``iresnet``, ``idensenet``) to ``digits``.

    The ``small`` variants of ``resflow_*.py``, ``iresnet_cifar10.py`` and
    ``idensenet_cifar10.py``: the model keeps its factory's architecture and settings
    (i-ResNet's ELU, series estimator, coefficient 0.9 included) at 2 levels of 2 blocks,
    one fully connected end block, logit margin 0.05, 100 power iterations at init;
    hidden width 32 (fully connected 64), or for i-DenseNet depth 2, growth 32 (fully
    connected: 32 features, growth 16). Adam 2e-3 (betas 0.9/0.99) with 50 warm-up
    steps and cosine decay, clipping at 5, 1,200 steps of batch 64, EMA 0.99.
    """
    digits_splits(c)
    model = dict(name=model_name, levels=2, blocks_per_level=2, fc_blocks=1,
                 spectral_norm=dict(init_iterations=100))
    if model_name == "idensenet":
        model.update(depth=2, growth=32, fc_growth=16, fc_first_features=32)
    else:
        model.update(hidden_channels=32, fc_hidden=64)
    c.model = ml_collections.ConfigDict(model)
    c.batch_size = 64
    c.eval_batch_size = 300
    c.init_batch_size = 256
    c.num_train_steps = 1200
    c.optim.name = "adam"
    c.optim.learning_rate = 2e-3
    c.optim.b2 = 0.99
    c.optim.warmup_steps = 50
    c.optim.schedule = "cosine"
    c.optim.final_lr_fraction = 0.05
    c.optim.grad_clip_norm = 5.0
    c.ema_decay = 0.99
    c.log_every = 25
    c.eval_every = 200
    c.checkpoint_every = 400
    c.keep_checkpoints = 1
    c.sample_temperatures = (0.7, 1.0)
    c.num_samples = 36
    return c


def with_attention(c: ml_collections.ConfigDict, attention: str,
                   heads: int) -> ml_collections.ConfigDict:
    """Turns a residual-flow config (``model.name`` resflow/iresnet/idensenet) into ACF.

    The model becomes ``acf`` with ``base`` the former model and the same arguments, plus
    the attention kind (``"l2"``, ``"lipnorm"`` or ``"none"``) and number of heads.
    """
    base = c.model.name
    c.model.name = "acf"
    c.model.base = base
    c.model.attention = attention
    c.model.heads = heads
    return c


def ablation_schedule(c: ml_collections.ConfigDict, *, learning_rate: float,
                      init_batch_size: int, num_samples: int) -> ml_collections.ConfigDict:
    """The 300-step schedule of the attention ablations (ACF and AttnFlow ``small``).

    Adam at ``learning_rate`` with 100 warm-up steps and cosine decay to 5 %, 300 steps
    of batch 64, EMA 0.995; evaluation and a checkpoint every 100 steps.
    """
    c.batch_size = 64
    c.eval_batch_size = 300
    c.init_batch_size = init_batch_size
    c.num_train_steps = 300
    c.optim.name = "adam"
    c.optim.learning_rate = learning_rate
    c.optim.warmup_steps = 100
    c.optim.schedule = "cosine"
    c.optim.final_lr_fraction = 0.05
    c.ema_decay = 0.995
    c.log_every = 50
    c.eval_every = 100
    c.checkpoint_every = 100
    c.keep_checkpoints = 2
    c.num_samples = num_samples
    return c


def acf_small() -> ml_collections.ConfigDict:
    """The CPU-minutes ACF variant on ``digits`` (``acf_mnist.py:small``, ``acf_cifar10.py:small``).

    The layout and optimisation of the attention ablations (``experiments/ablations.py``):
    2 levels, each a squeeze then 2 residual blocks of hidden width 32 (Residual Flows'
    LipSwish, coefficient 0.98, roulette), half of the channels factored out with a fixed
    N(0, I) prior after level 0 (the attention sits between the convolutions, on the 32
    hidden features; any number of heads), logit margin 0.05, one L2 attention head;
    Adam 1e-3 with 100 warm-up steps and cosine decay, 300 steps of batch 64, EMA 0.995.
    """
    c = digits_splits(default_config())
    c.seed = 0
    c.model = ml_collections.ConfigDict(dict(
        name="acf", base="resflow", attention="l2", heads=1, levels=2, blocks_per_level=2,
        hidden_channels=32, fc_blocks=0,
        squeeze_first=True,                 # every level: squeeze -> blocks -> factor out
        factor_out=True))
    return ablation_schedule(c, learning_rate=1e-3, init_batch_size=256, num_samples=16)


def attnflow_digits_small(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The CPU-minutes AttnFlow variant on ``digits`` (``attnflow_*.py:small``).

    The protocol of ``glow_digits.py:small`` (so the two are comparable): 2 levels of K=2
    steps with 32 hidden channels, iTrans attention with 2 heads at pos-1, logit
    preprocessing, dropout 0.2, no padding; Adam 8e-4 with 100 warm-up steps and cosine
    decay, 300 steps of batch 64, EMA 0.995.
    """
    digits_splits(c)
    c.dataset.pad = 0
    # steps_per_level is the factory's default, stated because the Glow baseline of
    # experiments/ablations.py reuses this model section with the glow factory (K=32).
    c.model = ml_collections.ConfigDict(dict(
        name="attnflow", attention="itrans", heads=2, levels=2, steps_per_level=2,
        hidden_channels=32, preprocessing="logit", dropout=0.2))
    return ablation_schedule(c, learning_rate=8e-4, init_batch_size=512, num_samples=64)

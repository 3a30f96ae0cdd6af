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
* A block of settings is one :func:`jaxflows.train.set_fields` call (a training schedule:
  ``set_fields(c, batch_size=64, optim=dict(learning_rate=1e-3), ema_decay=0.999)``), so
  a misspelt key is an error, not a new field; a schedule or variant that several configs
  share is a function here.
"""
from __future__ import annotations

from typing import Sequence

import ml_collections

from jaxflows.train import default_config, set_fields

__all__ = ["check_variant", "digits_splits", "mnist_8k_splits", "held_out_splits",
           "residual_small", "residual_flows_schedule", "residual_cifar10", "with_attention",
           "ablation_schedule", "mnist_ablation_schedule", "acf_small", "acf_small_mnist",
           "attnflow_digits_small",
           "attnflow_small_mnist", "attnflow_paper_model",
           "attnflow_paper_schedule", "attnflow_variant", "cifar10_small_schedule",
           "mar_scf_reference_schedule", "mar_scf_mixlogcdf"]


def check_variant(name: str, arg: str, variants: Sequence[str]) -> None:
    """Raises a ``ValueError`` naming config ``name`` unless ``arg`` is one of ``variants``."""
    if arg not in variants:
        raise ValueError(f"{name}: unknown config variant {arg!r}; use one of "
                         f"{', '.join(repr(v) for v in variants)}.")


def digits_splits(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """``digits`` (8x8, 17 levels): 1,350 train / 150 validation / 297 test images."""
    return set_fields(c, dataset=dict(
        name="digits",
        train_split="train[:90%]",    # 1,350 images
        val_split="train[90%:]",      # 150 images, best-checkpoint selection
        test_split="test"))           # 297 images


def mnist_8k_splits(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """``mnist_8k`` (28x28, 256 levels): 6,480 train / 720 validation / 800 test digits.

    The dataset's ``train`` split is its first 7,200 digits and ``test`` the last 800.
    """
    return set_fields(c, dataset=dict(
        name="mnist_8k",
        train_split="train[:90%]",    # 6,480 digits
        val_split="train[90%:]",      # 720 digits
        test_split="test"))           # 800 digits


def held_out_splits(c: ml_collections.ConfigDict, name: str,
                    boundary: str) -> ml_collections.ConfigDict:
    """TFDS ``name`` trained on ``train[:boundary]``, validated on ``train[boundary:]``.

    The held-out end of ``train`` selects the best checkpoint and ``test`` is reported,
    e.g. ``held_out_splits(c, "mnist", "55000")`` (55,000 / 5,000) or
    ``held_out_splits(c, "cifar10", "95%")`` (47,500 / 2,500).
    """
    return set_fields(c, dataset=dict(name=name, train_split=f"train[:{boundary}]",
                                      val_split=f"train[{boundary}:]", test_split="test"))


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
    c.model = ml_collections.ConfigDict(model)    # replaces the full model's settings
    return set_fields(
        c, batch_size=64, eval_batch_size=300, init_batch_size=256, num_train_steps=1200,
        optim=dict(name="adam", learning_rate=2e-3, b2=0.99, warmup_steps=50,
                   schedule="cosine", final_lr_fraction=0.05, grad_clip_norm=5.0),
        ema_decay=0.99, log_every=25, eval_every=200, checkpoint_every=400,
        keep_checkpoints=1, sample_temperatures=(0.7, 1.0), num_samples=36)


def residual_flows_schedule(c: ml_collections.ConfigDict,
                            num_train_steps: int) -> ml_collections.ConfigDict:
    """The optimisation of the Residual Flows reference ``train_img.py`` (Chen et al. 2019).

    Used by ``resflow_mnist.py``, ``resflow_cifar10.py`` and ``idensenet_cifar10.py``
    (i-DenseNet trains with the Residual Flows code): Adam, learning rate 1e-3, betas
    0.9/0.99, 1,000 linear warm-up steps, gradient clipping at norm 1, batch 64, EMA
    0.999 for evaluation, ``num_train_steps`` steps; evaluation (batch 200) and a
    checkpoint every 5,000 steps.
    """
    return set_fields(
        c, batch_size=64, eval_batch_size=200, init_batch_size=256,
        num_train_steps=num_train_steps,
        optim=dict(name="adam", learning_rate=1e-3, b2=0.99, warmup_steps=1000,
                   grad_clip_norm=1.0),
        ema_decay=0.999, log_every=100, eval_every=5000, checkpoint_every=5000)


def residual_cifar10(model_name: str, arg: str) -> ml_collections.ConfigDict:
    """``resflow_cifar10.py`` and ``idensenet_cifar10.py``: ``model_name`` on CIFAR-10.

    45,000 training images and 5,000 held out; the model is the factory's defaults (the
    paper's) and the optimisation :func:`residual_flows_schedule` for 300,000 steps;
    ``arg == "small"``: :func:`residual_small`.
    """
    c = held_out_splits(default_config(), "cifar10", "45000")
    c.model.name = model_name               # the factory's defaults are the paper's model
    residual_flows_schedule(c, num_train_steps=300_000)
    if arg == "small":
        residual_small(c, model_name)
    return c


def with_attention(c: ml_collections.ConfigDict, attention: str,
                   heads: int) -> ml_collections.ConfigDict:
    """Turns a residual-flow config (``model.name`` resflow/iresnet/idensenet) into ACF.

    The model becomes ``acf`` with ``base`` the former model and the same arguments, plus
    the attention kind (``"l2"``, ``"lipnorm"`` or ``"none"``) and number of heads.
    """
    return set_fields(c, model=dict(name="acf", base=c.model.name, attention=attention,
                                    heads=heads))


def ablation_schedule(c: ml_collections.ConfigDict, *, learning_rate: float,
                      init_batch_size: int, num_samples: int) -> ml_collections.ConfigDict:
    """The 300-step schedule of the attention ablations (ACF and AttnFlow ``small``).

    Adam at ``learning_rate`` with 100 warm-up steps and cosine decay to 5 %, 300 steps
    of batch 64, EMA 0.995; evaluation and a checkpoint every 100 steps.
    """
    return set_fields(
        c, batch_size=64, eval_batch_size=300, init_batch_size=init_batch_size,
        num_train_steps=300,
        optim=dict(name="adam", learning_rate=learning_rate, warmup_steps=100,
                   schedule="cosine", final_lr_fraction=0.05),
        ema_decay=0.995, log_every=50, eval_every=100, checkpoint_every=100,
        keep_checkpoints=2, num_samples=num_samples)


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
    set_fields(c, seed=0, model=dict(
        name="acf", base="resflow", attention="l2", heads=1, levels=2, blocks_per_level=2,
        hidden_channels=32, fc_blocks=0,
        squeeze_first=True,                 # every level: squeeze -> blocks -> factor out
        factor_out=True))
    return ablation_schedule(c, learning_rate=1e-3, init_batch_size=256, num_samples=16)


def mnist_ablation_schedule(c: ml_collections.ConfigDict, *, learning_rate: float,
                            num_train_steps: int) -> ml_collections.ConfigDict:
    """The schedule of the MNIST attention ablations (``experiments/ablations_mnist.py``).

    ``mnist_8k`` splits (6,480 / 720 / 800 digits), batch 32 (AttnFlow's), Adam at
    ``learning_rate`` with 50 warm-up steps and cosine decay to 10 %, EMA 0.99;
    ``num_train_steps`` steps, one evaluation (and checkpoint) at the end: the
    evaluation of a residual flow (20-term series, power iterations refreshed for the
    EMA weights) costs as much as many train steps on a CPU.
    """
    mnist_8k_splits(c)
    return set_fields(
        c, batch_size=32, eval_batch_size=200, init_batch_size=256,
        num_train_steps=num_train_steps,
        optim=dict(name="adam", learning_rate=learning_rate, warmup_steps=50,
                   schedule="cosine", final_lr_fraction=0.1),
        ema_decay=0.99, log_every=50, eval_every=num_train_steps,
        checkpoint_every=num_train_steps, keep_checkpoints=1,
        eval_test_during_training=False, num_samples=16, sample_temperatures=(0.7,))


def acf_small_mnist() -> ml_collections.ConfigDict:
    """ACF on the real MNIST digits at CPU scale (``acf_mnist.py:small_mnist``).

    ``mnist_8k`` at 28x28 (no padding): 2 levels, each a squeeze then 2 Residual Flows
    blocks (LipSwish, coefficient 0.98, roulette) of hidden width 32, factor-out with
    N(0, I) after level 0; **4 L2 heads between the convolutions** (the paper's best MNIST
    setting) with ``gamma`` starting at 1 (half attention, half identity: see
    :func:`jaxflows.models.acf.acf`, ``gamma_init``); Adam 1e-3,
    :func:`mnist_ablation_schedule` with 1,200 steps. Its evaluation is cheaper than the
    library's default (on a CPU it cost as much as training): the 20-term series with 2
    probes per digit (``eval_estimator.n_samples``, default 8), the test split only
    (no validation pass: the one evaluation is at the end) and no sample grids.
    """
    c = acf_small()
    set_fields(c, model=dict(heads=4, gamma_init=1.0, eval_estimator=dict(n_samples=2)))
    mnist_ablation_schedule(c, learning_rate=1e-3, num_train_steps=1200)
    return set_fields(c, dataset=dict(val_split=""), sample_temperatures=())


def attnflow_small_mnist() -> ml_collections.ConfigDict:
    """AttnFlow on the real MNIST digits at CPU scale (``attnflow_mnist.py:small_mnist``).

    The paper's MNIST layout shrunk: ``mnist_8k`` padded to 32x32 (as the paper pads
    MNIST; bits/dim over the 1,024 padded dimensions), **mAR-SCF backbone** with L=2 levels
    of K=2 affine-coupling steps (32 hidden channels; mAR priors of 16 ConvLSTM features
    in 2 layers, kernel/dilation 5/2 and 3/1), logit preprocessing, **iMap at pos-4** (the
    supplement's best position); Adam 8e-4 (the paper's), batch 32,
    :func:`mnist_ablation_schedule` with 1,200 steps.
    """
    c = default_config()
    c.seed = 0
    c.dataset.pad = 2
    c.model = ml_collections.ConfigDict(dict(
        name="attnflow", backbone="mar_scf", coupling="affine", attention="imap",
        position=4, heads=1, levels=2, steps_per_level=2, hidden_channels=32,
        lstm_features=16, lstm_layers=2, kernel_sizes=(5, 3), dilations=(2, 1),
        preprocessing="logit"))
    return mnist_ablation_schedule(c, learning_rate=8e-4, num_train_steps=1200)


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


def attnflow_paper_model(steps_per_level: int,
                         hidden_channels: int) -> ml_collections.ConfigDict:
    """AttnFlow's model section on mAR-SCF (Sukthanker et al., CVPR 2022, supplement Sec. 4).

    mAR-SCF backbone with MixLogCDF couplings, L=3 levels of ``steps_per_level`` steps,
    ``hidden_channels`` conditioner filters, dropout 0.2, iMap attention at pos-4
    (``attnflow_mnist.py``: K=2, 96 filters; ``attnflow_cifar10.py``: K=4, 256 filters).
    """
    return ml_collections.ConfigDict(dict(
        name="attnflow", backbone="mar_scf", coupling="mixlogcdf", attention="imap",
        position=4, levels=3, steps_per_level=steps_per_level,
        hidden_channels=hidden_channels, dropout=0.2))


def attnflow_paper_schedule(c: ml_collections.ConfigDict, *, num_train_steps: int,
                            warmup_steps: int) -> ml_collections.ConfigDict:
    """AttnFlow's optimisation (supplement Sec. 4): Adam at 8e-4, batch 32.

    ``num_train_steps`` (MNIST 100k, CIFAR-10 90k); the linear warm-up over
    ``warmup_steps`` and EMA 0.999 for evaluation are this project's additions;
    evaluation and a checkpoint every 5,000 steps.
    """
    return set_fields(
        c, batch_size=32, eval_batch_size=500, init_batch_size=512,
        num_train_steps=num_train_steps,
        optim=dict(name="adam", learning_rate=8e-4, warmup_steps=warmup_steps),
        ema_decay=0.999, log_every=100, eval_every=5000, checkpoint_every=5000)


def attnflow_variant(c: ml_collections.ConfigDict, arg: str,
                     steps_per_level: int) -> ml_collections.ConfigDict:
    """Applies the variant ``arg`` shared by ``attnflow_mnist.py`` and ``attnflow_cifar10.py``.

    ``""``/``"imap"``: ``c`` unchanged (:func:`attnflow_paper_model`). ``"itrans"``: iTrans
    with 5 summed heads over tokens of half the level's side. ``"glow"``: the same layout
    (iMap at pos-4, L=3, ``steps_per_level``) on a Glow backbone with the factory's
    defaults. ``"small"``: :func:`attnflow_digits_small`.
    """
    if arg == "itrans":
        set_fields(c, model=dict(attention="itrans", heads=5, patch_size="half"))
    elif arg == "glow":
        c.model = ml_collections.ConfigDict(dict(
            name="attnflow", backbone="glow", attention="imap", position=4, levels=3,
            steps_per_level=steps_per_level))
    elif arg == "small":
        attnflow_digits_small(c)
    return c


def cifar10_small_schedule(c: ml_collections.ConfigDict, *, batch_size: int = 32,
                           init_batch_size: int = 128, num_train_steps: int = 200,
                           warmup_steps: int = 50) -> ml_collections.ConfigDict:
    """The CPU smoke schedule of the CIFAR-10 ``small`` variants (Glow, Real NVP, Flow++).

    ``num_train_steps`` steps (default 200) of batch ``batch_size`` (32) with
    ``warmup_steps`` (50) warm-up steps, the full config's optimiser otherwise, EMA 0.99;
    evaluation (batch 250) and a checkpoint every 100 steps, 16 samples per grid.
    """
    return set_fields(
        c, batch_size=batch_size, eval_batch_size=250, init_batch_size=init_batch_size,
        num_train_steps=num_train_steps, optim=dict(warmup_steps=warmup_steps),
        ema_decay=0.99, log_every=20, eval_every=100, checkpoint_every=100, num_samples=16)


def mar_scf_reference_schedule(c: ml_collections.ConfigDict, *, batch_size: int,
                               num_train_steps: int) -> ml_collections.ConfigDict:
    """The optimisation of the mAR-SCF reference code (``visinf/mar-scf``).

    Adamax at 8e-4, batch ``batch_size``, EMA 0.999 for evaluation. The reference's
    warm-up ``min(1, s / 10000)`` counts **samples**, so it is stated here in steps:
    ``10000 // batch_size`` (78 at batch 128, 156 at batch 64; see mar_scf_mnist.py).
    """
    return set_fields(
        c, batch_size=batch_size, eval_batch_size=500, init_batch_size=512,
        num_train_steps=num_train_steps,
        optim=dict(name="adamax", learning_rate=8e-4, warmup_steps=10_000 // batch_size),
        ema_decay=0.999, log_every=100, eval_every=5000, checkpoint_every=5000)


def mar_scf_mixlogcdf(c: ml_collections.ConfigDict,
                      hidden_channels: int) -> ml_collections.ConfigDict:
    """mAR-SCF's best model: MixLogCDF couplings, ``hidden_channels`` filters, dropout 0.2.

    With the factory's MixLogCDF defaults: K = 4 steps per level, 32 components, a Flow++
    conditioner of 10 blocks with 4 heads (``mar_scf_mnist.py:mixlogcdf``: 96 filters,
    ``mar_scf_cifar10.py:mixlogcdf``: 256).
    """
    return set_fields(c, model=dict(coupling="mixlogcdf", hidden_channels=hidden_channels,
                                    dropout=0.2))

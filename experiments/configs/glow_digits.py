r"""Glow on ``digits`` (8x8, 17 levels): the embedded default, the project's main job.

    python experiments/train.py --config=experiments/configs/glow_digits.py \
        --workdir=runs/glow_digits
    python experiments/train.py --config=experiments/configs/glow_digits.py:small ...

Data: scikit-learn's bundled digits, no network. The first 1,500 images are the
``train`` split (90% for training, the last 10% held out for validation and
best-checkpoint selection), the last 297 the ``test`` split. Reference figures (test
bits/dim): uniform over 17 levels 4.09; independent per-pixel categoricals fit on
train 2.37. 1,500 images overfit within minutes, so the conditioners use dropout and
the checkpoint best on validation is the one evaluated on test (with EMA parameters).

Config schema (shared by every ``experiments/configs/*.py``)
============================================================
Each config module defines ``get_config(arg="")`` returning an
``ml_collections.ConfigDict`` built from ``jaxflows.train.default_config()`` (which
holds every field and its default), and lists the variants it accepts in ``VARIANTS``
(``"small"``: a variant that runs on a laptop CPU in minutes); see
``experiments/configs/common.py`` for the conventions and the shared pieces. Unknown
keys are errors (in files and in command-line overrides such as
``--config.batch_size=32``), checked before any compute by
``jaxflows.train.validate_config``.

``seed``                 int: parameters, data order, dropout, dequantisation noise.
``dataset.name``         a ``jaxflows.data`` name: ``digits``, ``mnist_8k``, ``mnist``,
                         ``fashion_mnist``, ``cifar10``, ``celeb_a``,
                         ``downsampled_imagenet/32x32`` (``/64x64``), ``npz:/path.npz``.
``dataset.data_dir``     TFDS data directory (default ``$TFDS_DATA_DIR`` or ~/tensorflow_datasets).
``dataset.download``     let TFDS download and prepare a missing dataset.
``dataset.train_split``  TFDS split spec trained on, e.g. ``"train[:90%]"``.
``dataset.val_split``    held-out split for best-checkpoint selection; ``""`` for none
                         (then the last checkpoint is "best").
``dataset.test_split``   split whose bits/dim is reported (over all of it).
``dataset.pad``          int >= 0 (default 0): zero pixels added on each side of the height
                         and width of every split's uint8 images (``jaxflows.data.get_source(
                         ..., pad=...)``), e.g. 2 turns MNIST's 28x28 into the 32x32 that
                         three squeezes need. The model is built for, and its fingerprint
                         records, the padded shape (a checkpoint trained with another pad is
                         refused). Bits/dim are per **padded** dimension: the border pixels
                         are zeros plus dequantisation noise, nearly free to model, so
                         bits/dim with ``pad > 0`` is not comparable to bits/dim without it
                         (nor to papers' figures over the unpadded pixels). Samples are
                         saved at the padded size (the border shows what the model learned
                         there).
``model.name``           a key of ``jaxflows.models.MODELS`` (``glow``, ``realnvp``, ...);
``model.<kw>``           every other field is a keyword argument of that factory
                         (``image_shape`` and ``num_bins`` come from the dataset),
                         e.g. for glow: levels, steps_per_level, hidden_channels,
                         coupling ("affine"/"additive"), dropout, preprocessing
                         ("shift"/"logit"), alpha, lu, permutation, remat. Configs set
                         only what differs from the factory's defaults. Residual flows'
                         settings are dicts: ``model.estimator``, ``model.eval_estimator``,
                         ``model.solver``, ``model.spectral_norm`` (fields of
                         ``jaxflows.bijectors.residual_settings``, overriding the
                         factory's defaults), e.g. ``--config.model.spectral_norm.coeff=0.9``.
``batch_size``           global train batch (over all devices and hosts; must divide
                         evenly over ``jax.device_count()``).
``eval_batch_size``      global evaluation batch (last batch padded and masked).
``init_batch_size``      global batch for ActNorm's data-dependent initialisation.
``num_train_steps``      optimiser steps.
``optim.name``           ``adam`` | ``adamax`` | ``adamw``; ``optim.learning_rate``,
                         ``optim.b1``, ``optim.b2``, ``optim.eps``, ``optim.weight_decay``.
``optim.warmup_steps``   linear warm-up from 0.
``optim.schedule``       ``constant`` | ``cosine`` (to ``final_lr_fraction`` x lr).
``optim.grad_clip_norm`` global-norm clipping (<= 0: off).
``optim.max_consecutive_nonfinite``  non-finite steps in a row before the run aborts
                         (each one is skipped: parameters unchanged, counted).
``optim.max_skipped_fraction``  a finished run that skipped more than this fraction of
                         its steps is marked failed in results.json (exit code 1).
``dataset.context``      "" (none), "label" or "lowres:F": per-example context for
                         conditional flows (docs/training.md, "Conditional training").
``early_stopping_patience``  int >= 0 (0: off): stop after this many evaluations without
                         a validation improvement.
``ema_decay``            EMA of parameters (0: off); ``eval_use_ema``: evaluate/sample with it.
``lipschitz_refresh``    residual flows: power-iteration passes after each step (0: off);
                         ``eval_lipschitz_rounds``: passes fitting them to the EMA weights.
``log_every``            steps between train-metric lines in metrics.jsonl.
``eval_every``           steps between val/test evaluations, curves, checkpoint + best.
``checkpoint_every``     steps between regular checkpoints; ``keep_checkpoints``: last N kept.
``eval_test_during_training``  also evaluate the test split at each evaluation (curves).
``sample_temperatures``  temperatures of the final sample grids (samples_T*.png).
``num_samples``          images per grid.
``progress_bar``         tqdm bar with step/s and bits/dim.
"""
import ml_collections

from experiments.configs import common
from jaxflows.train import default_config, set_fields

VARIANTS = ("", "small")


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    common.check_variant("glow_digits", arg, VARIANTS)
    c = common.digits_splits(default_config())
    c.seed = 0
    set_fields(c, model=dict(
        name="glow", levels=2, steps_per_level=4, hidden_channels=64,
        preprocessing="logit",              # margin alpha = 0.05 (the factory's default)
        dropout=0.2))
    set_fields(
        c, batch_size=64, eval_batch_size=300, init_batch_size=512, num_train_steps=4000,
        optim=dict(name="adam", learning_rate=1e-3, warmup_steps=100, schedule="cosine",
                   final_lr_fraction=0.1),
        ema_decay=0.99, log_every=50, eval_every=100, checkpoint_every=500,
        keep_checkpoints=2, sample_temperatures=(0.5, 0.7, 1.0), num_samples=64)

    if arg == "small":
        set_fields(c, {"model.steps_per_level": 2, "model.hidden_channels": 32},
                   num_train_steps=300, eval_every=100, checkpoint_every=100)
    return c

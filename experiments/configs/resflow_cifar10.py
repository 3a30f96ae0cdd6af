r"""Residual Flow (Chen et al. 2019) on CIFAR-10 (32x32x3, 256 levels).

    python experiments/train.py --config=experiments/configs/resflow_cifar10.py --workdir=runs/resflow_cifar10
    python experiments/train.py --config=experiments/configs/resflow_cifar10.py:small --workdir=runs/resflow_small

Architecture and optimisation of the reference ``train_img.py --data cifar10 --actnorm
True`` (paper: 3.28 bits/dim): logit preprocessing with alpha = 0.05, 3 scales of 16
residual blocks (LipSwish, kernels 3-1-3, 512 channels, coefficient 0.98, ActNorm
after each), no factor-out, 4 fully connected end blocks of width 128; Russian
roulette with 2 exact terms + Poisson(2) terms, one Gaussian probe and the Neumann
gradient; Adam(lr 1e-3, betas 0.9/0.99) with 1,000 warm-up steps, gradient clipping
at norm 1, batch 64, EMA 0.999 for evaluation (deterministic 20-term estimator).
The ``small`` variant is the same architecture shrunk to train on ``digits`` on a CPU
in minutes (see ``resflow_digits.py``). Config schema: ``glow_digits.py``.
"""
import importlib.util
import os

import ml_collections

from jaxflows.train import default_config


def _small():
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "resflow_digits.py")
    spec = importlib.util.spec_from_file_location("resflow_digits", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.apply_small


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    c = default_config()
    c.dataset.name = "cifar10"
    c.dataset.train_split = "train[:45000]"
    c.dataset.val_split = "train[45000:]"
    c.dataset.test_split = "test"

    c.model.name = "resflow"
    c.model.levels = 3
    c.model.blocks_per_level = 16
    c.model.hidden_channels = 512
    c.model.kernels = (3, 1, 3)
    c.model.activation = "lipswish"
    c.model.coeff = 0.98
    c.model.factor_out = False
    c.model.fc_blocks = 4
    c.model.fc_hidden = 128
    c.model.alpha = 0.05
    c.model.estimator = "roulette"
    c.model.n_exact_terms = 2
    c.model.distribution = "poisson"
    c.model.lam = 2.0
    c.model.n_samples = 1
    c.model.neumann_grad = True
    c.model.eval_terms = 20
    c.model.eval_samples = 8

    c.batch_size = 64
    c.eval_batch_size = 200
    c.init_batch_size = 256
    c.num_train_steps = 300_000
    c.optim.name = "adam"
    c.optim.learning_rate = 1e-3
    c.optim.b2 = 0.99
    c.optim.warmup_steps = 1000
    c.optim.grad_clip_norm = 1.0
    c.ema_decay = 0.999
    c.log_every = 100
    c.eval_every = 5000
    c.checkpoint_every = 5000

    if arg == "small":
        _small()(c, "resflow")
    elif arg:
        raise ValueError(f"resflow_cifar10: unknown config variant {arg!r}; use '' or 'small'.")
    return c

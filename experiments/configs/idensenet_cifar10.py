r"""i-DenseNet (Perugachi-Diaz et al. 2021) on CIFAR-10 (32x32x3, 256 levels).

    python experiments/train.py --config=experiments/configs/idensenet_cifar10.py --workdir=runs/idensenet_cifar10
    python experiments/train.py --config=experiments/configs/idensenet_cifar10.py:small --workdir=runs/idensenet_small

The reference README command (paper: 3.25 bits/dim): ``train_img.py --data cifar10
--nblocks 16-16-16 --densenet True --learnable_concat True --act CLipSwish
--densenet_depth 3 --densenet_growth 172``, on top of the Residual Flows defaults
(logit alpha 0.05, ActNorm, coefficient 0.98, no factor-out, 4 fully connected end
blocks, roulette 2 exact terms + Poisson(2) with the Neumann gradient, Adam 1e-3 with
betas 0.9/0.99, 1,000 warm-up steps, clipping at 1, batch 64, EMA). (The reference
switches the learnable concatenation on after 25 epochs; here it is learned from the
start.) The ``small`` variant trains on ``digits`` on a CPU in minutes
(``resflow_digits.py``). Config schema: ``glow_digits.py``.
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

    c.model.name = "idensenet"
    c.model.levels = 3
    c.model.blocks_per_level = 16
    c.model.depth = 3
    c.model.growth = 172
    c.model.activation = "clipswish"
    c.model.learnable_concat = True
    c.model.coeff = 0.98
    c.model.factor_out = False
    c.model.fc_blocks = 4
    c.model.fc_growth = 32
    c.model.fc_first_features = 64
    c.model.alpha = 0.05
    c.model.estimator = "roulette"
    c.model.n_exact_terms = 2
    c.model.distribution = "poisson"
    c.model.lam = 2.0
    c.model.neumann_grad = True

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
        _small()(c, "idensenet")
    elif arg:
        raise ValueError(f"idensenet_cifar10: unknown config variant {arg!r}; use '' or 'small'.")
    return c

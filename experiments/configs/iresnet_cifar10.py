r"""i-ResNet (Behrmann et al. 2019) density estimation on CIFAR-10 (32x32x3, 256 levels).

    python experiments/train.py --config=experiments/configs/iresnet_cifar10.py --workdir=runs/iresnet_cifar10
    python experiments/train.py --config=experiments/configs/iresnet_cifar10.py:small --workdir=runs/iresnet_small

The reference ``scripts/dens_est_cifar.sh`` (paper: 3.45 bits/dim): ``--nBlocks 16 16 16
--nStrides 1 2 2 --nChannels 512 512 512 --coeff 0.9 -densityEstimation -multiScale
--lr 0.003 --weight_decay 0. --numSeriesTerms 5 --batch 128 --warmup_epochs 1`` with
``CIFAR_main.py``'s defaults (Adamax, ELU, ActNorm, learned prior, 5 power iterations,
an initial squeeze, preprocessing ``x / 256 - 0.5``, 200 epochs). The log-det is the
truncated 5-term series with one Hutchinson probe (biased); evaluation uses the
deterministic 20-term estimator. The ``small`` variant trains on ``digits`` on a CPU in
minutes (``resflow_digits.py``). Config schema: ``glow_digits.py``.
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

    c.model.name = "iresnet"
    c.model.levels = 3
    c.model.blocks_per_level = 16
    c.model.hidden_channels = 512
    c.model.kernels = (3, 1, 3)
    c.model.activation = "elu"
    c.model.coeff = 0.9
    c.model.n_terms = 5
    c.model.n_samples = 1
    c.model.factor_out = True
    c.model.learn_split_prior = True
    c.model.squeeze_first = True
    c.model.preprocessing = "shift"
    c.model.fc_blocks = 0
    c.model.n_power_iterations = 5

    c.batch_size = 128
    c.eval_batch_size = 200
    c.init_batch_size = 1024
    c.num_train_steps = 200 * 352           # 200 epochs of 45,000 images
    c.optim.name = "adamax"
    c.optim.learning_rate = 3e-3
    c.optim.warmup_steps = 352              # one epoch
    c.ema_decay = 0.999
    c.log_every = 100
    c.eval_every = 3520
    c.checkpoint_every = 3520

    if arg == "small":
        _small()(c, "iresnet")
        c.model.n_power_iterations = 2
    elif arg:
        raise ValueError(f"iresnet_cifar10: unknown config variant {arg!r}; use '' or 'small'.")
    return c

r"""i-ResNet (Behrmann et al. 2019) density estimation on CIFAR-10 (32x32x3, 256 levels).

    python experiments/train.py --config=experiments/configs/iresnet_cifar10.py \
        --workdir=runs/iresnet_cifar10
    python experiments/train.py --config=experiments/configs/iresnet_cifar10.py:small \
        --workdir=runs/iresnet_small

Behrmann, Grathwohl, Chen, Duvenaud, Jacobsen, *Invertible Residual Networks*, ICML 2019
(paper: 3.45 bits/dim), as the reference ``scripts/dens_est_cifar.sh``: ``--nBlocks 16
16 16 --nStrides 1 2 2 --nChannels 512 512 512 --coeff 0.9 -densityEstimation
-multiScale --lr 0.003 --weight_decay 0. --numSeriesTerms 5 --batch 128
--warmup_epochs 1`` with ``CIFAR_main.py``'s defaults (Adamax, ELU, ActNorm, learned
prior on the factored-out halves, 5 power iterations, an initial squeeze, kernels
3-1-3, preprocessing ``x / 256 - 0.5``, no fully connected end blocks, 200 epochs). The
log-det is the truncated 5-term series with one Hutchinson probe (biased); evaluation
uses the deterministic 20-term estimator. The model is exactly
``jaxflows.models.iresnet``'s defaults, so ``config.model`` names it only. The
``small`` variant trains on ``digits`` on a CPU in minutes
(:func:`experiments.configs.common.residual_small`, keeping i-ResNet's coefficient 0.9
and series estimator, with 2 power iterations per step). Config schema:
``glow_digits.py``.
"""
import ml_collections

from experiments.configs import common
from jaxflows.train import default_config, set_fields

VARIANTS = ("", "small")


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    common.check_variant("iresnet_cifar10", arg, VARIANTS)
    c = common.held_out_splits(default_config(), "cifar10", "45000")
    c.model.name = "iresnet"                # the factory's defaults are the paper's model
    set_fields(
        c, batch_size=128, eval_batch_size=200, init_batch_size=1024,
        num_train_steps=200 * 352,          # 200 epochs of 45,000 images
        optim=dict(name="adamax", learning_rate=3e-3,
                   warmup_steps=352),       # one epoch
        ema_decay=0.999, log_every=100, eval_every=3520, checkpoint_every=3520)

    if arg == "small":
        common.residual_small(c, "iresnet")
        c.model.spectral_norm.n_iterations = 2
    return c

r"""Residual Flow (Chen et al. 2019) on MNIST (28x28x1, 256 levels).

    python experiments/train.py --config=experiments/configs/resflow_mnist.py \
        --workdir=runs/resflow_mnist
    python experiments/train.py --config=experiments/configs/resflow_mnist.py:small \
        --workdir=runs/resflow_small

Chen, Behrmann, Duvenaud, Jacobsen, *Residual Flows for Invertible Generative Modeling*,
NeurIPS 2019 (paper: 0.97 bits/dim), with the architecture and optimisation of the
reference ``train_img.py --data mnist --imagesize 28 --actnorm True --wd 0``: logit
preprocessing with alpha = 1e-6, 3 scales (28 -> 14 -> 7) of 16 residual blocks
(LipSwish, kernels 3-1-3, 512 channels, coefficient 0.98, ActNorm after each), no
factor-out, 4 fully connected end blocks of width 128; Russian roulette with 2 exact
terms + Poisson(2) terms, one Gaussian probe and the Neumann gradient; evaluation by
the deterministic 20-term estimator with 8 probes. All but the logit margin are
``jaxflows.models.resflow``'s defaults. Adam(lr 1e-3, betas 0.9/0.99) with 1,000
warm-up steps, gradient clipping at norm 1, batch 64, EMA 0.999 for evaluation. Data:
TFDS ``mnist`` (prepare it once: ``tfds build mnist --file_format=array_record``). The
``small`` variant is the same architecture shrunk to train on ``digits`` on a CPU in
minutes (:func:`experiments.configs.common.residual_small`). Config schema:
``glow_digits.py``.
"""
import ml_collections

from experiments.configs import common
from jaxflows.train import default_config, set_fields

VARIANTS = ("", "small")


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    common.check_variant("resflow_mnist", arg, VARIANTS)
    c = common.held_out_splits(default_config(), "mnist", "55000")
    set_fields(c, model=dict(name="resflow", alpha=1e-6))
    common.residual_flows_schedule(c, num_train_steps=150_000)
    if arg == "small":
        common.residual_small(c, "resflow")
    return c

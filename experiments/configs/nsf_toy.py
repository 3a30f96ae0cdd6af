r"""NSF (rational-quadratic spline coupling) on a 2-D toy density.

    python experiments/train.py --config=experiments/configs/nsf_toy.py --workdir=runs/nsf_toy
    python experiments/train.py --config=experiments/configs/nsf_toy.py:autoregressive ...

Data, variants and training as ``maf_toy.py`` (plus ``"autoregressive"``: RQ-NSF (AR) on
the grid of Gaussians). Model: RQ-NSF (C) (Durkan et al. 2019): 4 coupling layers with
8-bin rational-quadratic splines on ``[-4, 4]`` (linear tails outside), residual MLP
conditioners of 2 blocks of 64 units; a fixed permutation between layers (the paper's
LU linear layer is left out, see ``jaxflows.models.nsf``).
"""
from __future__ import annotations

import ml_collections

from experiments.configs import maf_toy

VARIANTS = maf_toy.VARIANTS + ("autoregressive",)


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    from experiments.configs import common
    common.check_variant("nsf_toy", arg, VARIANTS)
    model = dict(name="nsf", kind="coupling", num_layers=4, hidden_features=64,
                 num_blocks=2, bins=8, bound=4.0)
    if arg == "autoregressive":
        model.update(kind="autoregressive")
        arg = ""
    return maf_toy.toy_config("nsf_toy", arg, model)

r"""NAF (DSF) on a 2-D toy density: the grid of Gaussians of the NAF paper by default.

    python experiments/train.py --config=experiments/configs/naf_toy.py --workdir=runs/naf_toy
    python experiments/train.py --config=experiments/configs/naf_toy.py:small ...
    python experiments/train.py --config=experiments/configs/naf_toy.py:ddsf ...

Data, variants and training as ``maf_toy.py`` (plus ``"ddsf"``: the grid of Gaussians
with DDSF transformers). Model: NAF (Huang et al. 2018) with deep sigmoidal flow (DSF)
transformers of 16 sigmoid units (the reference's ``num_ds_dim``), 5 MADE layers of one
hidden layer of 64 units (the reference's experiments: 100), orders reversed between
layers. ``"ddsf"``: deep dense sigmoidal flows of 2 layers of 16 units.
"""
from __future__ import annotations

import ml_collections

from experiments.configs import maf_toy

VARIANTS = maf_toy.VARIANTS + ("ddsf",)


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    from experiments.configs import common
    common.check_variant("naf_toy", arg, VARIANTS)
    model = dict(name="naf", transformer="dsf", num_layers=5, hidden_features=(64,),
                 sigmoid_units=16)
    if arg == "ddsf":
        model.update(transformer="ddsf", ddsf_layers=2)
        arg = ""
    return maf_toy.toy_config("naf_toy", arg, model)

r"""Flows on tabular data: the offline ``breast_cancer`` default and the MAF paper's sets.

    python experiments/train.py --config=experiments/configs/maf_tabular.py \
        --workdir=runs/maf_breast_cancer
    python experiments/train.py --config=experiments/configs/maf_tabular.py:naf ...
    python experiments/train.py --config=experiments/configs/maf_tabular.py:power \
        --config.dataset.data_dir=/data/maf --workdir=runs/maf_power

Default (``""``): scikit-learn's bundled Wisconsin breast cancer table (no network), 24
features after dropping six with repeated values, 455 / 57 / 57 train / validation /
test rows, standardised with training statistics (``jaxflows.data.tabular``). MAF
(Papamakarios et al. 2017) of 5 MADE layers with two hidden layers of 64 units, MADE
dropout 0.1 (ours: 455 rows overfit within a few hundred steps), Adam 1e-3, batch 64,
evaluation every 50 steps with early stopping after 8 evaluations (400 steps) without a
validation improvement; the best validation checkpoint is evaluated on the test rows and
reported as ``test_log_likelihood`` (nats per row) and ``test_nats_per_dim``.

Variants on the same data: ``"small"`` (400 steps), ``"naf"`` (NAF-DSF, 5 layers, one
hidden layer of 64 units, 16 sigmoid units), ``"nsf"`` (RQ-NSF coupling, 5 layers of
8-bin splines on ``[-5, 5]``, 64 hidden units), ``"realnvp"`` (Real NVP coupling on
vectors, 8 layers of 64 hidden units).

The MAF paper's sets (files of https://zenodo.org/record/1161203 unpacked into
``--config.dataset.data_dir``; preprocessing as the MAF reference code, written down in
``jaxflows/data/tabular.py``): ``"power"``, ``"gas"``, ``"hepmass"``, ``"miniboone"``,
``"bsds300"``. Model as the paper's MAF (5 layers) with batch norm between layers; the
MADE width follows the factory's reading of the paper (two hidden layers of 100 units for
POWER and GAS, 512 otherwise); batch 100 as the paper; Adam 1e-4, evaluation every 1,000
steps and early stopping after 20 evaluations without improvement are ours (the paper
stops after 30 epochs without improvement). Departure: batch norm's evaluation
statistics are the moving averages of training (``BatchNorm``'s ``momentum``), not the
exact training-set statistics the paper recomputes before every validation.
"""
from __future__ import annotations

import ml_collections

from experiments.configs import common
from jaxflows.train import default_config, set_fields

MAF_SETS = ("power", "gas", "hepmass", "miniboone", "bsds300")
VARIANTS = ("", "small", "naf", "nsf", "realnvp") + MAF_SETS


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    common.check_variant("maf_tabular", arg, VARIANTS)
    c = default_config()
    c.seed = 0
    set_fields(c, dataset=dict(name="breast_cancer",
                               train_split="train",         # 455 rows
                               val_split="validation",      # 57 rows
                               test_split="test"))          # 57 rows
    c.model = ml_collections.ConfigDict(dict(name="maf", num_layers=5,
                                             hidden_features=(64, 64), dropout=0.1))
    set_fields(
        c, batch_size=64, eval_batch_size=64, init_batch_size=64, num_train_steps=3000,
        optim=dict(name="adam", learning_rate=1e-3, warmup_steps=50, grad_clip_norm=10.0),
        ema_decay=0.99, log_every=50, eval_every=50, checkpoint_every=50,
        keep_checkpoints=1, early_stopping_patience=8, sample_temperatures=(1.0,),
        num_samples=100)
    if arg == "small":
        c.num_train_steps = 400
    elif arg == "naf":
        c.model = ml_collections.ConfigDict(dict(name="naf", transformer="dsf", num_layers=5,
                                                 hidden_features=(64,), sigmoid_units=16,
                                                 dropout=0.1))
    elif arg == "nsf":
        c.model = ml_collections.ConfigDict(dict(name="nsf", kind="coupling", num_layers=5,
                                                 hidden_features=64, bins=8, bound=5.0,
                                                 dropout=0.1))
    elif arg == "realnvp":
        c.model = ml_collections.ConfigDict(dict(name="realnvp_vector", num_layers=8,
                                                 hidden_features=64, dropout=0.1))
    elif arg in MAF_SETS:
        c.dataset.name = arg
        width = 100 if arg in ("power", "gas") else 512
        c.model = ml_collections.ConfigDict(dict(name="maf", num_layers=5,
                                                 hidden_features=(width, width),
                                                 batch_norm=True))
        set_fields(
            c, batch_size=100, eval_batch_size=10000, init_batch_size=1000,
            num_train_steps=200000, optim=dict(learning_rate=1e-4, warmup_steps=0),
            log_every=200, eval_every=1000, checkpoint_every=1000, early_stopping_patience=20)
    return c

r"""Attentive Contractive Flow on MNIST (Mukherjee et al., arXiv:2109.12135); small variant on digits.

    python experiments/train.py --config=experiments/configs/acf_mnist.py --workdir=runs/acf_mnist
    python experiments/train.py --config=experiments/configs/acf_mnist.py:small \
        --workdir=runs/acf_mnist_small

ACF adds Lipschitz-constrained self-attention (here L2 multi-head attention, Kim et al.
2021; ``model.attention="lipnorm"`` for the LipschitzNorm dot-product variant) to the
residual branches of a Residual Flow (``model.base``: ``resflow``, ``iresnet`` or
``idensenet``), keeping every branch a contraction (see jaxflows/models/acf.py).
Full config: TFDS ``mnist`` (28x28 = 7 x 2^2: 2 levels), Residual Flow blocks
(LipSwish, coefficient 0.98, Russian-roulette log-det), Adam 1e-3. See glow_digits.py
for the config schema.

``small``: the offline ``digits`` dataset (8x8, 17 levels), 2 levels x 2 blocks of
hidden width 32, 300 steps -- the protocol of the other ``small`` digits variants.
"""
import ml_collections

from jaxflows.train import default_config


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    c = default_config()
    c.seed = 0
    c.dataset.name = "mnist"
    c.dataset.train_split = "train[:55000]"
    c.dataset.val_split = "train[55000:]"
    c.dataset.test_split = "test"

    c.model.name = "acf"
    c.model.base = "resflow"
    c.model.attention = "l2"
    c.model.heads = 1
    c.model.levels = 2
    c.model.blocks_per_level = 16
    c.model.hidden_channels = 512
    c.model.preprocessing = "logit"
    c.model.alpha = 1e-6

    c.batch_size = 64
    c.eval_batch_size = 500
    c.init_batch_size = 512
    c.num_train_steps = 100_000
    c.optim.name = "adam"
    c.optim.learning_rate = 1e-3
    c.optim.warmup_steps = 1000
    c.ema_decay = 0.999
    c.log_every = 100
    c.eval_every = 5000
    c.checkpoint_every = 5000

    if arg == "small":
        digits_small(c)
    elif arg:
        raise ValueError(f"acf_mnist: unknown config variant {arg!r}; use '' or 'small'.")
    return c


def digits_small(c: ml_collections.ConfigDict) -> None:
    """The CPU-minutes digits variant (shared by acf_cifar10.py:small)."""
    c.dataset.name = "digits"
    c.dataset.train_split = "train[:90%]"   # 1,350 images
    c.dataset.val_split = "train[90%:]"     # 150 images, best-checkpoint selection
    c.dataset.test_split = "test"           # 297 images
    c.model.base = "resflow"
    c.model.attention = "l2"
    c.model.heads = 1
    c.model.levels = 2
    c.model.blocks_per_level = 2
    c.model.hidden_channels = 32
    c.model.preprocessing = "logit"
    c.model.alpha = 0.05
    c.batch_size = 64
    c.eval_batch_size = 300
    c.init_batch_size = 256
    c.num_train_steps = 300
    c.optim.name = "adam"
    c.optim.learning_rate = 1e-3
    c.optim.warmup_steps = 100
    c.optim.schedule = "cosine"
    c.optim.final_lr_fraction = 0.05
    c.ema_decay = 0.995
    c.log_every = 50
    c.eval_every = 100
    c.checkpoint_every = 100
    c.keep_checkpoints = 2
    c.num_samples = 16

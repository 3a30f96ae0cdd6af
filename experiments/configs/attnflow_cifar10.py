r"""AttnFlow on CIFAR-10 (Sukthanker et al., CVPR 2022, Sec. 4.1); small variant on digits.

    python experiments/train.py --config=experiments/configs/attnflow_cifar10.py \
        --workdir=runs/attnflow_cifar10
    python experiments/train.py --config=experiments/configs/attnflow_cifar10.py:small \
        --workdir=runs/attnflow_cifar10_small

Sukthanker, Huang, Kumar, Timofte, Van Gool, *Generative Flows with Invertible
Attentions*, CVPR 2022. The paper's CIFAR-10 model: Glow backbone with L=3 levels, K=4
steps per level (as in the paper's comparison with Glow at equal depth), invertible
attention in every step, Adam at learning rate 8e-4. Here with iTrans (2 summed heads,
2x2 patch tokens) at pos-1; the 32x32 images give 16x16, 8x8, 4x4 levels, all even.
Hidden width 512, affine coupling and shift preprocessing are
``jaxflows.models.attnflow``'s defaults. Full config: TFDS
``cifar10`` (prepare it once with ``tfds build cifar10 --file_format=array_record``).
See glow_digits.py for the config schema. ``small`` is the digits variant of
attnflow_mnist.py (:func:`experiments.configs.common.attnflow_digits_small`).
"""
import ml_collections

from experiments.configs import common
from jaxflows.train import default_config

VARIANTS = ("", "small")


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    common.check_variant("attnflow_cifar10", arg, VARIANTS)
    c = default_config()
    c.seed = 0
    c.dataset.name = "cifar10"
    c.dataset.train_split = "train[:45000]"
    c.dataset.val_split = "train[45000:]"
    c.dataset.test_split = "test"

    c.model.name = "attnflow"
    c.model.attention = "itrans"
    c.model.heads = 2
    c.model.steps_per_level = 4

    c.batch_size = 64
    c.eval_batch_size = 500
    c.init_batch_size = 512
    c.num_train_steps = 200_000
    c.optim.name = "adam"
    c.optim.learning_rate = 8e-4
    c.optim.warmup_steps = 2000
    c.ema_decay = 0.999
    c.log_every = 100
    c.eval_every = 5000
    c.checkpoint_every = 5000

    if arg == "small":
        common.attnflow_digits_small(c)
    return c

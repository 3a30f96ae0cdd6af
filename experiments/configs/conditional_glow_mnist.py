r"""Class-conditional Glow on MNIST; small variants on ``mnist_8k`` and ``digits`` (offline).

    python experiments/train.py --config=experiments/configs/conditional_glow_mnist.py \
        --workdir=runs/cglow_mnist
    python experiments/train.py --config=experiments/configs/conditional_glow_mnist.py:small ...
    python experiments/train.py --config=experiments/configs/conditional_glow_mnist.py:digits ...

``p(x | y)``: Glow (Kingma & Dhariwal 2018) whose every step has SRFlow's affine injector
and a conditional coupling, and whose split priors are conditional, all reading a learned
embedding of the class label ``y`` (``jaxflows.models.class_conditional_glow``;
``config.dataset.context = "label"`` gives the flow the batch's labels). Bits/dim are
**conditional** bits/dim, ``-log2 p(x | y) / D``, of the same 8-bit (or 17-level) pixels
as the unconditional configs; ``log p(x) <= log p(x | y) + log p(y)`` bounds the gap by
``log2(10) / D`` bits/dim (0.004 at 28x28, 0.05 at 8x8).

Variants (each the twin of an unconditional config, with the same architecture, data,
optimiser and steps, so their test bits/dim compare directly):

* ``""``: TFDS ``mnist`` (prepare it once: ``tfds build mnist --file_format=array_record``),
  the twin of ``glow_mnist.py``: L = 2, K = 32, 512 hidden channels, Adamax 1e-3.
* ``small``: ``mnist_8k`` (8,000 real digits shipped in ``jaxflows.data``), the twin of
  ``glow_mnist.py:small``.
* ``digits``: scikit-learn's 8x8 digits (17 levels), the twin of ``glow_digits.py:small``
  (L = 2, K = 2, 32 hidden channels, logit preprocessing, dropout 0.2, 300 steps).

The class embedding has 32 dimensions (its own choice: Glow's class-conditional model
used a one-hot class in the top prior only, Kingma & Dhariwal 2018, Sec. 5).
"""
import ml_collections

from experiments.configs import glow_digits, glow_mnist

VARIANTS = ("", "small", "digits")


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    from experiments.configs import common
    common.check_variant("conditional_glow_mnist", arg, VARIANTS)
    c = glow_digits.get_config("small") if arg == "digits" else glow_mnist.get_config(arg)
    c.dataset.context = "label"
    c.model.name = "class_conditional_glow"
    c.model.num_classes = 10
    c.model.embedding_features = 32
    return c

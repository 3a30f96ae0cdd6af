r"""cAttnFlow segmentation to image on Cityscapes 256x256: ``p(image | label map)``.

    python experiments/train.py --config=experiments/configs/cattnflow_cityscapes.py \
        --workdir=runs/cattnflow_cityscapes
    python experiments/train.py --config=experiments/configs/cattnflow_cityscapes.py:itrans ...
    python experiments/train.py --config=experiments/configs/cattnflow_cityscapes.py:noattn ...
    python experiments/conditional_demo.py --workdir=runs/cattnflow_cityscapes --out=city.png

    # offline, on this CPU: the same "segmentation" path on mnist_8k_seg
    python experiments/train.py --config=experiments/configs/cattnflow_cityscapes.py:small \
        --workdir=runs/city_small
    python experiments/train.py --config=experiments/configs/cattnflow_cityscapes.py:small_twin \
        --workdir=runs/city_small_twin
    python experiments/conditional_demo.py --workdir=runs/city_small --out=city_small.png

The AttnFlow source's second conditional task (Sukthanker et al., CVPR 2022, supplement
Sec. 3-4): street scenes generated from their semantic segmentation maps with
``jaxflows.models.cattnflow`` given ``num_classes``: the map (int32 ``[B, 256, 256]``
label ids) is one-hot encoded by the flow's segmentation encoder (convolutions at the
map's resolution, resized to every level) into the per-level context of SRFlow's affine
injectors, conditional couplings and conditional split priors, with an iMap attention
after every coupling (pos-4, the source's best position). ``config.dataset.context =
"segmentation"`` hands the flow each record's own label map (the trainer checks that the
dataset has maps of the images' size and that ``config.model.num_classes`` covers its
classes).

Settings of the source (supplement Sec. 4): cAttnFlow-iMap with **L = 2, K = 8**,
**batch 1** ("due to the memory limit" of a 24 GB TITAN RTX), **200k iterations**,
**Adam 8e-4**; images 256x256; 2,975 train and 500 validation images ("the data splits
provided by the original dataset"). Here: ``train`` (2,975) trains, TFDS ``validation``
(500) is the test split (``config.dataset.test_split``), and there is no validation split
(``val_split = ""``: the last evaluation is the best; selecting checkpoints on the
reported 500 would bias them). Batch 1 needs one device (on 8 devices pass
``--config.batch_size=8``); ActNorm's data-dependent init sees 8 images.

Data: ``jaxflows.data``'s ``cityscapes_256`` (TFDS ``cityscapes/semantic_segmentation``).
Cityscapes needs a registration, so TFDS cannot download it:

1. register at https://www.cityscapes-dataset.com and download
   ``leftImg8bit_trainvaltest.zip`` (11 GB) and ``gtFine_trainvaltest.zip`` (241 MB)
   into ``$TFDS_DATA_DIR/downloads/manual/`` (``~/tensorflow_datasets/downloads/manual/``);
2. ``tfds build cityscapes/semantic_segmentation --file_format=array_record
   --data_dir=$TFDS_DATA_DIR --manual_dir=$TFDS_DATA_DIR/downloads/manual`` (needs
   TensorFlow), or train once with ``--config.dataset.download=True``, which prepares it
   from those files.

Without them the run stops at once with these instructions
(``jaxflows.data.DatasetNotPreparedError``). Each record decodes two 1024x2048 PNGs and
resizes them on the host (the trainer's loader prefetches with 2 threads); if that bounds
a fast accelerator, write the 256x256 images and maps once to an ``.npz`` (``image``
``[N, 256, 256, 3]``, ``label`` ``[N, 256, 256]``) and train on ``npz:/path/file.npz``,
which serves the same label maps.

Inconsistencies of the source, and how they are resolved here:

* "**30 different classes**": the Cityscapes website's 30 classes are the label ids
  4..33, but the ``gtFine_labelIds`` images also hold ids 0..3 (unlabeled, ego vehicle,
  rectification border, out of roi), which cover the car's bonnet and the image border
  of most scenes; the 19 "train ids" of segmentation benchmarks are a third count. The
  maps are served as their 34 label ids 0..33 (``num_classes = 34``): no id is dropped
  or merged, and the encoder's one-hot input has 34 channels.
* "Each instance is a **256x256** picture": Cityscapes images are 1024x2048 (2:1). The
  source states no crop or filter; like pix2pix's Cityscapes (Isola et al. 2017) the
  whole scene is squashed to 256x256, the photo with a box filter (area average), the
  label map with nearest neighbour (every pixel keeps one of the original ids).
* The source does not state the coupling width or the segmentation encoder: SRFlow's
  width 64 (``hidden_channels``) and the factory's encoder (2 convolutions of 32
  channels on the one-hot map) are used.
* The test set's labels are withheld by Cityscapes; the source's 500 evaluation images
  are the validation split, as said above.
* SRFlow dequantises at 1/32; here bits/dim of the 8-bit images. The source reports no
  Cityscapes likelihood, only samples (its Fig. 7).
* The source states Adam 8e-4 and nothing else about the optimiser: the trainer's
  defaults add 100 linear warm-up steps, a constant rate after them and gradient
  clipping at norm 50 (cheap insurance at batch 1; ``--config.optim.warmup_steps=0``
  and ``--config.optim.grad_clip_norm=0`` remove them).

Variants:

* ``""``: cAttnFlow-iMap at the source's settings.
* ``itrans``: cAttnFlow-iTrans (3 heads, the source's best on CelebA; it states none for
  Cityscapes).
* ``noattn``: the same flow without attention (SRFlow's step), the source's baseline.
* ``small``: the offline demonstration on ``mnist_8k_seg`` (the 8,000 packaged MNIST
  digits, each with a semantic label map: ``1 + digit class`` on the stroke, 0 on the
  background, 11 classes) through the same ``"segmentation"`` context: L = 2, K = 4,
  width 32, encoder 16 channels, 6,480 / 720 / 800 digits, batch 32, Adam 8e-4 with a
  cosine decay over 600 steps.
* ``small_twin``: its unconditional twin (``jaxflows.models.attnflow``, same L, K,
  width, attention and training) on the same images.
"""
import ml_collections

from experiments.configs import common
from jaxflows.train import default_config, set_fields

VARIANTS = ("", "itrans", "noattn", "small", "small_twin")

# Cityscapes label ids 0..33 (see the docstring on the source's "30 classes").
CITYSCAPES_CLASSES = 34


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    common.check_variant("cattnflow_cityscapes", arg, VARIANTS)
    c = default_config()
    c.seed = 0
    set_fields(c, dataset=dict(name="cityscapes_256", train_split="train", val_split="",
                               test_split="validation", context="segmentation"))
    set_fields(c, model=dict(name="cattnflow", num_classes=CITYSCAPES_CLASSES,
                             context_shape=(256, 256), levels=2, steps_per_level=8,
                             attention="imap", position=4, heads=3, hidden_channels=64,
                             seg_features=32, seg_layers=2))
    set_fields(
        c, batch_size=1, eval_batch_size=8, init_batch_size=8, num_train_steps=200_000,
        optim=dict(name="adam", learning_rate=8e-4),
        log_every=100, eval_every=10_000, checkpoint_every=5_000,
        sample_temperatures=(0.5, 0.9, 1.0), num_samples=8)

    if arg == "itrans":
        c.model.attention = "itrans"
    elif arg == "noattn":
        c.model.attention = None
    elif arg in ("small", "small_twin"):
        common.mnist_8k_splits(c)
        c.dataset.name = "mnist_8k_seg"
        arch = dict(levels=2, steps_per_level=4, hidden_channels=32, attention="imap",
                    position=4)
        c.model = ml_collections.ConfigDict()
        if arg == "small_twin":
            c.dataset.context = ""
            set_fields(c, model=dict(name="attnflow", **arch))
        else:
            set_fields(c, model=dict(name="cattnflow", num_classes=11, context_shape=(28, 28),
                                     seg_features=16, seg_layers=2, **arch))
        set_fields(
            c, batch_size=32, eval_batch_size=200, init_batch_size=256, num_train_steps=600,
            optim=dict(learning_rate=8e-4, warmup_steps=50, schedule="cosine"),
            log_every=50, eval_every=200, checkpoint_every=200,
            sample_temperatures=(0.5, 1.0), num_samples=32)
    return c

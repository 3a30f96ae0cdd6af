r"""Figures and metrics of a trained conditional flow: class grids, super-resolution and
segmentation to image.

    python experiments/conditional_demo.py --workdir=runs/cglow_digits --out=docs/images/x.png
    python experiments/conditional_demo.py --workdir=runs/sr_digits --out=docs/images/sr.png

The run's ``config.dataset.context`` selects the figure:

* ``"label"`` (class-conditional flow): a grid with **one row per class** (``--per_class``
  samples each, temperature ``--temperature``).
* ``"lowres:F"`` (super-resolution): on the first ``--num_images`` test images, the LR
  input, the bicubic upsampling, samples at temperatures 0, 0.5, 0.9, 1.0 (``T = 0`` is
  the latent's mode, ``z = 0``) and the HR image, side by side (one row per image), and
  the metrics (printed as JSON and written next to the PNG):

  - **PSNR** on all channels of pixel values ``[0, num_bins - 1]``
    (``10 log10((num_bins - 1)^2 / MSE)``), of the samples and of bicubic against HR;
  - **SSIM** (Wang et al. 2004: Gaussian window sigma 1.5, size ``min(7, H)``,
    ``K1 = 0.01, K2 = 0.03``), per channel, averaged;
  - **LR-PSNR**: the sample box-averaged by ``F`` (the trainer's own downsampling)
    against the LR input; a correct conditional flow reproduces its input (SRFlow
    reports ~50 dB);
  - **diversity**: the mean over pixels of the standard deviation of ``--num_draws``
    samples of the same LR image (pixel levels).

  Conditional bits/dim are the run's own test figure (``metrics.jsonl``).
* ``"mask:T"`` (segmentation to image): on the first ``--num_images`` test images, the
  two-class mask, samples given the mask at temperatures 0, 0.5, 0.9, 1.0 and the real
  image, side by side; metrics: the **mask agreement** of the samples (thresholded at
  ``T``, the fraction of pixels in the map's class), PSNR against the real image and the
  diversity of ``--num_draws`` samples per map.
* ``"segmentation"`` (segmentation to image from the dataset's own label maps, e.g.
  ``cityscapes_256`` or the offline ``mnist_8k_seg``): the same figure with the map drawn
  in a fixed colour palette (Cityscapes' official colours of its label ids 0..33 for
  ``cityscapes_256``; class 0 black and matplotlib's ``tab20`` colours for the classes
  1, 2, ... of other datasets), images shown in RGB. Metrics: PSNR against the real
  image, diversity, and a **foreground agreement** only where the map is a known
  function of the image: ``mnist_8k_seg`` (class 0 exactly where the pixel is below
  128), the fraction of pixels whose sample, thresholded at 128, is foreground where the
  map's class is not 0 and background where it is. For Cityscapes no such rule exists
  (agreement needs a trained segmentation network, pix2pix's FCN-score, which is not
  here), so it is not reported.

Uses the run's best checkpoint (EMA parameters when the run kept them).
"""
from __future__ import annotations

import json
import os
import sys
from typing import Optional, Sequence

from absl import flags

from experiments import cli
from jaxflows.perf import configure_cpu

configure_cpu()

FLAGS = flags.FlagValues()
flags.DEFINE_string("workdir", None, "Work directory of a conditional training run.",
                    flag_values=FLAGS)
flags.DEFINE_string("out", None, "Output PNG (default: WORKDIR/conditional.png).",
                    flag_values=FLAGS)
flags.DEFINE_float("temperature", 0.7, "Temperature of the class grid.", flag_values=FLAGS)
flags.DEFINE_integer("per_class", 10, "Samples per class (one row per class).",
                     flag_values=FLAGS)
flags.DEFINE_integer("num_images", 8, "Test images of the super-resolution figure.",
                     flag_values=FLAGS)
flags.DEFINE_integer("num_eval", 297, "Test images the SR metrics average over.",
                     flag_values=FLAGS)
flags.DEFINE_integer("num_draws", 8, "Samples per LR image for the diversity.",
                     flag_values=FLAGS)
flags.DEFINE_integer("seed", 0, "Sampling seed.", flag_values=FLAGS)
flags.DEFINE_bool("debug", False, "Show the traceback of an error.", flag_values=FLAGS)

SR_TEMPERATURES = (0.0, 0.5, 0.9, 1.0)


def main(argv: Optional[Sequence[str]] = None) -> int:
    return cli.run(_demo, argv, FLAGS, module=__name__, doc=__doc__, required=("workdir",))


def psnr(a, b, peak: float):
    """Per-image PSNR (dB) of ``a`` against ``b`` (``[N, H, W, C]``, same scale)."""
    import numpy as np
    mse = np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2, axis=(1, 2, 3))
    return 10 * np.log10(peak ** 2 / np.maximum(mse, 1e-12))


def ssim(a, b, peak: float):
    """Per-image SSIM (Gaussian window sigma 1.5, size min(7, H)), channels averaged."""
    import numpy as np
    from scipy.ndimage import convolve
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    size = min(7, a.shape[1], a.shape[2])
    r = np.arange(size) - (size - 1) / 2
    g = np.exp(-r ** 2 / (2 * 1.5 ** 2))
    w = np.outer(g, g) / np.sum(np.outer(g, g))
    c1, c2 = (0.01 * peak) ** 2, (0.03 * peak) ** 2
    out = []
    for x, y in zip(a, b):
        vals = []
        for c in range(x.shape[-1]):
            f = lambda z: convolve(z, w, mode="reflect")  # noqa: E731
            xc, yc = x[..., c], y[..., c]
            mx, my = f(xc), f(yc)
            vx, vy, cxy = f(xc * xc) - mx ** 2, f(yc * yc) - my ** 2, f(xc * yc) - mx * my
            s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2))
            vals.append(s.mean())
        out.append(np.mean(vals))
    return np.asarray(out)


def _uint8(pixels, bins: float):
    """Pixel values ``[0, bins - 1]`` as uint8 ``[0, 255]`` for a PNG (non-finite: black)."""
    import numpy as np
    pixels = np.nan_to_num(np.asarray(pixels, np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    return np.round(pixels * 255.0 / (bins - 1)).astype(np.uint8)


def _to_pixels(x, bins: float):
    """Pixel values ``floor(x)`` clipped to ``[0, bins - 1]``; non-finite values stay NaN.

    (Clipping ``+-inf`` would draw such a sample as white or black pixels and count it as
    finite: :func:`_finite_rows` must see it.)
    """
    import numpy as np
    x = np.asarray(x)
    return np.where(np.isfinite(x), np.clip(np.floor(x), 0, bins - 1), np.nan)


def _finite_rows(samples):
    """Which samples (``[N, ...]``; or ``[D, N, ...]`` draws: all D finite) are finite.

    A short run's flow can send a few latents to inf/NaN through its inverse (the
    affine scales' reciprocals); the metrics are over the finite samples and report how
    many were not.
    """
    import numpy as np
    a = np.asarray(samples)
    if a.ndim == 5:
        return np.isfinite(a).reshape(a.shape[0], a.shape[1], -1).all(axis=(0, 2))
    return np.isfinite(a).reshape(len(a), -1).all(axis=1)


def _diversity(draw, variables, ctx, t: float, key, i: int, to_pixels) -> float:
    """Mean per-pixel std of ``--num_draws`` samples of each of the first 32 contexts
    (pixel levels), over the contexts whose draws are all finite.
    """
    import jax
    import jax.numpy as jnp
    import numpy as np
    draws = np.stack([to_pixels(draw(variables, jnp.asarray(ctx[:32]), t,
                                     jax.random.fold_in(key, 100 * i + d)))
                      for d in range(FLAGS.num_draws)])
    return float(draws[:, _finite_rows(draws)].std(axis=0).mean())


def _save(out: str, grid, bins: float, columns, metrics: dict) -> int:
    """Writes the side-by-side PNG (one column per entry of ``columns``) and the metrics
    JSON next to it, and prints the metrics.
    """
    from jaxflows.train.plots import save_image_grid
    save_image_grid(out, _uint8(grid, bins), ncols=len(columns))
    metrics["png"] = out
    metrics["columns"] = list(columns)
    with open(os.path.splitext(out)[0] + ".json", "w") as f:
        json.dump(metrics, f, indent=1)
    print(json.dumps(metrics, indent=1))
    return 0


def _demo() -> int:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from jaxflows.train import (
        abstract_state,
        evaluation_variables,
        load_run_config,
        prepare_run,
        restore_for_eval,
    )
    from jaxflows.train.plots import save_image_grid
    from jaxflows.train.run import get_split_source
    from jaxflows.train.step import make_context, parse_context

    config = load_run_config(FLAGS.workdir)
    kind, factor = parse_context(config.dataset.get("context", ""))
    if kind == "":
        raise cli.RefusalError(f"--workdir={FLAGS.workdir}: the run is unconditional "
                               f"(config.dataset.context is empty).")
    run = prepare_run(config, FLAGS.workdir)
    state, _, step = restore_for_eval(FLAGS.workdir, abstract_state(run), "best")
    variables = evaluation_variables(run, state, True)
    flow, bins = run.flow, float(run.info.num_bins)
    out = FLAGS.out or os.path.join(FLAGS.workdir, "conditional.png")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    key = jax.random.PRNGKey(FLAGS.seed)

    @jax.jit
    def draw(v, ctx, t, k):
        z = t * jax.random.normal(k, (ctx.shape[0],) + tuple(flow.event_shape))
        return flow.apply(v, z, context=ctx, method=flow.inverse)

    def to_pixels(x):
        return _to_pixels(x, bins)

    if kind == "label":
        classes = run.info.num_classes
        labels = jnp.repeat(jnp.arange(classes), FLAGS.per_class)
        x = to_pixels(draw(variables, labels, FLAGS.temperature, key))
        save_image_grid(out, _uint8(x, bins), ncols=FLAGS.per_class)
        print(json.dumps({"png": out, "rows": "one per class", "classes": classes,
                          "temperature": FLAGS.temperature, "checkpoint_step": int(step)}))
        return 0

    source = get_split_source(run.settings.dataset, run.settings.dataset.test_split)
    n = min(FLAGS.num_eval, len(source))
    hr = np.stack([np.asarray(source[i]["image"]) for i in range(n)]).astype(np.float32)
    if kind == "segmentation":
        maps = np.stack([np.asarray(source[i]["label"], np.int32) for i in range(n)])
        return _segmentation_figure(run, variables, draw, to_pixels, hr, maps, int(step),
                                    out, key)
    if kind == "mask":
        return _mask_figure(run, variables, draw, to_pixels, hr, factor, int(step), out, key)
    down = make_context(config.dataset.context)
    lr = np.asarray(down(jnp.asarray(hr), None))
    bicubic = np.asarray(jax.image.resize(jnp.asarray(lr), hr.shape, "cubic"))
    bicubic = np.clip(np.round(bicubic), 0, bins - 1)
    peak = bins - 1
    metrics = {"checkpoint_step": int(step), "num_images": n, "scale": factor,
               "channels": "all", "peak": peak,
               "bicubic": {"psnr": float(psnr(bicubic, hr, peak).mean()),
                           "ssim": float(ssim(bicubic, hr, peak).mean()),
                           "lr_psnr": float(psnr(down(jnp.asarray(bicubic), None), lr,
                                                 peak).mean())}}
    columns = [lr, bicubic]
    for i, t in enumerate(SR_TEMPERATURES):
        # x continuous in [0, bins): the sample's pixel value is its floor (the dequantised
        # value's integer part); LR-PSNR on the continuous sample minus the 1/2 offset,
        # clipped to the pixel range like an output image (as SRFlow's LR-PSNR: an
        # unclipped far-out sample would dominate the mean).
        xs = np.asarray(draw(variables, jnp.asarray(lr), t, jax.random.fold_in(key, i)))
        px = to_pixels(xs)
        ok = _finite_rows(px)
        metrics[f"T={t:g}"] = {
            "psnr": float(psnr(px[ok], hr[ok], peak).mean()),
            "ssim": float(ssim(px[ok], hr[ok], peak).mean()),
            "lr_psnr": float(psnr(down(jnp.asarray(np.clip(xs[ok] - 0.5, 0, peak)), None),
                                  lr[ok], peak).mean()),
            "diversity": _diversity(draw, variables, lr, t, key, i, to_pixels),
            "nonfinite_samples": int(np.sum(~ok))}
        columns.append(px)
    columns.append(hr)
    k = min(FLAGS.num_images, n)
    up = [np.asarray(jax.image.resize(jnp.asarray(c[:k]), (k,) + hr.shape[1:], "nearest"))
          for c in columns]
    grid = np.stack(up, axis=1).reshape((-1,) + hr.shape[1:])
    return _save(out, grid, bins, ["LR (nearest)", "bicubic"]
                 + [f"T={t:g}" for t in SR_TEMPERATURES] + ["HR"], metrics)


def _mask_figure(run, variables, draw, to_pixels, images, threshold, step, out, key) -> int:
    """The segmentation-to-image figure and metrics (``"mask:T"`` runs).

    Rows: test images; columns: the mask, samples at ``SR_TEMPERATURES`` given the mask,
    the real image. Metrics per temperature: **mask agreement** (the fraction of pixels
    whose sample, thresholded at ``T`` as the trainer does, falls in the conditioning
    map's class: 1 for the real images by construction; ``mask_agreement_other_image``
    is the chance level, each map against another test image's map), PSNR against the real
    image (all channels), and the diversity of ``--num_draws`` samples of the same map;
    all over the finite samples, with ``nonfinite_samples`` counting the others.
    """
    import jax
    import jax.numpy as jnp
    import numpy as np

    from jaxflows.train.step import make_context

    bins = float(run.info.num_bins)
    to_mask = make_context(run.settings.dataset.context)
    masks = np.asarray(to_mask(jnp.asarray(images), None))
    peak = bins - 1
    metrics = {"checkpoint_step": step, "num_images": len(images), "threshold": threshold,
               "channels": "all", "peak": peak,
               "foreground_fraction": float(masks.mean()),
               # chance level: each map against the next test image's map
               "mask_agreement_other_image": float(np.mean(masks == np.roll(masks, 1, 0)))}
    columns = [masks[..., None] * peak]
    for i, t in enumerate(SR_TEMPERATURES):
        px = to_pixels(draw(variables, jnp.asarray(masks), t, jax.random.fold_in(key, i)))
        ok = _finite_rows(px)
        agree = np.asarray(to_mask(jnp.asarray(px[ok]), None)) == masks[ok]
        metrics[f"T={t:g}"] = {"mask_agreement": float(agree.mean()),
                               "psnr": float(psnr(px[ok], images[ok], peak).mean()),
                               "diversity": _diversity(draw, variables, masks, t, key, i,
                                                       to_pixels),
                               "nonfinite_samples": int(np.sum(~ok))}
        columns.append(px)
    columns.append(images)
    k = min(FLAGS.num_images, len(images))
    grid = np.stack([c[:k] for c in columns], axis=1).reshape((-1,) + images.shape[1:])
    return _save(out, grid, bins, ["mask"] + [f"T={t:g}" for t in SR_TEMPERATURES]
                 + ["image"], metrics)


# cityscapesScripts' labels.py: the colour of each label id 0..33 (ids 0..4 black).
CITYSCAPES_COLOURS = (
    (0, 0, 0), (0, 0, 0), (0, 0, 0), (0, 0, 0), (0, 0, 0), (111, 74, 0), (81, 0, 81),
    (128, 64, 128), (244, 35, 232), (250, 170, 160), (230, 150, 140), (70, 70, 70),
    (102, 102, 156), (190, 153, 153), (180, 165, 180), (150, 100, 100), (150, 120, 90),
    (153, 153, 153), (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35),
    (152, 251, 152), (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70),
    (0, 60, 100), (0, 0, 90), (0, 0, 110), (0, 80, 100), (0, 0, 230), (119, 11, 32))

# Datasets whose label map is a known function of the image: (threshold of the channel
# mean) -- class 0 exactly where the pixel lies below it.
FOREGROUND_RULES = {"mnist_8k_seg": 128}


def palette(num_classes: int, dataset: str):
    """uint8 ``[num_classes, 3]`` colours of the classes: Cityscapes' own for
    ``cityscapes*`` datasets, else class 0 black and ``tab20`` colours (cycled) for the
    others. Fixed: the same class has the same colour in every figure.
    """
    import numpy as np
    if dataset.startswith("cityscapes") and num_classes <= len(CITYSCAPES_COLOURS):
        return np.asarray(CITYSCAPES_COLOURS[:num_classes], np.uint8)
    from matplotlib import colormaps
    tab = np.round(np.asarray(colormaps["tab20"].colors) * 255).astype(np.uint8)
    colours = [np.zeros(3, np.uint8)] + [tab[(c - 1) % len(tab)]
                                         for c in range(1, num_classes)]
    return np.stack(colours)


def _segmentation_figure(run, variables, draw, to_pixels, images, maps, step, out,
                         key) -> int:
    """The segmentation-to-image figure and metrics (``"segmentation"`` runs).

    Rows: test records; columns: the label map (in :func:`palette`'s colours), samples
    given the map at ``SR_TEMPERATURES``, the real image; all in RGB. Metrics per
    temperature: PSNR against the real image (all channels), diversity of
    ``--num_draws`` samples per map, ``nonfinite_samples``, and -- for the datasets of
    ``FOREGROUND_RULES`` only -- ``foreground_agreement`` (the fraction of pixels whose
    sample, channel mean thresholded at the rule's level, is foreground exactly where the
    map's class is not 0; 1 for the real images; ``foreground_agreement_other_image``
    is the chance level, each map against the next test record's map).
    """
    import jax
    import jax.numpy as jnp
    import numpy as np

    bins = float(run.info.num_bins)
    peak = bins - 1
    name = run.info.name
    rule = FOREGROUND_RULES.get(name)
    colours = palette(int(run.info.num_classes), name).astype(np.float64) * peak / 255.0
    metrics = {"checkpoint_step": step, "num_images": len(images), "channels": "all",
               "peak": peak, "num_classes": int(run.info.num_classes),
               "classes_present": sorted(int(c) for c in np.unique(maps)),
               "agreement": (f"foreground: sample channel mean >= {rule} where the class is "
                             "not 0" if rule is not None else
                             "not reported: the map is not a known function of the image "
                             "(needs a segmentation network)")}
    foreground = maps != 0
    if rule is not None:
        metrics["foreground_agreement_other_image"] = float(
            np.mean(foreground == np.roll(foreground, 1, 0)))

    def rgb(x):
        return np.repeat(x, 3, axis=-1) if x.shape[-1] == 1 else x

    columns = [colours[np.clip(maps, 0, len(colours) - 1)]]
    for i, t in enumerate(SR_TEMPERATURES):
        px = to_pixels(draw(variables, jnp.asarray(maps), t, jax.random.fold_in(key, i)))
        ok = _finite_rows(px)
        m = {"psnr": float(psnr(px[ok], images[ok], peak).mean()),
             "diversity": _diversity(draw, variables, maps, t, key, i, to_pixels),
             "nonfinite_samples": int(np.sum(~ok))}
        if rule is not None:
            fg = np.mean(px[ok], axis=-1) >= rule
            m["foreground_agreement"] = float(np.mean(fg == foreground[ok]))
        metrics[f"T={t:g}"] = m
        columns.append(rgb(px))
    columns.append(rgb(images))
    k = min(FLAGS.num_images, len(images))
    grid = np.stack([c[:k] for c in columns], axis=1).reshape((-1,) + columns[0].shape[1:])
    return _save(out, grid, bins, ["map"] + [f"T={t:g}" for t in SR_TEMPERATURES]
                 + ["image"], metrics)


if __name__ == "__main__":
    sys.exit(main())

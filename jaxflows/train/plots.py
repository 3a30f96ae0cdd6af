"""PNG outputs: image grids of samples, and bits/dim training curves."""
from __future__ import annotations

import math
import os
from typing import Iterable

import numpy as np

__all__ = ["to_pixels", "image_grid", "save_image_grid", "plot_curves", "plot_density_2d",
           "save_figure"]


def to_pixels(samples: np.ndarray, num_bins: int) -> np.ndarray:
    """Continuous samples in ``[0, L)`` -> uint8 pixels ``floor(x)`` scaled to 0..255."""
    k = np.clip(np.floor(np.nan_to_num(np.asarray(samples, np.float64), nan=0.0)), 0,
                num_bins - 1)
    return np.round(k * (255.0 / max(num_bins - 1, 1))).astype(np.uint8)


def image_grid(images: np.ndarray, ncols: int = 0, pad: int = 1) -> np.ndarray:
    """``[n, H, W, C]`` uint8 -> one ``[rows*(H+pad)+pad, cols*(W+pad)+pad, C]`` grid."""
    images = np.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"image_grid: images must be [n, H, W, C], got {images.shape}.")
    n, h, w, c = images.shape
    ncols = ncols or int(math.ceil(math.sqrt(n)))
    nrows = int(math.ceil(n / ncols))
    grid = np.full((nrows * (h + pad) + pad, ncols * (w + pad) + pad, c), 255, np.uint8)
    for i in range(n):
        r, col = divmod(i, ncols)
        grid[pad + r * (h + pad): pad + r * (h + pad) + h,
             pad + col * (w + pad): pad + col * (w + pad) + w] = images[i]
    return grid


def save_image_grid(path: str, pixels: np.ndarray, upscale: int = 0, ncols: int = 0):
    """Save uint8 ``[n, H, W, C]`` as a PNG grid (small images are upscaled for viewing).

    ``ncols``: columns of the grid (0: about square).
    """
    from PIL import Image
    grid = image_grid(pixels, ncols=ncols)
    if upscale == 0:
        upscale = max(1, 256 // max(grid.shape[:2]))
    if upscale > 1:
        grid = grid.repeat(upscale, 0).repeat(upscale, 1)
    if grid.shape[-1] == 1:
        img = Image.fromarray(grid[..., 0], mode="L")
    else:
        img = Image.fromarray(grid[..., :3], mode="RGB")
    tmp = path + ".tmp.png"
    img.save(tmp)
    os.replace(tmp, path)


def plot_curves(path: str, records: Iterable[dict], title: str = "", score: str = "bpd"):
    """Train / val / test ``<split>_<score>`` against step, from metrics.jsonl records.

    ``score``: ``"bpd"`` (bits/dim) or ``"nats_per_dim"`` (vector data).
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    series = {"train": ([], []), "val": ([], []), "test": ([], [])}
    for r in records:
        for name in series:
            key = f"{name}_{score}"
            if key in r and r[key] is not None and math.isfinite(r[key]):
                series[name][0].append(r["step"])
                series[name][1].append(r[key])
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, (xs, ys) in series.items():
        if xs:
            ax.plot(xs, ys, label=name, marker="." if len(xs) < 50 else None)
    ax.set_xlabel("step")
    ax.set_ylabel("bits/dim" if score == "bpd" else "negative log-likelihood (nats/dim)")
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    save_figure(fig, path)


def plot_density_2d(path: str, density: np.ndarray, data: np.ndarray, *, limit: float,
                    title: str = "", samples: np.ndarray = None):
    """A PNG of a learned 2-D density beside the data (and the model's samples, if given).

    Args:
      path: the PNG to write.
      density: ``[P, P]`` density on the grid ``[-limit, limit]^2`` (rows: second
        coordinate), e.g. from :func:`jaxflows.data.toy2d.grid_density`.
      data: ``[N, 2]`` points of the data, drawn as a 2-D histogram on the same square.
      limit: half-width of the square.
      title: the figure's title.
      samples: optional ``[M, 2]`` samples of the model, drawn as a third panel.
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    panels = 3 if samples is not None else 2
    fig, axes = plt.subplots(1, panels, figsize=(4 * panels, 4.2))
    extent = (-limit, limit, -limit, limit)
    bins = np.linspace(-limit, limit, 201)
    axes[0].hist2d(data[:, 0], data[:, 1], bins=bins, cmap="viridis")
    axes[0].set_title(f"data ({data.shape[0]} points)")
    axes[1].imshow(np.nan_to_num(density), origin="lower", extent=extent, cmap="viridis",
                   aspect="equal")
    axes[1].set_title("learned density")
    if samples is not None:
        finite = np.all(np.isfinite(samples), axis=1)
        axes[2].hist2d(samples[finite, 0], samples[finite, 1], bins=bins, cmap="viridis")
        axes[2].set_title(f"samples ({int(finite.sum())})")
    for ax in axes:
        ax.set_xlim(-limit, limit)
        ax.set_ylim(-limit, limit)
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title)
    save_figure(fig, path)


def save_figure(fig, path: str, dpi: int = 100) -> None:
    """Lays out and writes a matplotlib figure to the PNG ``path``, then closes it.

    Written to a temporary file and renamed, so an interrupted run never leaves a
    truncated PNG at ``path``.
    """
    import matplotlib.pyplot as plt
    fig.tight_layout()
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=dpi)
    plt.close(fig)
    os.replace(tmp, path)

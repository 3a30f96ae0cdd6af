"""The baselines quoted for the ``digits`` data set, computed here rather than typed in.

* uniform over the 17 pixel values: ``log2(17) = 4.09`` bits/dim;
* independent per-pixel categorical distributions fitted on the 1,500 training images
  (add-one smoothing) and evaluated on the 297 test images: 2.37 bits/dim.

A density model of the dequantised data that is worse than these learned nothing.
"""
import math

import numpy as np
import pytest

from jaxflows.data.digits import NUM_BINS, NUM_TRAIN, load_sklearn_digits


def digits_baselines(alpha=1.0):
    """``{"uniform": bits/dim, "per_pixel": bits/dim}`` on the digits test split."""
    images, _ = load_sklearn_digits()
    x = images.reshape(len(images), -1).astype(np.int64)
    train, test = x[:NUM_TRAIN], x[NUM_TRAIN:]
    counts = np.stack([(train == v).sum(0) for v in range(NUM_BINS)], -1) + alpha
    probs = counts / counts.sum(-1, keepdims=True)          # [pixels, values]
    log2p = np.log2(probs[np.arange(test.shape[1])[None, :], test])
    return {"uniform": math.log2(NUM_BINS), "per_pixel": float(-log2p.mean())}


def test_quoted_baselines_are_what_the_data_gives():
    b = digits_baselines()
    assert b["uniform"] == pytest.approx(4.09, abs=5e-3)
    assert b["per_pixel"] == pytest.approx(2.37, abs=5e-3)
    # the categorical baseline does not hinge on the smoothing
    assert digits_baselines(alpha=0.01)["per_pixel"] == pytest.approx(2.37, abs=1e-2)

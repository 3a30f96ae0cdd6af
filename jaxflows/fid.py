r"""Fréchet distances between image sets: an offline MNIST-classifier FID, and Inception-FID.

The Fréchet distance between the Gaussians ``N(mu_1, S_1)`` and ``N(mu_2, S_2)``
fitted to two sets of feature vectors (Heusel et al. 2017, "GANs Trained by a Two
Time-Scale Update Rule Converge to a Local Nash Equilibrium", Eq. 6; Dowson & Landau
1982) is

.. math::

    d^2 = \lVert \mu_1 - \mu_2 \rVert^2
        + \operatorname{tr}\big(S_1 + S_2 - 2 (S_1 S_2)^{1/2}\big).

:func:`frechet_distance` computes the trace of the matrix square root without a
general (non-symmetric) ``sqrtm``: with ``A = S_1^{1/2}`` (symmetric, by an
eigendecomposition with negative round-off eigenvalues clipped to 0),
``S_1 S_2 = A (A S_2 A) A^{-1}`` is similar to the symmetric positive semi-definite
``A S_2 A``, so ``tr (S_1 S_2)^{1/2} = sum_i sqrt(lambda_i(A S_2 A))`` -- real, in
float64, and defined for singular covariances (fewer samples than features), where
``scipy.linalg.sqrtm`` of the product returns complex round-off.

**Offline FID (MNIST features).** :class:`MnistFeatureNet` is a small conv classifier
trained here on the real MNIST digits shipped as the ``mnist_8k`` dataset (its
7,200-digit ``train`` split; :func:`train_feature_net`); the features are its
penultimate layer (128 ReLU units). :func:`mnist_fid` is the Fréchet distance of those
features. **It is NOT Inception-FID**: its values are not comparable with published
FIDs (other network, other features, 28x28 grey digits), only between models scored by
the same cached classifier and the same reference set (e.g. ``mnist_8k``'s ``test``
split), as a relative sample-quality figure.

**Inception-FID.** :func:`inception_fid` scores with the Inception-v3 network of the
published FID, which this project does not ship: pass a user-supplied TorchScript file
of the detector (the ``inception-2015-12-05.pt`` of NVIDIA's StyleGAN2-ADA/StyleGAN3
metrics, called as ``detector(uint8 images [N, 3, H, W], return_features=True)`` ->
``[N, 2048]`` pool features); a missing file is a ``FileNotFoundError``, a file that is
not such a detector a ``ValueError``. Grey images are repeated to 3 channels.
"""
from __future__ import annotations

import os
from typing import Callable, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

__all__ = ["frechet_distance", "feature_statistics", "fid_from_features", "MnistFeatureNet",
           "train_feature_net", "load_or_train_feature_net", "mnist_features", "mnist_fid",
           "classifier_accuracy",
           "inception_fid", "FEATURE_DIM"]

FEATURE_DIM = 128
MNIST_SHAPE = (28, 28, 1)


def _sym_sqrt(s: np.ndarray) -> np.ndarray:
    """The symmetric PSD square root of the symmetric ``s`` (negative eigenvalues -> 0)."""
    w, v = np.linalg.eigh((s + s.T) / 2)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """``||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^{1/2})`` in float64 (module docstring).

    Args:
      mu1: the first mean ``[d]``.
      sigma1: the first covariance ``[d, d]`` (symmetric positive semi-definite).
      mu2: the second mean ``[d]``.
      sigma2: the second covariance ``[d, d]``.

    Raises:
      ValueError: shapes that do not fit, or non-finite values.
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    s1, s2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    d = mu1.shape[0] if mu1.ndim == 1 else -1
    if mu1.ndim != 1 or mu2.shape != mu1.shape or s1.shape != (d, d) or s2.shape != (d, d):
        raise ValueError(f"frechet_distance: expected means [d] and covariances [d, d] of the "
                         f"same d, got mu1 {mu1.shape}, sigma1 {s1.shape}, mu2 {mu2.shape}, "
                         f"sigma2 {s2.shape}.")
    if not all(np.all(np.isfinite(a)) for a in (mu1, mu2, s1, s2)):
        raise ValueError("frechet_distance: means and covariances must be finite.")
    a = _sym_sqrt(s1)
    m = a @ s2 @ a
    eig = np.linalg.eigvalsh((m + m.T) / 2)
    tr_sqrt = float(np.sum(np.sqrt(np.clip(eig, 0.0, None))))
    diff = mu1 - mu2
    value = float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_sqrt)
    return max(value, 0.0)


def feature_statistics(features) -> Tuple[np.ndarray, np.ndarray]:
    """``(mean [d], covariance [d, d])`` of ``features [n, d]`` (float64, unbiased, n >= 2)."""
    f = np.asarray(features, np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"feature_statistics: features must be [n, d] with n >= 2, got "
                         f"{f.shape}.")
    if not np.all(np.isfinite(f)):
        raise ValueError("feature_statistics: features hold NaN or inf.")
    return f.mean(axis=0), np.cov(f, rowvar=False).reshape(f.shape[1], f.shape[1])


def fid_from_features(features_a, features_b) -> float:
    """Fréchet distance of the Gaussians fitted to two feature sets ``[n, d]``, ``[m, d]``."""
    return frechet_distance(*feature_statistics(features_a), *feature_statistics(features_b))


# --------------------------------------------------------------------------------------
# The offline MNIST feature network
# --------------------------------------------------------------------------------------
class MnistFeatureNet(nn.Module):
    """A small MNIST classifier: Conv 3x3 (32) -> ReLU -> 2x2 average pool -> Conv 3x3 (64)
    -> ReLU -> 2x2 average pool -> Dense(128) -> ReLU (the FID features) -> Dense(10).

    ``__call__(images) -> (features [N, 128], logits [N, 10])``; ``images`` are uint8
    (or float) pixels ``[N, 28, 28, 1]`` in ``0..255``, scaled to ``[0, 1]`` here.
    """

    num_classes: int = 10

    @nn.compact
    def __call__(self, images):
        x = jnp.asarray(images, jnp.float32) / 255.0
        x = nn.avg_pool(nn.relu(nn.Conv(32, (3, 3))(x)), (2, 2), (2, 2))
        x = nn.avg_pool(nn.relu(nn.Conv(64, (3, 3))(x)), (2, 2), (2, 2))
        feats = nn.relu(nn.Dense(FEATURE_DIM)(x.reshape(x.shape[0], -1)))
        return feats, nn.Dense(self.num_classes)(feats)


def _check_mnist_images(images, who: str) -> np.ndarray:
    x = np.asarray(images)
    if x.ndim == 3:
        x = x[..., None]
    if x.shape[1:] != MNIST_SHAPE:
        raise ValueError(f"{who}: images must be 28x28 grey digits [N, 28, 28(, 1)] with "
                         f"pixels 0..255, got shape {x.shape}.")
    return x


def train_feature_net(images=None, labels=None, *, steps: int = 1500, batch_size: int = 128,
                      learning_rate: float = 1e-3, seed: int = 0):
    """Train :class:`MnistFeatureNet` (Adam, cross-entropy); returns its ``params``.

    ``images``/``labels`` default to ``mnist_8k``'s ``train`` split (its first 7,200
    digits; the last 800, its ``test`` split, are never trained on).
    """
    if images is None:
        from jaxflows.data import mnist_8k
        all_images, all_labels = mnist_8k.load()
        images, labels = all_images[:mnist_8k.NUM_TRAIN], all_labels[:mnist_8k.NUM_TRAIN]
    images = _check_mnist_images(images, "train_feature_net")
    labels = np.asarray(labels, np.int32)
    if labels.shape != (images.shape[0],):
        raise ValueError(f"train_feature_net: labels must be [N] = [{images.shape[0]}], got "
                         f"{labels.shape}.")
    for name, v in (("steps", steps), ("batch_size", batch_size)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"train_feature_net: {name} must be an int >= 1, got {v!r}.")
    net = MnistFeatureNet()
    params = net.init(jax.random.PRNGKey(seed), images[:1])["params"]
    tx = optax.adam(learning_rate)
    opt = tx.init(params)

    @jax.jit
    def step(params, opt, x, y):
        def loss_fn(p):
            logits = net.apply({"params": p}, x)[1]
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
        grads = jax.grad(loss_fn)(params)
        updates, opt = tx.update(grads, opt, params)
        return optax.apply_updates(params, updates), opt

    rng = np.random.default_rng(seed)
    n = images.shape[0]
    order = rng.permutation(n)
    pos = 0
    bs = min(batch_size, n)
    for _ in range(steps):
        if pos + bs > n:
            order, pos = rng.permutation(n), 0
        idx = order[pos:pos + bs]
        pos += bs
        params, opt = step(params, opt, images[idx], labels[idx])
    return params


@jax.jit
def _apply(params, images):
    return MnistFeatureNet().apply({"params": params}, images)


def _apply_batched(params, images, batch_size: int = 256):
    """Features and logits, in batches of one fixed size (the last one zero-padded), so
    the network compiles once whatever the number of images.
    """
    feats, logits = [], []
    for i in range(0, images.shape[0], batch_size):
        chunk = images[i:i + batch_size]
        n = chunk.shape[0]
        if n < batch_size:
            chunk = np.concatenate([chunk, np.zeros((batch_size - n,) + chunk.shape[1:],
                                                    chunk.dtype)])
        f, lg = _apply(params, chunk)
        feats.append(np.asarray(f)[:n])
        logits.append(np.asarray(lg)[:n])
    return np.concatenate(feats), np.concatenate(logits)


def mnist_features(params, images) -> np.ndarray:
    """Penultimate features ``[N, 128]`` of :class:`MnistFeatureNet` for 28x28 digits."""
    return _apply_batched(params, _check_mnist_images(images, "mnist_features"))[0]


def classifier_accuracy(params, images, labels) -> float:
    """Accuracy of the feature network on ``(images, labels)``."""
    logits = _apply_batched(params, _check_mnist_images(images, "classifier_accuracy"))[1]
    return float(np.mean(np.argmax(logits, -1) == np.asarray(labels)))


def load_or_train_feature_net(path: str, *, steps: int = 1500, seed: int = 0,
                              log: Optional[Callable[[str], None]] = None):
    """``params`` of the feature network cached in ``path`` (``.msgpack``), trained and
    written there first when the file does not exist.

    The cache is the identity of the metric: FIDs are comparable only when computed
    with the same file.
    """
    from flax import serialization
    template = MnistFeatureNet().init(jax.random.PRNGKey(0),
                                      np.zeros((1,) + MNIST_SHAPE, np.uint8))["params"]
    if os.path.exists(path):
        with open(path, "rb") as f:
            try:
                return serialization.from_bytes(template, f.read())
            except Exception as e:   # noqa: BLE001 -- any decoding failure: a bad cache
                raise ValueError(f"load_or_train_feature_net: {path} is not a cached "
                                 f"MnistFeatureNet ({e}); delete it to retrain.") from e
    if log:
        log(f"training the MNIST feature classifier ({steps} steps) -> {path}")
    params = train_feature_net(steps=steps, seed=seed)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(serialization.to_bytes(params))
    os.replace(tmp, path)
    return params


def mnist_fid(params, images_a, images_b) -> float:
    """Offline FID (NOT Inception-FID) of two sets of 28x28 digits (uint8 0..255)."""
    return fid_from_features(mnist_features(params, images_a), mnist_features(params, images_b))


# --------------------------------------------------------------------------------------
# Inception-FID with user-supplied weights
# --------------------------------------------------------------------------------------
def inception_fid(images_a, images_b, weights_path: Optional[str], *,
                  batch_size: int = 100) -> float:
    """Inception-FID of two uint8 image sets ``[N, H, W, C]`` (C = 1 or 3), with the
    TorchScript Inception detector at ``weights_path`` (module docstring).

    Raises:
      FileNotFoundError: ``weights_path`` is None or does not exist (this project does
        not download or ship the Inception weights).
      ValueError: the file is not a TorchScript detector with ``return_features``, or
        images that are not ``[N, H, W, 1 or 3]``.
    """
    if not weights_path or not os.path.isfile(weights_path):
        raise FileNotFoundError(
            f"inception_fid: Inception weights file {weights_path!r} not found. Inception-FID "
            "needs a user-supplied TorchScript Inception-v3 detector (e.g. "
            "inception-2015-12-05.pt of NVIDIA's StyleGAN2-ADA / StyleGAN3 metrics), "
            "downloaded by you; for an offline figure on MNIST use jaxflows.fid.mnist_fid "
            "(not comparable with Inception-FID).")
    sets = []
    for name, images in (("images_a", images_a), ("images_b", images_b)):
        x = np.asarray(images)
        if x.ndim != 4 or x.shape[-1] not in (1, 3) or x.shape[0] < 2:
            raise ValueError(f"inception_fid: {name} must be [N >= 2, H, W, 1 or 3] uint8 "
                             f"pixels, got {x.shape}.")
        sets.append(np.repeat(x, 3, axis=-1) if x.shape[-1] == 1 else x)
    import torch
    try:
        detector = torch.jit.load(weights_path, map_location="cpu").eval()
    except Exception as e:   # noqa: BLE001 -- any loading failure: not a TorchScript file
        raise ValueError(f"inception_fid: {weights_path} is not a TorchScript Inception "
                         f"detector ({type(e).__name__}: {e}).") from e

    def features(x):
        out = []
        with torch.no_grad():
            for i in range(0, x.shape[0], batch_size):
                batch = torch.from_numpy(np.ascontiguousarray(
                    x[i:i + batch_size].astype(np.uint8).transpose(0, 3, 1, 2)))
                try:
                    f = detector(batch, return_features=True)
                except Exception as e:   # noqa: BLE001
                    raise ValueError(f"inception_fid: {weights_path} does not compute "
                                     f"features as detector(images, return_features=True) "
                                     f"({type(e).__name__}: {e}).") from e
                out.append(f.cpu().numpy().astype(np.float64))
        return np.concatenate(out)

    return fid_from_features(features(sets[0]), features(sets[1]))


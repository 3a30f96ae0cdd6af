"""Offline FID (jaxflows.fid): the Fréchet distance against closed forms, the feature
network's cache, and Inception-FID's missing-weights error.
"""
import numpy as np
import pytest
import scipy.linalg

from jaxflows import fid


def _random_cov(rng, d, rank=None):
    a = rng.normal(size=(d, rank or d))
    return a @ a.T / (rank or d) + (0 if rank else 0.1) * np.eye(d)


def test_identical_sets_have_zero_distance():
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(200, 16)) @ rng.normal(size=(16, 16))
    assert fid.fid_from_features(feats, feats) == pytest.approx(0.0, abs=1e-8)
    # singular covariances (fewer samples than features) too
    few = rng.normal(size=(5, 16))
    assert fid.fid_from_features(few, few) == pytest.approx(0.0, abs=1e-8)


def test_closed_forms_for_gaussians():
    rng = np.random.default_rng(1)
    # diagonal covariances: sum (s1 + s2 - 2 sqrt(s1 s2)) + |mu1 - mu2|^2
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    s1, s2 = rng.uniform(0.1, 3, 6), rng.uniform(0.1, 3, 6)
    want = np.sum((mu1 - mu2) ** 2) + np.sum(s1 + s2 - 2 * np.sqrt(s1 * s2))
    assert fid.frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2)) == pytest.approx(
        want, rel=1e-10)
    # general covariances: the definition with scipy's sqrtm of the product
    c1, c2 = _random_cov(rng, 8), _random_cov(rng, 8)
    m1, m2 = rng.normal(size=8), rng.normal(size=8)
    ref = (np.sum((m1 - m2) ** 2) + np.trace(c1) + np.trace(c2)
           - 2 * np.trace(scipy.linalg.sqrtm(c1 @ c2).real))
    assert fid.frechet_distance(m1, c1, m2, c2) == pytest.approx(ref, rel=1e-8)
    # symmetric in its arguments
    assert fid.frechet_distance(m2, c2, m1, c1) == pytest.approx(ref, rel=1e-8)
    # samples of the same Gaussian: close to 0; of a scaled one: close to the closed form
    x = rng.normal(size=(20000, 3))
    y = rng.normal(size=(20000, 3))
    assert fid.fid_from_features(x, y) < 0.01
    assert fid.fid_from_features(x, 2 * y) == pytest.approx(3 * (2 - 1) ** 2, rel=0.05)


def test_sensitive_to_a_mean_shift():
    rng = np.random.default_rng(2)
    feats = rng.normal(size=(500, 10))
    shift = np.zeros(10)
    shift[3] = 0.5
    d = [fid.fid_from_features(feats, feats + k * shift) for k in (0, 1, 2)]
    np.testing.assert_allclose(d, [0.0, 0.25, 1.0], atol=1e-8)   # exactly |shift|^2


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="same d"):
        fid.frechet_distance(np.zeros(3), np.eye(3), np.zeros(2), np.eye(2))
    with pytest.raises(ValueError, match="finite"):
        fid.frechet_distance(np.zeros(2), np.eye(2) * np.nan, np.zeros(2), np.eye(2))
    with pytest.raises(ValueError, match="n >= 2"):
        fid.feature_statistics(np.zeros((1, 4)))
    with pytest.raises(ValueError, match="28x28"):
        fid.mnist_features(None, np.zeros((2, 8, 8, 1), np.uint8))


def test_inception_fid_needs_user_weights(tmp_path):
    images = np.zeros((4, 32, 32, 3), np.uint8)
    with pytest.raises(FileNotFoundError, match="user-supplied"):
        fid.inception_fid(images, images, None)
    with pytest.raises(FileNotFoundError, match="not found"):
        fid.inception_fid(images, images, str(tmp_path / "inception-2015-12-05.pt"))


def test_feature_net_trains_caches_and_separates_digits(tmp_path):
    """A short training already tells digit classes apart; the cache reloads it exactly."""
    from jaxflows.data import mnist_8k
    images, labels = mnist_8k.load()
    params = fid.train_feature_net(images[:600], labels[:600], steps=40, batch_size=32)
    test_x, test_y = images[-400:], labels[-400:]
    assert fid.classifier_accuracy(params, test_x, test_y) > 0.5
    feats = fid.mnist_features(params, test_x)
    assert feats.shape == (400, fid.FEATURE_DIM)
    # real digits against real digits: small; ones against sevens: larger
    ones, sevens = test_x[test_y == 1], test_x[test_y == 7]
    same = fid.mnist_fid(params, test_x[:200], test_x[200:])
    assert fid.mnist_fid(params, ones, sevens) > 2 * same
    # the cache: written once, then read back equal
    from flax import serialization
    path = tmp_path / "net.msgpack"
    path.write_bytes(serialization.to_bytes(params))
    again = fid.load_or_train_feature_net(str(path), steps=1)
    np.testing.assert_allclose(fid.mnist_features(again, test_x[:8]), feats[:8], rtol=1e-6)
    (tmp_path / "bad.msgpack").write_bytes(b"\x00garbage")
    with pytest.raises(ValueError, match="not a cached"):
        fid.load_or_train_feature_net(str(tmp_path / "bad.msgpack"))

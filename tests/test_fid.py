"""train.fid: FID against a NumPy/SciPy reference, its limits, batched statistics, and IS."""

import jax.numpy as jnp
import numpy as np
import pytest
from scipy import linalg

from train.metrics import fid


def _features(n, d, seed=0, scale=None):
  """Correlated Gaussian features: a random mixing of independent ones."""
  rng = np.random.default_rng(seed)
  mixing = rng.normal(size=(d, d)) if scale is None else scale
  return (rng.normal(size=(n, d)) @ mixing + rng.normal(size=d)).astype(np.float32)


def _reference_fid(x, y):
  """FID as pytorch-fid and the TTUR code compute it: scipy.linalg.sqrtm, float64."""
  mu1, mu2 = x.mean(0, dtype=np.float64), y.mean(0, dtype=np.float64)
  s1, s2 = np.cov(x.astype(np.float64), rowvar=False), np.cov(y.astype(np.float64), rowvar=False)
  covmean = linalg.sqrtm(s1 @ s2).real
  return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def test_fid_of_a_set_with_itself_is_zero():
  x = _features(500, 32)
  assert abs(fid.fid(x, x)) < 1e-6 * np.trace(np.cov(x, rowvar=False))


def test_fid_grows_with_a_shift_as_its_squared_length():
  x = _features(500, 16)
  shifts = [0.1, 0.5, 1.0, 2.0]
  scores = [fid.fid(x, x + s) for s in shifts]
  assert scores == sorted(scores) and scores[0] > 0
  # Same covariance: only the means differ, by s in each of the 16 dimensions.
  np.testing.assert_allclose(scores, [16 * s**2 for s in shifts], rtol=1e-5)


@pytest.mark.parametrize('n, d', [(400, 8), (1000, 64), (300, 128)])
def test_fid_matches_the_scipy_reference(n, d):
  x, y = _features(n, d, seed=1), _features(n + 17, d, seed=2)
  expected = _reference_fid(x, y)
  assert expected > 1
  np.testing.assert_allclose(fid.fid(x, y), expected, rtol=1e-6)
  np.testing.assert_allclose(fid.fid(y, x), expected, rtol=1e-6)


def test_fid_of_rank_deficient_covariances_is_finite_and_matches_the_reference():
  # 50 samples in 64 dimensions: singular covariances, where sqrtm needs care.
  x, y = _features(50, 64, seed=3), _features(50, 64, seed=4)
  score = fid.fid(x, y)
  assert np.isfinite(score)
  np.testing.assert_allclose(score, _reference_fid(x, y), rtol=1e-4)


def test_batched_masked_moments_give_the_whole_set_statistics():
  x = _features(103, 12, seed=5)
  moments = fid.Moments()
  for start in range(0, 103, 40):  # batches of 40; the last one padded with junk rows
    batch = np.full((40, 12), 1e3, np.float32)
    part = x[start:start + 40]
    batch[:len(part)] = part
    mask = np.arange(40) < len(part)
    moments.add(fid.batch_moments(jnp.asarray(batch), jnp.asarray(mask)))
  mean, covariance = moments.statistics()
  assert moments.count == 103
  np.testing.assert_allclose(mean, x.mean(0), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(covariance, np.cov(x, rowvar=False), rtol=1e-4, atol=1e-4)


def test_inception_score_of_a_uniform_classifier_is_one():
  mean, std = fid.inception_score(jnp.zeros((100, 10)), num_splits=10)
  np.testing.assert_allclose(mean, 1.0, rtol=1e-6)
  assert std < 1e-6


@pytest.mark.parametrize('num_classes', [2, 10, 1008])
def test_inception_score_of_confident_diverse_predictions_is_the_number_of_classes(num_classes):
  # Every class equally often in each split, each image classified with certainty.
  labels = np.tile(np.arange(num_classes), 4)
  logits = 1e4 * np.eye(num_classes, dtype=np.float32)[labels]
  mean, std = fid.inception_score(logits, num_splits=4)
  np.testing.assert_allclose(mean, num_classes, rtol=1e-4)  # float32
  assert std < 1e-3


def test_inception_score_of_confident_collapsed_predictions_is_one():
  logits = 1e4 * np.eye(10, dtype=np.float32)[np.full(50, 3)]
  np.testing.assert_allclose(fid.inception_score(logits, num_splits=5)[0], 1.0, rtol=1e-6)


def test_inception_score_matches_the_original_formula():
  """Salimans et al.'s code: per split, exp(mean_x sum_y p log p - p log p(y))."""
  logits = np.random.default_rng(6).normal(scale=3, size=(250, 7)).astype(np.float32)
  probs = np.exp(logits - logits.max(1, keepdims=True))
  probs /= probs.sum(1, keepdims=True)
  scores = []
  for part in np.array_split(probs, 5):
    kl = part * (np.log(part) - np.log(part.mean(0, keepdims=True)))
    scores.append(np.exp(kl.sum(1).mean()))
  mean, std = fid.inception_score(logits, num_splits=5)
  np.testing.assert_allclose([mean, std], [np.mean(scores), np.std(scores)], rtol=1e-4)
  assert 1 < mean < 7


def test_inception_score_rejects_more_splits_than_samples():
  with pytest.raises(ValueError, match='num_splits=20'):
    fid.inception_score(np.zeros((10, 3)), num_splits=20)

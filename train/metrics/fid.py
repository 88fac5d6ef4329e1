"""Fréchet Inception Distance and Inception Score in JAX, on the features of any network.

FID (Heusel et al. 2017) fits a Gaussian to each set of features and measures

    ||mu_1 - mu_2||^2 + tr(S_1) + tr(S_2) - 2 tr((S_1 S_2)^(1/2)).

The trace of the matrix square root is computed without a general `sqrtm`: S_1 S_2 is similar
to the symmetric PSD matrix S_1^(1/2) S_2 S_1^(1/2), so it is the sum of the square roots of that
matrix's eigenvalues, and both steps are symmetric eigendecompositions (`eigh`). The distance is
computed in float64, as the NumPy/SciPy reference implementations do.

The Inception Score (Salimans et al. 2016) is exp(E_x KL(p(y|x) || p(y))), computed on each of
`num_splits` consecutive parts of the samples; its mean and standard deviation over the parts are
reported, as in the original code.

Features of large sets are accumulated batch by batch: `batch_moments` runs on the device inside
a compiled function, `Moments` adds its results up on the host in float64.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import xlogy


def batch_moments(features: jax.Array, mask: jax.Array | None = None) -> dict[str, jax.Array]:
  """Count, sum and sum of outer products of the (mask=True) rows of `features` (B, D)."""
  features = features.astype(jnp.float32)
  weights = jnp.ones(features.shape[0]) if mask is None else mask.astype(jnp.float32)
  weighted = features * weights[:, None]
  return {'count': weights.sum(), 'sum': weighted.sum(0), 'outer': weighted.T @ features}


class Moments:
  """Running float64 sums of `batch_moments` results; `statistics()` gives (mean, covariance)."""

  def __init__(self):
    self.count, self._sum, self._outer = 0, 0.0, 0.0

  def add(self, moments: dict[str, np.ndarray]) -> None:
    moments = {k: np.asarray(v, np.float64) for k, v in moments.items()}
    self.count += int(round(float(moments['count'])))
    self._sum = self._sum + moments['sum']
    self._outer = self._outer + moments['outer']

  def statistics(self) -> tuple[np.ndarray, np.ndarray]:
    """The mean and the unbiased (n - 1) covariance, as `np.cov` computes them."""
    if self.count < 2:
      raise ValueError(f'the covariance needs at least 2 feature vectors, got {self.count}')
    mean = self._sum / self.count
    covariance = (self._outer - self.count * np.outer(mean, mean)) / (self.count - 1)
    return mean, covariance


def statistics(features: jax.Array) -> tuple[np.ndarray, np.ndarray]:
  """Mean and covariance of the rows of `features` (N, D)."""
  moments = Moments()
  moments.add(jax.device_get(batch_moments(jnp.asarray(features))))
  return moments.statistics()


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
  """The Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2)."""
  with jax.enable_x64(True):
    mu1, sigma1, mu2, sigma2 = (jnp.asarray(x, jnp.float64) for x in (mu1, sigma1, mu2, sigma2))
    return float(_frechet_distance(mu1, sigma1, mu2, sigma2))


@jax.jit
def _frechet_distance(mu1, sigma1, mu2, sigma2):
  symmetric = lambda m: (m + m.T) / 2  # removes the round-off asymmetry before eigh
  values, vectors = jnp.linalg.eigh(symmetric(sigma1))
  sqrt_sigma1 = (vectors * jnp.sqrt(jnp.clip(values, 0))) @ vectors.T
  product = jnp.linalg.eigvalsh(symmetric(sqrt_sigma1 @ sigma2 @ sqrt_sigma1))
  trace_sqrt_product = jnp.sum(jnp.sqrt(jnp.clip(product, 0)))
  return (jnp.sum(jnp.square(mu1 - mu2)) + jnp.trace(sigma1) + jnp.trace(sigma2)
          - 2 * trace_sqrt_product)


def fid(features1: jax.Array, features2: jax.Array) -> float:
  """FID between two sets of feature vectors, (N1, D) and (N2, D)."""
  return frechet_distance(*statistics(features1), *statistics(features2))


def inception_score(logits: jax.Array, num_splits: int = 10) -> tuple[float, float]:
  """Mean and standard deviation over `num_splits` parts of exp(E_x KL(p(y|x) || p(y))).

  `logits` (N, K) are the classifier's for N samples; the parts are consecutive, part i holding
  samples i * N // num_splits up to (i + 1) * N // num_splits, and p(y) is a part's mean
  prediction.
  """
  if not 1 <= num_splits <= len(logits):
    raise ValueError(f'num_splits={num_splits} must be between 1 and the {len(logits)} samples')
  scores = np.asarray(_split_inception_scores(jnp.asarray(logits, jnp.float32), num_splits))
  return float(scores.mean()), float(scores.std())


@functools.partial(jax.jit, static_argnums=1)
def _split_inception_scores(logits: jax.Array, num_splits: int) -> jax.Array:
  n = logits.shape[0]
  # Sample j is in part i when i * n // num_splits <= j < (i + 1) * n // num_splits.
  part = ((jnp.arange(n) + 1) * num_splits + n - 1) // n - 1
  per_part = lambda x: jax.ops.segment_sum(x, part, num_segments=num_splits)
  probs = jax.nn.softmax(logits)
  sizes = per_part(jnp.ones(n))
  marginals = per_part(probs) / sizes[:, None]
  # xlogy: classes with probability 0 add 0, not 0 * log 0.
  kl = jnp.sum(xlogy(probs, probs) - xlogy(probs, marginals[part]), axis=-1)
  return jnp.exp(per_part(kl) / sizes)

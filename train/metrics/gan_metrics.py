"""What a GAN evaluation measures: sample quality against real data, and failure-mode monitors.

`Scorer` computes, with a feature network (`train.metrics.feature_nets`), the FID of generated
images against the real training images, their Inception Score, how many classes they cover and how
widely their features spread; and the same for the real held-out images, the floor a generator
is compared with. `FailureMonitor` turns those and the training metrics into warnings.
"""

import collections
import dataclasses
import math
from typing import Iterable, Iterator

import jax
import ml_collections
import numpy as np

from train.core import parallel
from train.data import pipeline as input_pipeline
from train.metrics import fid
from train.metrics.feature_nets import FeatureNet, quantize, to_signed


@dataclasses.dataclass(frozen=True)
class FeatureSummary:
  """Feature statistics and predictions of one set of images."""
  mean: np.ndarray
  covariance: np.ndarray
  logits: np.ndarray  # (N, K)

  @property
  def count(self) -> int:
    return len(self.logits)


def classes_covered(logits: np.ndarray, min_share: float) -> int:
  """Classes predicted (argmax) for at least `min_share` of an equal share of the images.

  With K classes and N images a class counts if it gets >= min_share * N / K of them: a
  generator that collapsed onto a few modes covers few classes.
  """
  num_classes = logits.shape[-1]
  counts = np.bincount(np.argmax(logits, -1), minlength=num_classes)
  return int(np.sum(counts >= min_share * len(logits) / num_classes))


class Scorer:
  """Scores images against the real training images of `data_config`, with `feature_net`.

  The real statistics are computed once: the training split is the reference, the eval split
  (held-out real images) gives the floor a generator's scores are compared with.
  """

  def __init__(self, feature_net: FeatureNet, data_config: ml_collections.ConfigDict, *,
               mesh: jax.sharding.Mesh, batch_size: int, num_splits: int, min_class_share: float):
    self.feature_net, self.data_config = feature_net, data_config
    self.mesh, self.batch_size = mesh, batch_size
    self.num_splits, self.min_class_share = num_splits, min_class_share
    self._summarize_batch = jax.jit(self._summarize_batch_fn,
                                    out_shardings=parallel.replicated(mesh))
    self.reference = self.summarize(self._real_batches(data_config.train_split))
    self.held_out = self.summarize(self._real_batches(data_config.eval_split))
    self.floor = self.scores(self.held_out)

  def _summarize_batch_fn(self, variables, images, mask):
    features, logits = self.feature_net.apply(variables, images)
    return fid.batch_moments(features, mask), logits, mask  # all replicated: host-readable

  def _real_batches(self, split: str) -> Iterator[tuple[jax.Array, jax.Array]]:
    """One pass over `split` of the data, as (images in [-1, 1], mask) global batches."""
    config = ml_collections.ConfigDict(self.data_config.to_dict())
    config.eval_split = split
    for batch in input_pipeline.make_eval_iterator(config, global_batch_size=self.batch_size):
      batch = parallel.shard_batch(batch, self.mesh)
      yield to_signed(batch['image']), batch['mask']

  def summarize(self, batches: Iterable[tuple[jax.Array, jax.Array]]) -> FeatureSummary:
    """Feature statistics and logits of the (mask=True) images of `batches` in [-1, 1]."""
    moments, logits = fid.Moments(), []
    for images, mask in batches:
      batch_moments, batch_logits, mask = parallel.to_host(
          self._summarize_batch(self.feature_net.variables, images, mask))
      moments.add(batch_moments)
      logits.append(batch_logits[mask])
    return FeatureSummary(*moments.statistics(), np.concatenate(logits))

  def summarize_generated(self, batches: Iterable[tuple[jax.Array, jax.Array]]
                          ) -> FeatureSummary:
    """As `summarize`, with the images first rounded to 8 bits as image files hold them."""
    return self.summarize((quantize(images), mask) for images, mask in batches)

  def scores(self, summary: FeatureSummary) -> dict[str, float]:
    """FID against the training images, IS, class coverage and feature spread of `summary`."""
    inception_score, inception_score_std = fid.inception_score(
        summary.logits, min(self.num_splits, summary.count))
    ref = self.reference
    return {
        'fid': fid.frechet_distance(summary.mean, summary.covariance, ref.mean, ref.covariance),
        'inception_score': inception_score,
        'inception_score_std': inception_score_std,
        'classes_covered': float(classes_covered(summary.logits, self.min_class_share)),
        # The features' spread relative to the real ones': near 0 when samples collapse.
        'feature_spread': math.sqrt(np.trace(summary.covariance) / np.trace(ref.covariance)),
    }

  def protocol(self, num_generated: int, image_shape: tuple[int, int, int]) -> str:
    """What the scores were computed with, in words, to print beside them."""
    splits = min(self.num_splits, num_generated)
    return (f'{self.feature_net.description}; FID of {num_generated} generated images (8-bit) '
            f'against the {self.reference.count} real {self.data_config.train_split} images; '
            f'floor: the {self.held_out.count} real {self.data_config.eval_split} images against '
            f'the same; IS over {splits} splits; images: '
            f'{self.feature_net.resize_policy(image_shape)}')


class FailureMonitor:
  """Warns of the classic GAN failures, from the training metrics and each evaluation's scores.

  - mode collapse: the samples cover fewer classes than the real held-out images, or their
    features spread less than `min_feature_spread` times the real ones';
  - vanishing gradients: the generator's gradient norm fell below `vanishing_grad_ratio` times
    its largest logged value;
  - instability: over the last `window` logged training means, the discriminator loss (>= 0
    for every loss kind) swings from one log to the next by more than `max_loss_oscillation`
    times its mean, on average (a steady trend moves it little from log to log).
  """

  def __init__(self, config: ml_collections.ConfigDict, floor: dict[str, float]):
    self.config, self.floor = config, floor
    self._d_losses = collections.deque(maxlen=config.window)
    self._last_grad_norm, self._max_grad_norm = math.nan, 0.0

  def observe(self, train_metrics: dict[str, float]) -> None:
    """Records one logged mean of the training metrics."""
    self._d_losses.append(train_metrics['d_loss'])
    self._last_grad_norm = train_metrics['g_grad_norm']
    self._max_grad_norm = max(self._max_grad_norm, self._last_grad_norm)

  def check(self, scores: dict[str, float]) -> tuple[dict[str, float], list[str]]:
    """The monitors' values (for the eval metrics) and the warnings they raise."""
    config, warnings = self.config, []
    values = {
        'g_grad_norm_ratio': self._last_grad_norm / max(self._max_grad_norm, 1e-12),
        'd_loss_oscillation': (float(np.mean(np.abs(np.diff(self._d_losses)))) /
                               max(float(np.mean(self._d_losses)), 1e-12)
                               if len(self._d_losses) > 1 else 0.0),
    }
    if scores['classes_covered'] < self.floor['classes_covered']:
      warnings.append(f'mode collapse: the samples cover {scores["classes_covered"]:.0f} '
                      f'classes, the real held-out images {self.floor["classes_covered"]:.0f}')
    if scores['feature_spread'] < config.min_feature_spread:
      warnings.append(f'mode collapse: the samples\' features spread {scores["feature_spread"]:.2f}'
                      f' times the real ones\' (threshold {config.min_feature_spread})')
    if values['g_grad_norm_ratio'] < config.vanishing_grad_ratio:
      warnings.append(f'vanishing gradients: the generator\'s gradient norm '
                      f'{self._last_grad_norm:.2e} is {values["g_grad_norm_ratio"]:.1e} of its '
                      f'largest ({self._max_grad_norm:.2e}); the discriminator may be winning')
    if values['d_loss_oscillation'] > config.max_loss_oscillation:
      warnings.append(f'instability: the discriminator loss swings by '
                      f'{values["d_loss_oscillation"]:.2f} times its mean from log to log over '
                      f'the last {len(self._d_losses)} logs; lower the learning rates')
    return values, warnings

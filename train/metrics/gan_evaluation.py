"""What a GAN's evaluation does with the generator: a grid of samples from fixed noise (beside
the real images, written once), the scores of `config.eval.num_samples` samples beside those of
the real held-out images (the floor), and the failure monitors' warnings."""

import functools
import os
from typing import Iterator

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from train.core import loop, parallel
from train.core.run import Streams
from train.core.state import TrainState
from train.core.writer import MetricWriter
from train.data import pipeline as input_pipeline
from train.metrics.feature_nets import make_feature_net, to_unit
from train.metrics.gan_metrics import FailureMonitor, Scorer


def sample(generator: TrainState, rng: jax.Array, count: jax.Array, *, batch_size: int,
           latent_dim: int) -> tuple[jax.Array, jax.Array]:
  """`batch_size` images in [-1, 1] from N(0, 1) noise (BatchNorm on its running averages),
  and a mask that keeps the first `count` of them."""
  z = jax.random.normal(rng, (batch_size, latent_dim))
  images = generator.apply_fn({'params': generator.params, 'batch_stats': generator.batch_stats},
                              z, train=False)
  return images, jnp.arange(batch_size) < count


def for_display(images: np.ndarray, size: tuple[int, ...]) -> np.ndarray:
  """Images in [0, 1], resized bilinearly to `size` (height, width) unless it is ()."""
  if not size:
    return images
  return np.asarray(jax.image.resize(images, (len(images), *size, images.shape[-1]), 'bilinear'))


def real_grid(config: ml_collections.ConfigDict) -> np.ndarray:
  """The first `eval.num_grid` real eval images, in [0, 1], shown as the samples are."""
  batch = next(input_pipeline.make_eval_iterator(config.data,
                                                 global_batch_size=config.eval.batch_size))
  return for_display(batch['image'][batch['mask']][:config.eval.num_grid],
                     tuple(config.eval.grid_size))


class Sampler:
  """Generated images for evaluations, from fixed noise so that evaluations compare."""

  def __init__(self, config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh,
               latent_dim: int):
    self.num_samples, self.batch_size = config.eval.num_samples, config.eval.batch_size
    self._grid_size = tuple(config.eval.grid_size)
    self._grid_key, self._score_key = jax.random.split(Streams.from_seed(config.seed).images)
    self._grid = jax.jit(functools.partial(sample, batch_size=config.eval.num_grid,
                                           latent_dim=latent_dim))
    self._batch = jax.jit(functools.partial(sample, batch_size=self.batch_size,
                                            latent_dim=latent_dim),
                          out_shardings=parallel.batch_sharded(mesh))

  def grid(self, generator: TrainState) -> np.ndarray:
    """The grid's images, in [0, 1], from the same noise at every evaluation."""
    images, _ = self._grid(generator, self._grid_key, 0)
    return for_display(np.asarray(jax.device_get(to_unit(images))), self._grid_size)

  def batches(self, generator: TrainState) -> Iterator[tuple[jax.Array, jax.Array]]:
    """`num_samples` images in batches, as (images, mask); the last batch is padded."""
    for i, start in enumerate(range(0, self.num_samples, self.batch_size)):
      yield self._batch(generator, jax.random.fold_in(self._score_key, i),
                        self.num_samples - start)


def make_scorer(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh) -> Scorer:
  """The feature network of `config.eval` and the real images' statistics."""
  parallel.check_batch_size(config.eval.batch_size, 'eval.batch_size')
  return Scorer(make_feature_net(config.eval, mesh), config.data, mesh=mesh,
                batch_size=config.eval.batch_size, num_splits=config.eval.num_splits,
                min_class_share=config.eval.min_class_share)


def summary_line(metrics: dict[str, float]) -> str:
  """The headline scores, generated beside real."""
  return (f'FID {metrics["fid"]:.2f} (real held-out images: {metrics["fid_real"]:.2f}) | '
          f'IS {metrics["inception_score"]:.2f} ± {metrics["inception_score_std"]:.2f} (real: '
          f'{metrics["inception_score_real"]:.2f}) | classes covered '
          f'{metrics["classes_covered"]:.0f} (real: {metrics["classes_covered_real"]:.0f}) | '
          f'feature spread {metrics["feature_spread"]:.2f}')


class GanEvaluator:
  """The sampler, the scorer (its feature network and the real images' statistics) and the
  failure monitor of `config`, for a generator of `latent_dim` and images of `image_shape`."""

  def __init__(self, config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh,
               latent_dim: int, image_shape: tuple[int, int, int]):
    self.config = config
    self.scorer = make_scorer(config, mesh)
    self.sampler = Sampler(config, mesh, latent_dim)
    self.protocol = self.scorer.protocol(self.sampler.num_samples, image_shape)
    self.monitor = FailureMonitor(config.monitor, self.scorer.floor)

  def score(self, generator: TrainState) -> dict[str, float]:
    """The generator's scores, then the real held-out images' (`*_real`, the floor)."""
    scorer = self.scorer
    scores = scorer.scores(scorer.summarize_generated(self.sampler.batches(generator)))
    return scores | {f'{name}_real': value for name, value in scorer.floor.items()}

  def __call__(self, generator: TrainState, step: int, writer: MetricWriter) -> dict[str, float]:
    """Writes the sample grid, scores the generator and warns of failures; returns the scores
    and the monitors' values."""
    scale = self.config.eval.grid_scale
    if not os.path.exists(os.path.join(writer.workdir, 'images', 'real_0000000.png')):
      # The real images, shown as the samples are, to compare with.
      writer.write_images(0, 'real', real_grid(self.config), scale=scale)
    writer.write_images(step, 'samples', self.sampler.grid(generator), scale=scale)
    metrics = self.score(generator)
    values, warnings = self.monitor.check(metrics)
    for warning in warnings:
      loop.say(f'WARNING at step {step}: {warning}')
    return metrics | values

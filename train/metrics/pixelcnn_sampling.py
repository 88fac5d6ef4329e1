"""What a PixelCNN draws at each evaluation: samples and completions of test images, as grids,
and the sampling speed (compile excluded)."""

import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

from train.core import images as image_lib
from train.core import parallel
from train.core.state import TrainState
from train.core.writer import MetricWriter
from zoo import pixelcnn


class Sampler:
  """`pixelcnn.sample`, compiled ahead of time on first use so that its timings exclude compiling.

  The images to draw are sharded over the devices like a batch (`given` is a global array).
  """

  def __init__(self, model: pixelcnn.PixelCNN, temperature: float):
    self._model, self._temperature = model, temperature
    self._compiled = {}
    self.compile_seconds = 0.0

  def __call__(self, params, rng: jax.Array, given: jax.Array,
               given_mask: jax.Array) -> tuple[np.ndarray, float]:
    """The images (integers, on the host of every process) and the seconds sampling took."""
    variables = {'params': params}
    kwargs = dict(temperature=self._temperature, given=given, given_mask=given_mask)
    key = (given.shape, given_mask.shape)
    if key not in self._compiled:
      start = time.perf_counter()
      self._compiled[key] = pixelcnn.sample.lower(self._model, variables, rng, given.shape,
                                                  **kwargs).compile()
      self.compile_seconds += time.perf_counter() - start
    start = time.perf_counter()
    images = jax.block_until_ready(self._compiled[key](variables, rng, **kwargs))
    seconds = time.perf_counter() - start
    return np.asarray(multihost_utils.process_allgather(images, tiled=True)), seconds


def to_display(x_int: np.ndarray, num_levels: int) -> np.ndarray:
  """Integer images -> [0, 1] for a grid; binarized ones as dark ink on white, which keeps
  strokes that touch an image's border apart from the grid's white padding."""
  images = x_int.astype(np.float32) / (num_levels - 1)
  return 1 - images if num_levels == 2 else images


def side_by_side(originals: np.ndarray, completions: np.ndarray) -> np.ndarray:
  """(N, H, 2W + 1, C) tiles: each original, a grey column, then its completion."""
  separator = np.full((*originals.shape[:2], 1, originals.shape[-1]), 0.5, np.float32)
  return np.concatenate([originals, separator, completions], axis=2)


def write_samples(sampler: Sampler, state: TrainState, rng: jax.Array,
                  test_images: jax.Array, *, num_samples: int, num_levels: int,
                  mesh: jax.sharding.Mesh, writer: MetricWriter, step: int) -> dict[str, float]:
  """Draws `num_samples` images and completes the bottom halves of `test_images` (integers,
  sharded); writes both grids; returns the sampling speed."""
  _, h, w, c = test_images.shape
  scale = image_lib.legible_scale((h, w))
  # Only the batch needs sharding, so that each device draws its share of the images.
  zeros = np.zeros((num_samples // jax.process_count(), h, w, c), np.int32)
  blank = parallel.shard_batch({'x': zeros}, mesh)['x']
  samples, seconds = sampler(state.params, rng, blank, jnp.zeros((1, 1, 1, 1), bool))
  writer.write_images(step, 'samples', to_display(samples, num_levels), scale=scale)
  top_half = (jnp.arange(h) < h // 2)[None, :, None, None]
  completions, _ = sampler(state.params, rng, test_images, top_half)
  originals = np.asarray(multihost_utils.process_allgather(test_images, tiled=True))
  writer.write_images(step, 'completions', side_by_side(to_display(originals, num_levels),
                                                        to_display(completions, num_levels)),
                      scale=scale)
  return {'samples_per_second': num_samples / seconds}

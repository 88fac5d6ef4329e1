"""Likelihoods of images in comparable units, and the baseline a density model must beat.

`bits_per_dim` turns nats per image into bits per dimension (the VAE's and the PixelCNN's
figures); the independent per-pixel model (a categorical at every position, fitted by counting)
is the floor a PixelCNN's likelihood is read against.
"""

import functools
import math
from typing import Iterable

import jax
import jax.numpy as jnp
import numpy as np

from train.core import parallel


def bits_per_dim(nats_per_image, image_shape: tuple[int, ...]):
  """Nats per image -> bits per dimension (per channel of each pixel)."""
  return nats_per_image / (math.prod(image_shape) * math.log(2))


def quantize(images: jax.Array, num_levels: int, threshold: float) -> jax.Array:
  """Images in [0, 1] -> integers in [0, num_levels): `image > threshold` when binary."""
  if num_levels == 2:
    return (images > threshold).astype(jnp.int32)
  return jnp.clip(jnp.round(images * (num_levels - 1)), 0, num_levels - 1).astype(jnp.int32)


def independent_nll(log_probs: jax.Array, x_int: jax.Array) -> jax.Array:
  """-log p(x) in nats per image, (batch,), under per-position log-probabilities (H, W, C, L)."""
  flat = x_int.reshape(x_int.shape[0], -1)
  positions = jnp.arange(flat.shape[1])
  return -log_probs.reshape(flat.shape[1], -1)[positions, flat].sum(-1)


def level_counts(batch: dict[str, jax.Array], *, num_levels: int,
                 threshold: float) -> jax.Array:
  """counts[h, w, c, v]: how many real (mask=1) images of the batch have value v at (h, w, c)."""
  x = quantize(batch['image'], num_levels, threshold)
  flat = x.reshape(x.shape[0], -1)
  counts = jnp.zeros((flat.shape[1], num_levels), jnp.float32).at[
      jnp.arange(flat.shape[1]), flat].add(batch['mask'].astype(jnp.float32)[:, None])
  return counts.reshape(*x.shape[1:], num_levels)


def fit_independent_baseline(batches: Iterable[dict[str, np.ndarray]], mesh: jax.sharding.Mesh,
                             *, num_levels: int, threshold: float) -> tuple[jax.Array, int]:
  """Log-probabilities (H, W, C, num_levels) of every value at every position, each position
  independent of the others, and the number of images they were fitted on.

  Add-one (Laplace) smoothing: p(v) = (count(v) + 1) / (n + num_levels), so a value never seen
  in training at a position still has a finite likelihood on the test split.
  """
  count_fn = jax.jit(functools.partial(level_counts, num_levels=num_levels, threshold=threshold))
  counts = None
  for batch in batches:
    batch_counts = count_fn(parallel.shard_batch(batch, mesh))
    counts = batch_counts if counts is None else counts + batch_counts
  n = counts.sum(-1, keepdims=True)
  return jnp.log((counts + 1) / (n + num_levels)), int(n.reshape(-1)[0])

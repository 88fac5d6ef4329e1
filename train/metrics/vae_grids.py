"""The grids a VAE's evaluation writes: samples from the prior, test images beside their
reconstructions, and latent interpolations between pairs of test images."""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from train.core import images as image_lib
from train.core.writer import MetricWriter
from zoo import vae

# Prior samples, test images reconstructed (and paired for interpolations), and interpolation
# steps between a and b.
NUM_SAMPLES, NUM_SHOWN, NUM_STEPS = 64, 32, 8
# Images per row of each grid.
COLUMNS = {'samples': 8, 'reconstructions': 8, 'interpolations': NUM_STEPS + 2}


def visualize(params, x: jax.Array, rng: jax.Array, *, model: vae.VAE) -> dict[str, jax.Array]:
  """The grids' images in [0, 1] from test images `x` as the likelihood scores them: 'samples'
  from the prior, 'reconstructions' (input, reconstruction, ... pairs), 'interpolations' (rows
  of a, NUM_STEPS decodings of the posterior means from a to b, b)."""
  apply = functools.partial(model.apply, {'params': params})
  samples = apply(NUM_SAMPLES, method='sample', rngs={'sample': rng})
  reconstructions = apply(x, method='reconstruct')
  pairs = x[:len(x) // 2 * 2]
  mean, _ = apply(pairs, method='encode')  # z of a and b: the posterior means
  t = jnp.linspace(0.0, 1.0, NUM_STEPS)[None, :, None]
  z = (1 - t) * mean[0::2, None] + t * mean[1::2, None]  # (pairs, NUM_STEPS, latent_dim)
  decoded = vae.mean_image(apply(z.reshape(-1, z.shape[-1]), method='decode'), model.likelihood)
  rows = jnp.concatenate([pairs[0::2, None], decoded.reshape(*z.shape[:2], *x.shape[1:]),
                          pairs[1::2, None]], axis=1)
  flat = lambda a: a.reshape(-1, *x.shape[1:])
  return {'samples': samples,
          'reconstructions': flat(jnp.stack([x, reconstructions], axis=1)),
          'interpolations': flat(rows)}


def write_grids(writer: MetricWriter, step: int, grids: dict[str, jax.Array]) -> None:
  """Writes `visualize`'s grids, small images enlarged to stay legible."""
  for name, images in grids.items():
    writer.write_images(step, name, np.asarray(images), columns=COLUMNS[name],
                        scale=image_lib.legible_scale(images.shape[1:]))

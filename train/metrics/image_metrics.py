"""Image quality measures for upsampling: PSNR and a checkerboard score.

Images are (B, H, W, C) floats on the [0, 1] scale; every function returns one value per image,
so a masked evaluation can sum them over the real examples of a padded batch.
"""

import jax
import jax.numpy as jnp


def squared_error(images: jax.Array, targets: jax.Array, *, shave: int = 0) -> jax.Array:
  """Sum of squared errors per image (B,), `images` clipped to [0, 1] first (what would be
  saved). `shave` pixels are cut from every border, as super-resolution papers do, so padding
  conventions at the edges do not count."""
  if shave:
    images, targets = (x[:, shave:-shave, shave:-shave] for x in (images, targets))
  error = jnp.clip(images.astype(jnp.float32), 0, 1) - targets.astype(jnp.float32)
  return jnp.sum(jnp.square(error), axis=(1, 2, 3))


def psnr(images: jax.Array, targets: jax.Array, *, shave: int = 0) -> jax.Array:
  """Peak signal-to-noise ratio in dB, 10 log10(1 / MSE), per image (B,); see `squared_error`.
  Identical images give 100 dB."""
  _, h, w, c = targets.shape
  mse = squared_error(images, targets, shave=shave) / ((h - 2 * shave) * (w - 2 * shave) * c)
  return -10.0 * jnp.log10(jnp.maximum(mse, 1e-10))


def _hann(n: int) -> jax.Array:
  """The periodic Hann window: its DFT is nonzero at frequencies 0 and +-1 only."""
  return 0.5 - 0.5 * jnp.cos(2 * jnp.pi * jnp.arange(n) / n)


def _near_multiples(n: int, step: int) -> jax.Array:
  """(n,) bool: the frequencies 0..n-1 within one of a multiple of `step` (circularly)."""
  offset = jnp.arange(n) % step
  return jnp.minimum(offset, step - offset) <= 1


def lattice_energy(images: jax.Array, period: int) -> tuple[jax.Array, jax.Array]:
  """(Energy at the frequencies of period `period`, energy at all frequencies), per image (B,).

  Each channel, less its mean, is multiplied by a 2-D Hann window, then Y = its 2-D DFT. The
  window keeps the jump between opposite borders, which the DFT would wrap around, from
  spreading energy over every frequency; its own spectrum is one frequency wide on either side,
  so a frequency counts as "at" (u0, v0) when both u and v are within one of it.

  The lattice frequencies are (u0, v0) with u0 in {0, H/p, 2H/p, ...}, v0 in {0, W/p, ...},
  except (0, 0): the patterns that repeat every p = `period` pixels in both directions, where
  the uneven kernel overlap of a stride-p upsampling puts its artifacts; for p = 2, (H/2, 0),
  (0, W/2) and (H/2, W/2). The first value sums |Y|^2 at them, the second everywhere; both sum
  over the channels. H/p and W/p must be at least 3, so (0, 0) has no lattice neighbours.
  """
  _, h, w, _ = images.shape
  if h % period or w % period or min(h, w) < 3 * period:
    raise ValueError(f'image size {h}x{w}: needs multiples of the period {period}, at least '
                     f'{3 * period}')
  x = images.astype(jnp.float32)
  x = (x - x.mean(axis=(1, 2), keepdims=True)) * (_hann(h)[:, None, None] * _hann(w)[:, None])
  power = jnp.square(jnp.abs(jnp.fft.fft2(x, axes=(1, 2))))
  rows, cols = _near_multiples(h, h // period), _near_multiples(w, w // period)
  near_dc = _near_multiples(h, h)[:, None] & _near_multiples(w, w)[None, :]
  on_lattice = rows[:, None] & cols[None, :] & ~near_dc
  return (jnp.sum(power * on_lattice[None, :, :, None], axis=(1, 2, 3)),
          jnp.sum(power, axis=(1, 2, 3)))


def checkerboard_score(images: jax.Array, period: int = 2) -> jax.Array:
  """The fraction of an image's energy (less its mean) at the period-`period` frequencies (B,).

  1 for a checkerboard (plus any constant), near 0 for a smooth image; between, the share of
  the image's detail that repeats every `period` pixels. See `lattice_energy`.
  """
  on_lattice, total = lattice_energy(images, period)
  return on_lattice / jnp.maximum(total, 1e-20)

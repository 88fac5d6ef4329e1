"""Image quality measures for upsampling: PSNR and a checkerboard score, and the comparison of
several upsampled versions of the same images over a split.

Images are (B, H, W, C) floats on the [0, 1] scale; every per-image function returns one value
per image, so a masked evaluation can sum them over the real examples of a padded batch.
"""

import math

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


def comparison_sums(pictures: dict[str, jax.Array], mask: jax.Array, *,
                    scale: int) -> dict[str, jax.Array]:
  """Sums over the real (mask=1) examples of what `comparison_metrics` reads, for every
  picture but 'input' against `pictures['target']`: squared errors and PSNRs (`scale` pixels
  shaved from each border), and the energies at the frequencies of period `scale` of each
  picture and of its error."""
  targets, per_image = pictures['target'], {}
  for name, images in pictures.items():
    if name == 'input':
      continue
    per_image[f'lattice_energy_{name}'], per_image[f'energy_{name}'] = lattice_energy(
        images, period=scale)
    if name != 'target':
      per_image[f'squared_error_{name}'] = squared_error(images, targets, shave=scale)
      per_image[f'psnr_{name}'] = psnr(images, targets, shave=scale)
      per_image[f'error_lattice_energy_{name}'] = lattice_energy(images - targets,
                                                                 period=scale)[0]
  mask = mask.astype(jnp.float32)
  return {k: jnp.sum(v * mask) for k, v in per_image.items()} | {'count': jnp.sum(mask)}


def comparison_metrics(totals: dict[str, float], image_shape: tuple[int, ...],
                       scale: int) -> dict[str, float]:
  """From `comparison_sums` over a split, per picture <m>: `psnr_<m>` (the split as one image),
  `mean_psnr_<m>` (the mean of the images' PSNRs), `checkerboard_db_<m>` (the share of the
  energy at the period-`scale` frequencies, also for the targets) and `lattice_error_db_<m>`
  (the error's energy there relative to the targets'), all in dB."""
  count = totals['count']
  height, width, channels = image_shape
  values = count * (height - 2 * scale) * (width - 2 * scale) * channels
  decibels = lambda ratio: float(10 * math.log10(max(ratio, 1e-20)))
  metrics = {}
  for name in (n[len('energy_'):] for n in totals if n.startswith('energy_')):
    metrics[f'checkerboard_db_{name}'] = decibels(
        totals[f'lattice_energy_{name}'] / max(totals[f'energy_{name}'], 1e-20))
    if name == 'target':
      continue
    metrics[f'psnr_{name}'] = decibels(values / max(totals[f'squared_error_{name}'], 1e-20))
    metrics[f'mean_psnr_{name}'] = float(totals[f'psnr_{name}'] / count)
    metrics[f'lattice_error_db_{name}'] = decibels(
        totals[f'error_lattice_energy_{name}'] / max(totals['lattice_energy_target'], 1e-20))
  return metrics | {'count': int(count)}

"""Training augmentations of a batch: float images in [0, 1] of shape (N, H, W, C), stateless
randomness, every image of the batch drawn independently.

Every function takes one `seed` for the whole batch (shape [2] int32/int64 tensor, as for
`tf.random.stateless_*`), so a batch's augmentation depends only on its seed: reproducible runs
and exact resume. They work on whole batches because per-image ops cost the input pipeline far
more CPU than the small models' train steps they feed (`benchmarks/input_pipeline.py`). Ranges
follow Keras' `ImageDataGenerator` where it has the same option.
"""

import importlib
import math
from typing import Callable

import tensorflow as tf

from configs.common import AUGMENT
from train.core.errors import UserError

Augment = Callable[[tf.Tensor, tf.Tensor], tf.Tensor]

FILL_MODES = ('nearest', 'constant', 'reflect', 'wrap')
DEFAULTS = AUGMENT  # every field off
# One seed per augmentation, always split the same way, so that switching one on does not
# change the randomness of the others.
_FLIP, _CROP, _AFFINE, _NOISE, _CUSTOM = range(5)


def flip(images: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
  """Mirrors each image left-right with probability 1/2."""
  return tf.image.stateless_random_flip_left_right(images, seed)


def pad_and_crop(images: tf.Tensor, seed: tf.Tensor, padding: int) -> tf.Tensor:
  """Zero-pads `padding` pixels on every side of each image, then crops a window of the original
  size at a random place: an integer shift of up to `padding` pixels, zeros shifted in."""
  offsets = tf.random.stateless_uniform([tf.shape(images)[0], 2], seed, -padding, padding + 1,
                                        dtype=tf.int32)
  rows, cols = tf.unstack(tf.cast(offsets, tf.float32), axis=1)
  zeros, ones = tf.zeros_like(rows), tf.ones_like(rows)
  # Output (x=col, y=row) reads input (x + cols, y + rows).
  transforms = tf.stack([ones, zeros, cols, zeros, ones, rows, zeros, zeros], axis=1)
  return _transformed(images, transforms, 'NEAREST', 'constant')


def gaussian_noise(images: tf.Tensor, seed: tf.Tensor, std: float) -> tf.Tensor:
  """Adds N(0, std^2) noise to every value, then clips back to [0, 1]."""
  noise = tf.random.stateless_normal(tf.shape(images), seed, stddev=std, dtype=images.dtype)
  return tf.clip_by_value(images + noise, 0.0, 1.0)


def zoom_bounds(zoom: float | tuple[float, float]) -> tuple[float, float]:
  """Keras' `zoom_range`: z means scale factors in [1 - z, 1 + z]; a pair is the range itself."""
  if isinstance(zoom, (int, float)):
    return 1.0 - zoom, 1.0 + zoom
  low, high = zoom
  return float(low), float(high)


def affine_parameters(count: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
  """The (count, 6) uniform draws in [-1, 1] of `random_affine`: rotation, row shift, column
  shift, shear, row zoom, column zoom of each image."""
  return tf.random.stateless_uniform([count, 6], seed, -1.0, 1.0)


def random_affine(images: tf.Tensor, seed: tf.Tensor, *, rotation: float = 0.0,
                  shift: float = 0.0, zoom: float | tuple[float, float] = 0.0,
                  shear: float = 0.0, fill_mode: str = 'nearest') -> tf.Tensor:
  """Random rotation, shift, shear and zoom of each image as one projective transform (bilinear).

  Args:
    images: (N, H, W, C) float.
    seed: stateless seed.
    rotation: degrees; the angle is uniform in [-rotation, rotation].
    shift: fraction of the height (width) to shift rows (columns) by, uniform in [-shift, shift].
    zoom: Keras `zoom_range`; row and column scales drawn independently. Above 1 zooms out.
    shear: degrees, uniform in [-shear, shear].
    fill_mode: how points outside the image are filled: one of `FILL_MODES` ('constant': zeros).
  Returns:
    The transformed images, same shape.
  """
  u = tf.unstack(affine_parameters(tf.shape(images)[0], seed), axis=1)
  height, width = (tf.cast(n, tf.float32) for n in (tf.shape(images)[1], tf.shape(images)[2]))
  theta = u[0] * math.radians(rotation)
  shift_rows, shift_cols = u[1] * shift * height, u[2] * shift * width
  shear_angle = u[3] * math.radians(shear)
  low, high = zoom_bounds(zoom)
  zoom_rows, zoom_cols = (low + (high - low) * (v + 1.0) / 2.0 for v in u[4:])
  zeros, ones = tf.zeros_like(theta), tf.ones_like(theta)
  homogeneous = lambda rows: _homogeneous(rows, zeros, ones)
  # As in Keras, the matrix maps output (row, col) to input (row, col):
  # rotation @ shift @ shear @ zoom, about the image centre.
  center_rows, center_cols = (height - 1.0) / 2.0, (width - 1.0) / 2.0
  matrix = _matmuls(
      homogeneous([[ones, zeros, center_rows * ones], [zeros, ones, center_cols * ones]]),
      homogeneous([[tf.cos(theta), -tf.sin(theta), zeros], [tf.sin(theta), tf.cos(theta), zeros]]),
      homogeneous([[ones, zeros, shift_rows], [zeros, ones, shift_cols]]),
      homogeneous([[ones, -tf.sin(shear_angle), zeros], [zeros, tf.cos(shear_angle), zeros]]),
      homogeneous([[zoom_rows, zeros, zeros], [zeros, zoom_cols, zeros]]),
      homogeneous([[ones, zeros, -center_rows * ones], [zeros, ones, -center_cols * ones]]))
  # The op wants [a0, a1, a2, b0, b1, b2, c0, c1] mapping output (x=col, y=row) to input
  # (a0 x + a1 y + a2, b0 x + b1 y + b2): the same matrix with rows and columns swapped.
  transforms = tf.stack([matrix[:, 1, 1], matrix[:, 1, 0], matrix[:, 1, 2],
                         matrix[:, 0, 1], matrix[:, 0, 0], matrix[:, 0, 2], zeros, zeros], axis=1)
  return _transformed(images, transforms, 'BILINEAR', fill_mode)


def _transformed(images: tf.Tensor, transforms: tf.Tensor, interpolation: str,
                 fill_mode: str) -> tf.Tensor:
  out = tf.raw_ops.ImageProjectiveTransformV3(
      images=images, transforms=transforms, output_shape=tf.shape(images)[1:3], fill_value=0.0,
      interpolation=interpolation, fill_mode=fill_mode.upper())
  return tf.ensure_shape(out, images.shape)


def _homogeneous(rows, zeros: tf.Tensor, ones: tf.Tensor) -> tf.Tensor:
  """(N, 3, 3) matrices from their first two rows, each entry an (N,) tensor; the last row is
  (0, 0, 1)."""
  return tf.stack([tf.stack(row, axis=1) for row in [*rows, [zeros, zeros, ones]]], axis=1)


def _matmuls(*matrices: tf.Tensor) -> tf.Tensor:
  product = matrices[0]
  for m in matrices[1:]:
    product = product @ m
  return product


def load_custom(spec: str) -> Augment:
  """Imports 'package.module:function': a function of one float image (H, W, C) and a stateless
  seed, applied to each image of a batch with a seed of its own."""
  module_name, sep, function_name = spec.partition(':')
  if not (sep and module_name and function_name):
    raise UserError(f"data.augment.custom={spec!r}: expected 'package.module:function'.")
  try:
    module = importlib.import_module(module_name)
  except ImportError as e:
    raise UserError(f'data.augment.custom={spec!r}: cannot import {module_name!r} ({e}); '
                    'make it importable (installed or on PYTHONPATH).') from e
  fn = getattr(module, function_name, None)
  if not callable(fn):
    raise UserError(f'data.augment.custom={spec!r}: {module_name} has no function '
                    f'{function_name!r}.')
  return fn


def make_augment(config) -> Augment | None:
  """The augmentations that `config` (`data.augment`) switches on, composed; None if none are."""
  options = validated(config)
  steps = []
  if options['rotation'] or options['shift'] or options['zoom'] != 0.0 or options['shear']:
    steps.append((_AFFINE, lambda image, seed: random_affine(
        image, seed, rotation=options['rotation'], shift=options['shift'],
        zoom=options['zoom'], shear=options['shear'], fill_mode=options['fill_mode'])))
  if options['crop_padding']:
    steps.append((_CROP, lambda image, seed: pad_and_crop(image, seed, options['crop_padding'])))
  if options['flip']:
    steps.append((_FLIP, flip))
  if options['noise_std']:
    steps.append((_NOISE, lambda image, seed: gaussian_noise(image, seed, options['noise_std'])))
  if options['custom']:
    # Last, so the hook sees (and may undo) everything above.
    steps.append((_CUSTOM, _each_image(load_custom(options['custom']))))
  if not steps:
    return None

  def augment(images: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    seeds = tf.random.experimental.stateless_split(seed, num=5)
    for which, step in steps:
      images = step(images, seeds[which])
    return images

  return augment


def _each_image(fn: Augment) -> Augment:
  """A per-image augmentation applied to every image of a batch, each with its own seed."""
  def augment(images: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    seeds = tf.random.experimental.stateless_split(seed, num=tf.shape(images)[0])
    return tf.map_fn(lambda pair: fn(*pair), (images, seeds),
                     fn_output_signature=tf.TensorSpec(images.shape[1:], images.dtype))
  return augment


def validated(config) -> dict:
  """`config` over `DEFAULTS`, checked; raises UserError naming the bad field."""
  unknown = set(config) - set(DEFAULTS)
  if unknown:
    raise UserError(f'unknown field(s) data.augment.{", data.augment.".join(sorted(unknown))}; '
                    f'known: {", ".join(DEFAULTS)}.')
  options = {**DEFAULTS, **config}

  def check(name, ok, expected):
    if not ok:
      raise UserError(f'data.augment.{name}={options[name]!r}: expected {expected}.')

  number = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)
  check('flip', isinstance(options['flip'], bool), 'True or False')
  check('crop_padding', isinstance(options['crop_padding'], int)
        and not isinstance(options['crop_padding'], bool) and options['crop_padding'] >= 0,
        'a number of pixels >= 0')
  for name in ('rotation', 'shear'):
    check(name, number(options[name]) and 0 <= options[name] <= 180, 'degrees in [0, 180]')
  check('shift', number(options['shift']) and 0 <= options['shift'] < 1,
        'a fraction of the image size in [0, 1)')
  zoom = options['zoom']
  check('zoom', (number(zoom) and 0 <= zoom < 1) or (
      isinstance(zoom, (tuple, list)) and len(zoom) == 2 and all(map(number, zoom))
      and 0 < zoom[0] <= zoom[1]), 'a float in [0, 1) or a (low, high) pair with 0 < low <= high')
  check('noise_std', number(options['noise_std']) and options['noise_std'] >= 0, 'a float >= 0')
  check('custom', isinstance(options['custom'], str), "'' or 'package.module:function'")
  check('fill_mode', options['fill_mode'] in FILL_MODES, f'one of {FILL_MODES}')
  return options

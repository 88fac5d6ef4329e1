"""Training augmentations: float images in [0, 1] of shape (H, W, C), stateless randomness.

Every function takes a `seed` (shape [2] int32/int64 tensor, as for `tf.random.stateless_*`), so
an example's augmentation depends only on its seed: reproducible runs and exact resume. Ranges
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


def flip(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
  """Mirrors left-right with probability 1/2."""
  return tf.image.stateless_random_flip_left_right(image, seed)


def pad_and_crop(image: tf.Tensor, seed: tf.Tensor, padding: int) -> tf.Tensor:
  """Zero-pads `padding` pixels on every side, then crops back to the original size at random."""
  padded = tf.pad(image, [[padding, padding], [padding, padding], [0, 0]])
  cropped = tf.image.stateless_random_crop(padded, tf.shape(image), seed)
  return tf.ensure_shape(cropped, image.shape)


def gaussian_noise(image: tf.Tensor, seed: tf.Tensor, std: float) -> tf.Tensor:
  """Adds N(0, std^2) noise to every value, then clips back to [0, 1]."""
  noise = tf.random.stateless_normal(tf.shape(image), seed, stddev=std, dtype=image.dtype)
  return tf.clip_by_value(image + noise, 0.0, 1.0)


def zoom_bounds(zoom: float | tuple[float, float]) -> tuple[float, float]:
  """Keras' `zoom_range`: z means scale factors in [1 - z, 1 + z]; a pair is the range itself."""
  if isinstance(zoom, (int, float)):
    return 1.0 - zoom, 1.0 + zoom
  low, high = zoom
  return float(low), float(high)


def random_affine(image: tf.Tensor, seed: tf.Tensor, *, rotation: float = 0.0,
                  shift: float = 0.0, zoom: float | tuple[float, float] = 0.0,
                  shear: float = 0.0, fill_mode: str = 'nearest') -> tf.Tensor:
  """Random rotation, shift, shear and zoom as one projective transform (bilinear).

  Args:
    image: (H, W, C) float.
    seed: stateless seed.
    rotation: degrees; the angle is uniform in [-rotation, rotation].
    shift: fraction of the height (width) to shift rows (columns) by, uniform in [-shift, shift].
    zoom: Keras `zoom_range`; row and column scales drawn independently. Above 1 zooms out.
    shear: degrees, uniform in [-shear, shear].
    fill_mode: how points outside the image are filled: one of `FILL_MODES` ('constant': zeros).
  Returns:
    The transformed image, same shape.
  """
  u = tf.random.stateless_uniform([6], seed, -1.0, 1.0)
  height, width = tf.unstack(tf.cast(tf.shape(image)[:2], tf.float32))
  theta = u[0] * math.radians(rotation)
  shift_rows, shift_cols = u[1] * shift * height, u[2] * shift * width
  shear_angle = u[3] * math.radians(shear)
  low, high = zoom_bounds(zoom)
  zoom_rows, zoom_cols = tf.unstack(low + (high - low) * (u[4:] + 1.0) / 2.0)
  # As in Keras, the matrix maps output (row, col) to input (row, col):
  # rotation @ shift @ shear @ zoom, about the image centre.
  matrix = _matmuls(
      _homogeneous([[tf.cos(theta), -tf.sin(theta), 0.0], [tf.sin(theta), tf.cos(theta), 0.0]]),
      _homogeneous([[1.0, 0.0, shift_rows], [0.0, 1.0, shift_cols]]),
      _homogeneous([[1.0, -tf.sin(shear_angle), 0.0], [0.0, tf.cos(shear_angle), 0.0]]),
      _homogeneous([[zoom_rows, 0.0, 0.0], [0.0, zoom_cols, 0.0]]),
  )
  center_rows, center_cols = (height - 1.0) / 2.0, (width - 1.0) / 2.0
  matrix = _matmuls(
      _homogeneous([[1.0, 0.0, center_rows], [0.0, 1.0, center_cols]]), matrix,
      _homogeneous([[1.0, 0.0, -center_rows], [0.0, 1.0, -center_cols]]))
  # The op wants [a0, a1, a2, b0, b1, b2, c0, c1] mapping output (x=col, y=row) to input
  # (a0 x + a1 y + a2, b0 x + b1 y + b2): the same matrix with rows and columns swapped.
  transform = tf.stack([matrix[1, 1], matrix[1, 0], matrix[1, 2],
                        matrix[0, 1], matrix[0, 0], matrix[0, 2], 0.0, 0.0])
  out = tf.raw_ops.ImageProjectiveTransformV3(
      images=image[None], transforms=transform[None], output_shape=tf.shape(image)[:2],
      fill_value=0.0, interpolation='BILINEAR', fill_mode=fill_mode.upper())
  return tf.ensure_shape(out[0], image.shape)


def _homogeneous(rows) -> tf.Tensor:
  """A 3x3 matrix from its first two rows; the last is (0, 0, 1)."""
  return tf.stack([tf.stack([tf.cast(v, tf.float32) for v in row])
                   for row in [*rows, [0.0, 0.0, 1.0]]])


def _matmuls(*matrices: tf.Tensor) -> tf.Tensor:
  product = matrices[0]
  for m in matrices[1:]:
    product = product @ m
  return product


def load_custom(spec: str) -> Augment:
  """Imports 'package.module:function' (a function of a float image and a stateless seed)."""
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
    steps.append((_CUSTOM, load_custom(options['custom'])))
  if not steps:
    return None

  def augment(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    seeds = tf.random.experimental.stateless_split(seed, num=5)
    for which, step in steps:
      image = step(image, seeds[which])
    return image

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

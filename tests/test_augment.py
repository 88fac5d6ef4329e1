"""Tests for train/data/augment.py: shape, range, identity when off and effect when on of each,
every image of a batch drawn on its own."""

import math

import chex
import numpy as np
import pytest
import tensorflow as tf
from scipy import ndimage

from train.core.errors import UserError
from train.data import augment

SEED = tf.constant([3, 4], tf.int64)
ON = dict(flip=dict(flip=True), crop_padding=dict(crop_padding=2), rotation=dict(rotation=30.0),
          shift=dict(shift=0.2), zoom=dict(zoom=0.3), shear=dict(shear=20.0),
          noise_std=dict(noise_std=0.1))


@pytest.fixture(name='image')
def image_fixture():
  """A batch of 4 different images."""
  return tf.constant(np.random.default_rng(0).random((4, 12, 10, 3)), tf.float32)


def _apply(options, image, seed=SEED):
  return augment.make_augment(options)(image, seed).numpy()


def _copies(image, count: int = 8):
  """A batch of `count` copies of the batch's first image."""
  return tf.repeat(image[:1], count, axis=0)


def test_all_off_is_none():
  assert augment.make_augment({}) is None
  assert augment.make_augment(augment.DEFAULTS) is None


@pytest.mark.parametrize('name', list(ON))
def test_each_keeps_shape_and_range_and_changes_the_image(name, image):
  out = _apply(ON[name], image)
  chex.assert_shape(out, (4, 12, 10, 3))
  chex.assert_type(out, np.float32)
  assert out.min() >= 0.0 and out.max() <= 1.0
  # Flipping is a coin toss: some seed among a few must flip.
  changed = [not np.allclose(_apply(ON[name], image, tf.constant([s, 0], tf.int64)), image)
             for s in range(4)]
  assert any(changed)


@pytest.mark.parametrize('name', list(ON))
def test_each_is_deterministic_given_the_seed(name, image):
  np.testing.assert_array_equal(_apply(ON[name], image), _apply(ON[name], image))


@pytest.mark.parametrize('name', [name for name in ON if name != 'flip'])
def test_each_image_of_a_batch_is_drawn_on_its_own(name, image):
  out = _apply(ON[name], _copies(image))
  assert all(not np.allclose(out[0], other) for other in out[1:])


def test_seed_changes_the_result(image):
  outs = [_apply(dict(rotation=30.0, noise_std=0.1), image, tf.constant([s, 0], tf.int64))
          for s in range(2)]
  assert not np.allclose(outs[0], outs[1])


def test_functions_with_zero_strength_are_identity(image):
  np.testing.assert_allclose(augment.pad_and_crop(image, SEED, 0), image)
  np.testing.assert_allclose(augment.gaussian_noise(image, SEED, 0.0), image)
  np.testing.assert_allclose(augment.random_affine(image, SEED), image, atol=1e-6)


def test_flip_mirrors_columns(image):
  copies = _copies(image)
  outs = augment.flip(copies, SEED).numpy()
  flipped = [np.array_equal(o, copies[0].numpy()[:, ::-1]) for o in outs]
  kept = [np.array_equal(o, copies[0].numpy()) for o in outs]
  assert all(f or k for f, k in zip(flipped, kept)) and any(flipped) and any(kept)


def test_pad_and_crop_is_a_window_of_the_padded_image(image):
  out = augment.pad_and_crop(image, SEED, 2).numpy()
  for augmented, original in zip(out, image.numpy()):
    padded = np.pad(original, [(2, 2), (2, 2), (0, 0)])
    windows = [padded[r:r + 12, c:c + 10] for r in range(5) for c in range(5)]
    assert any(np.array_equal(augmented, w) for w in windows)


def test_affine_matches_keras_matrix_with_scipy(image):
  """Keras' ImageDataGenerator matrix, applied by scipy as Keras does, gives the same image."""
  out = augment.random_affine(image, SEED, rotation=30.0, shift=0.1, zoom=0.2, shear=10.0)
  for i, u in enumerate(augment.affine_parameters(4, SEED).numpy()):
    np.testing.assert_allclose(out[i], _keras_affine(image.numpy()[i], u), atol=1e-5)


def _keras_affine(image: np.ndarray, u: np.ndarray) -> np.ndarray:
  """`image` (12, 10, 3) under the Keras matrix of draws `u`: rotation 30, shift 0.1, zoom 0.2,
  shear 10."""
  h, w = 12, 10
  theta, shear = u[0] * math.radians(30.0), u[3] * math.radians(10.0)
  tx, ty, zx, zy = u[1] * 0.1 * h, u[2] * 0.1 * w, 1 + 0.2 * u[4], 1 + 0.2 * u[5]
  matrix = (np.array([[np.cos(theta), -np.sin(theta), 0], [np.sin(theta), np.cos(theta), 0],
                      [0, 0, 1]])
            @ np.array([[1, 0, tx], [0, 1, ty], [0, 0, 1]])
            @ np.array([[1, -np.sin(shear), 0], [0, np.cos(shear), 0], [0, 0, 1]])
            @ np.array([[zx, 0, 0], [0, zy, 0], [0, 0, 1]]))
  center = np.array([[1, 0, (h - 1) / 2], [0, 1, (w - 1) / 2], [0, 0, 1]])
  uncenter = np.array([[1, 0, -(h - 1) / 2], [0, 1, -(w - 1) / 2], [0, 0, 1]])
  matrix = center @ matrix @ uncenter
  return np.stack([
      ndimage.affine_transform(image[..., c], matrix[:2, :2], matrix[:2, 2], order=1,
                               mode='nearest') for c in range(3)], axis=-1)


def test_constant_fill_mode_fills_with_zeros():
  ones = tf.ones((2, 8, 8, 1))
  out = augment.random_affine(ones, SEED, rotation=45.0, fill_mode='constant').numpy()
  assert out.min() == 0.0
  nearest = augment.random_affine(ones, SEED, rotation=45.0).numpy()
  np.testing.assert_allclose(nearest, 1.0)


def test_zoom_bounds_follow_keras():
  assert augment.zoom_bounds(0.2) == (0.8, 1.2)
  assert augment.zoom_bounds((0.5, 1.5)) == (0.5, 1.5)


def test_all_on_together(image, tmp_path, monkeypatch):
  (tmp_path / 'my_darken.py').write_text(
      'def darken(image, seed):\n  return image * 0.5\n')
  monkeypatch.syspath_prepend(str(tmp_path))
  options = {k: v for on in ON.values() for k, v in on.items()}
  out = _apply({**options, 'custom': 'my_darken:darken'}, image)
  chex.assert_shape(out, (4, 12, 10, 3))
  assert out.min() >= 0.0 and out.max() <= 0.5  # The hook runs last.


def test_custom_hook_gets_image_and_seed(image, tmp_path, monkeypatch):
  (tmp_path / 'my_noise.py').write_text(
      'import tensorflow as tf\n'
      'def noisy(image, seed):\n'
      '  noise = tf.random.stateless_uniform(tf.shape(image), seed)\n'
      '  return tf.clip_by_value(image + noise, 0, 1)\n')
  monkeypatch.syspath_prepend(str(tmp_path))
  out = _apply(dict(custom='my_noise:noisy'), _copies(image, 2))
  chex.assert_shape(out, (2, 12, 10, 3))
  assert not np.allclose(out, _copies(image, 2))
  assert not np.allclose(out[0], out[1])  # each image gets a seed of its own
  np.testing.assert_array_equal(out, _apply(dict(custom='my_noise:noisy'), _copies(image, 2)))


@pytest.mark.parametrize('spec, message', [
    ('no_colon', "expected 'package.module:function'"),
    ('no_such_module_xyz:f', "cannot import 'no_such_module_xyz'"),
    ('math:no_such_function', "math has no function 'no_such_function'"),
])
def test_custom_hook_errors(spec, message):
  with pytest.raises(UserError, match=message) as e:
    augment.make_augment(dict(custom=spec))
  assert 'data.augment.custom' in str(e.value)


@pytest.mark.parametrize('options, field', [
    (dict(rotation=-1.0), 'data.augment.rotation'),
    (dict(shift=1.5), 'data.augment.shift'),
    (dict(zoom=1.0), 'data.augment.zoom'),
    (dict(zoom=(1.2, 0.8)), 'data.augment.zoom'),
    (dict(crop_padding=1.5), 'data.augment.crop_padding'),
    (dict(flip='yes'), 'data.augment.flip'),
    (dict(noise_std=-0.1), 'data.augment.noise_std'),
    (dict(fill_mode='mirror'), 'data.augment.fill_mode'),
    (dict(rotate=10.0), 'data.augment.rotate'),
])
def test_bad_options_name_the_field(options, field):
  with pytest.raises(UserError, match=field):
    augment.make_augment(options)

"""Super-resolution data: offline photo patches, and the low-resolution inputs made from them.

Importing this module registers the TFDS dataset `sklearn_photos`: 64x64 patches of the two
photographs scikit-learn bundles (`sklearn.datasets.load_sample_images`, 427x640 each). It loads
through the classification input pipeline like any TFDS dataset (label: which photograph). Any
other TFDS image dataset serves as well: its images, at `data.image_size`, are the targets.

A network sees `low_resolution(target, scale)`: the target shrunk by bicubic interpolation with
antialiasing (the "bicubic" degradation of the SR benchmarks) and rounded to 8 bits.
"""

import jax
import jax.numpy as jnp
import numpy as np
import tensorflow_datasets as tfds
from sklearn import datasets as sk_datasets

PATCH = 64
# Test tiles: the 64x64 tiles (row, column) of a photo with (row + 2 * column) % 5 == 0, 12 per
# photo spread over both; training windows (every 8 pixels) are those that miss every test tile.
_TEST_EVERY = 5
_TRAIN_STRIDE = 8


class SklearnPhotos(tfds.core.GeneratorBasedBuilder):
  """64x64 patches of scikit-learn's sample photographs: 24 test tiles, 2360 training windows."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Test tiles (row + 2 * column) % 5 == 0; windows at stride 8.'}

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        description='Patches of the two sample photographs bundled with scikit-learn.',
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(shape=(PATCH, PATCH, 3)),
            'label': tfds.features.ClassLabel(names=['china', 'flower']),
        }),
        supervised_keys=('image', 'label'),
        homepage='https://scikit-learn.org/stable/datasets/loading_other_datasets.html',
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # The photographs ship with scikit-learn.
    photos = sk_datasets.load_sample_images().images
    return {'train': self._generate_examples(photos, 'train'),
            'test': self._generate_examples(photos, 'test')}

  def _generate_examples(self, photos, split):
    for label, photo in enumerate(photos):
      for top, left in patch_corners(photo.shape[:2], split):
        yield f'{label}_{top}_{left}', {'image': photo[top:top + PATCH, left:left + PATCH],
                                        'label': label}


def patch_corners(photo_size: tuple[int, int], split: str) -> list[tuple[int, int]]:
  """(top, left) of the patches of `split` ('train' or 'test') in a photo of `photo_size`."""
  height, width = photo_size
  tiles = [(r, c) for r in range(height // PATCH) for c in range(width // PATCH)
           if (r + 2 * c) % _TEST_EVERY == 0]
  if split == 'test':
    return [(r * PATCH, c * PATCH) for r, c in tiles]
  in_test = np.zeros(photo_size, bool)
  for r, c in tiles:
    in_test[r * PATCH:(r + 1) * PATCH, c * PATCH:(c + 1) * PATCH] = True
  return [(top, left)
          for top in range(0, height - PATCH + 1, _TRAIN_STRIDE)
          for left in range(0, width - PATCH + 1, _TRAIN_STRIDE)
          if not in_test[top:top + PATCH, left:left + PATCH].any()]


def low_resolution(images: jax.Array, scale: int) -> jax.Array:
  """Images (B, H, W, C) in [0, 1] shrunk `scale` times: bicubic, antialiased, 8-bit."""
  b, h, w, c = images.shape
  small = jax.image.resize(images, (b, h // scale, w // scale, c), method='bicubic',
                           antialias=True)
  return jnp.round(jnp.clip(small, 0, 1) * 255) / 255


def bicubic_upscale(images: jax.Array, scale: int) -> jax.Array:
  """The baseline: images (B, h, w, C) enlarged `scale` times by bicubic interpolation."""
  b, h, w, c = images.shape
  return jax.image.resize(images, (b, h * scale, w * scale, c), method='bicubic')

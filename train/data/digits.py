"""TFDS builder for scikit-learn's 8x8 handwritten digits: offline data for the default recipes.

Importing this module registers the dataset as `sklearn_digits`, so it loads like any other:
`tfds.builder('sklearn_digits', data_dir=...)`. Preparing it needs no network.
"""

import numpy as np
import tensorflow_datasets as tfds
from sklearn import datasets as sk_datasets
from sklearn import model_selection

# `load_digits` counts ink in 4x4 blocks of a 32x32 bitmap, so its values are 0..16.
_MAX_VALUE = 16
TEST_FRACTION = 0.2


class SklearnDigits(tfds.core.GeneratorBasedBuilder):
  """The 1,797 8x8 grayscale digits of `sklearn.datasets.load_digits`, split 1437/360."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Stratified 80/20 train/test split with random_state=0.'}

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        description='Optical recognition of handwritten digits (UCI), as bundled by scikit-learn; '
        'values scaled from 0..16 to 0..255.',
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(shape=(8, 8, 1)),
            'label': tfds.features.ClassLabel(names=[str(d) for d in range(10)]),
        }),
        supervised_keys=('image', 'label'),
        homepage='https://scikit-learn.org/stable/datasets/toy_dataset.html#digits-dataset',
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # The data ships with scikit-learn.
    digits = sk_datasets.load_digits()
    images = np.round(digits.images * (255 / _MAX_VALUE)).astype(np.uint8)[..., None]
    # The key of an example is its index in `load_digits`: stable across preparations.
    train_idx, test_idx = model_selection.train_test_split(
        np.arange(len(images)), test_size=TEST_FRACTION, stratify=digits.target, random_state=0)
    return {
        'train': self._generate_examples(images, digits.target, train_idx),
        'test': self._generate_examples(images, digits.target, test_idx),
    }

  def _generate_examples(self, images, labels, indices):
    for i in indices:
      yield int(i), {'image': images[i], 'label': int(labels[i])}

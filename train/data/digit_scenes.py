"""TFDS builder for offline segmentation data: scikit-learn's digits pasted onto photographs.

Importing this module registers the dataset as `digit_scenes`. Preparing it needs no network:
everything comes from scikit-learn's bundled data.

How an example is made (`compose`): a 64x64 background is cut from one of scikit-learn's two
sample photographs (`load_sample_images`, the same windows as `sklearn_photos`: training
windows never overlap the test tiles). Then 2 to 4 of the 8x8 handwritten digits of
`load_digits` are pasted at random positions, each enlarged (bilinear) to a random size of 14 to
28 pixels and drawn in a random colour with its ink as opacity, later digits over earlier ones.
The mask gives each pixel its class: 0 for background, 1 + d for digit d where that digit's ink
is at least half of its maximum (fainter edge pixels stay with whatever lies beneath). Training
scenes use only the digits and windows of the training split (the 80/20 split of
`sklearn_digits`), test scenes only those of the test split, so no digit image and no piece of
photograph is in both. Generation is seeded, so every preparation gives the same examples.
"""

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image
from sklearn import datasets as sk_datasets
from sklearn import model_selection

from train.data import digits, photos

SIZE = photos.PATCH  # 64
CLASS_NAMES = ('background', *(str(d) for d in range(10)))
NUM_EXAMPLES = {'train': 2000, 'test': 400}
_DIGITS_PER_SCENE = (2, 4)
_DIGIT_SIZE = (14, 28)
_INK_THRESHOLD = 0.5
_SEEDS = {'train': 0, 'test': 1}


class DigitScenes(tfds.core.GeneratorBasedBuilder):
  """64x64 scenes of 2-4 handwritten digits over photographs, with per-pixel class masks."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': '2000 train and 400 test scenes.'}

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        description=__doc__,
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(shape=(SIZE, SIZE, 3)),
            'segmentation_mask': tfds.features.LabeledImage(labels=list(CLASS_NAMES),
                                                            shape=(SIZE, SIZE, 1)),
        }),
        supervised_keys=('image', 'segmentation_mask'),
        homepage='https://scikit-learn.org/stable/datasets/toy_dataset.html#digits-dataset',
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Everything ships with scikit-learn.
    return {split: self._generate_examples(split) for split in NUM_EXAMPLES}

  def _generate_examples(self, split):
    for key, (image, mask) in enumerate(scenes(split)):
      yield key, {'image': image, 'segmentation_mask': mask[..., None]}


def scenes(split: str):
  """The `NUM_EXAMPLES[split]` (image uint8 (64, 64, 3), mask uint8 (64, 64)) pairs of `split`."""
  data = sk_datasets.load_digits()
  train_idx, test_idx = model_selection.train_test_split(
      np.arange(len(data.images)), test_size=digits.TEST_FRACTION, stratify=data.target,
      random_state=0)
  indices = train_idx if split == 'train' else test_idx
  images = sk_datasets.load_sample_images().images
  windows = [(p, top, left) for p, image in enumerate(images)
             for top, left in photos.patch_corners(image.shape[:2], split)]
  rng = np.random.default_rng(_SEEDS[split])
  for _ in range(NUM_EXAMPLES[split]):
    p, top, left = windows[rng.integers(len(windows))]
    background = images[p][top:top + SIZE, left:left + SIZE]
    chosen = rng.choice(indices, rng.integers(_DIGITS_PER_SCENE[0], _DIGITS_PER_SCENE[1] + 1))
    yield compose(background, [(data.images[i] / 16.0, int(data.target[i])) for i in chosen], rng)


def compose(background: np.ndarray, glyphs: list[tuple[np.ndarray, int]],
            rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
  """Pastes each (8x8 ink in [0, 1], digit) over `background`; returns (image, mask)."""
  image = background.astype(np.float32)
  mask = np.zeros(background.shape[:2], np.uint8)
  for ink, digit in glyphs:
    size = int(rng.integers(_DIGIT_SIZE[0], _DIGIT_SIZE[1] + 1))
    alpha = np.asarray(Image.fromarray(ink.astype(np.float32)).resize((size, size),
                                                                      Image.BILINEAR))
    alpha = np.clip(alpha / max(alpha.max(), 1e-6), 0, 1)[..., None]
    top, left = (int(rng.integers(0, SIZE - size + 1)) for _ in range(2))
    color = rng.uniform(0, 255, 3).astype(np.float32)
    region = image[top:top + size, left:left + size]
    image[top:top + size, left:left + size] = region * (1 - alpha) + color * alpha
    mask[top:top + size, left:left + size][alpha[..., 0] >= _INK_THRESHOLD] = 1 + digit
  return np.round(image).astype(np.uint8), mask

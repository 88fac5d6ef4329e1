"""A folder of photos for a `folder:` dataset, made offline from scikit-learn's two photographs.

    python -m train.data.photo_folder runs/photo_folder [--per_class 40]

Writes DIR/train/<class>/*.jpg and DIR/test/<class>/*.jpg: crops of random size (64 to 160
pixels a side) and aspect ratio of the top and bottom halves of `china.jpg` and `flower.jpg`
(`sklearn.datasets.load_sample_images`, 427x640 each), four classes: china_top, china_bottom,
flower_top, flower_bottom. Training crops lie in the left two thirds of each photograph, test
crops in the right third, so no pixel is in both splits. A quarter as many test crops as training
crops per class. The same folder every time (a fixed seed).
"""

import argparse
import os
import sys
from typing import Sequence

import numpy as np
from PIL import Image
from sklearn import datasets as sk_datasets

from train.core import cli
from train.core.errors import UserError

SIDES = (64, 160)  # the shortest and longest side of a crop
_SEED = 0


def write_photo_folder(root: str, per_class: int = 40) -> dict[str, int]:
  """Writes the folder (see the module docstring); returns the number of files per split."""
  if per_class < 4:
    raise UserError(f'--per_class={per_class}: expected at least 4 (a quarter as many are test '
                    'images).')
  if os.path.exists(root) and os.listdir(root):
    raise UserError(f'{root} exists and is not empty: give a new folder.')
  sample = sk_datasets.load_sample_images()
  rng = np.random.default_rng(_SEED)
  counts = {'train': 0, 'test': 0}
  for photo, filename in zip(sample.images, sample.filenames):
    name = os.path.splitext(os.path.basename(filename))[0]
    height, width = photo.shape[:2]
    split_column = width * 2 // 3
    for half, rows in (('top', (0, height // 2)), ('bottom', (height // 2, height))):
      for split, columns, count in (('train', (0, split_column), per_class),
                                    ('test', (split_column, width), per_class // 4)):
        folder = os.path.join(root, split, f'{name}_{half}')
        os.makedirs(folder)
        region = photo[rows[0]:rows[1], columns[0]:columns[1]]
        for i in range(count):
          Image.fromarray(_random_crop(region, rng)).save(os.path.join(folder, f'{i}.jpg'),
                                                          quality=95)
        counts[split] += count
  return counts


def _random_crop(region: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """A crop of `region` whose sides are in SIDES (at most the region's)."""
  height, width = (min(rng.integers(SIDES[0], SIDES[1] + 1), side) for side in region.shape[:2])
  top = rng.integers(0, region.shape[0] - height + 1)
  left = rng.integers(0, region.shape[1] - width + 1)
  return region[top:top + height, left:left + width]


def main(argv: Sequence[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('folder', help='the folder to write (new or empty)')
  parser.add_argument('--per_class', type=int, default=40, help='training images per class')
  args = parser.parse_args(argv)
  try:
    counts = write_photo_folder(args.folder, args.per_class)
  except UserError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(cli.EXIT_USER_ERROR)
  print(f'Wrote {counts["train"]} training and {counts["test"]} test images of 4 classes to '
        f'{args.folder}')


if __name__ == '__main__':
  main()

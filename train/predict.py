"""Classify image files with a trained classifier: `python -m train.predict --workdir DIR IMAGES`.

    python -m train.predict --workdir runs/digits_cnn my_digit.png more_digits/ [--top_k 3]

Loads the best checkpoint (by eval accuracy) of the `train.classify` run in DIR, preprocesses
each image exactly as that run's eval pipeline does (decode to the dataset's channels, resize to
the model's input size, rescale, normalize with the run's statistics) and prints one line per
image: its path and the top-k classes with their probabilities. Folders are searched
recursively for .png, .jpg, .jpeg, .bmp and .gif files.
"""

import argparse
import os
import sys
from typing import Sequence

import jax
import numpy as np
import tensorflow as tf

from train.core import cli, trained
from train.core.errors import UserError
from train.data import pipeline as input_pipeline

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.gif')


def find_images(paths: Sequence[str]) -> list[str]:
  """The files named, and the image files under the folders named, in sorted order."""
  found = []
  for path in paths:
    if os.path.isdir(path):
      found += sorted(os.path.join(root, name) for root, _, names in os.walk(path)
                      for name in names if name.lower().endswith(IMAGE_EXTENSIONS))
    elif os.path.isfile(path):
      found.append(path)
    else:
      raise UserError(f'{path}: no such file or folder.')
  if not found:
    raise UserError(f'no images ({", ".join(IMAGE_EXTENSIONS)}) found in {", ".join(paths)}.')
  return found


def load_images(classifier: trained.TrainedClassifier, paths: Sequence[str]) -> np.ndarray:
  """The model's input for each file, (N, H, W, C) float32, as the eval pipeline makes it."""
  images = []
  for path in paths:
    with open(path, 'rb') as f:
      data = f.read()
    try:
      images.append(input_pipeline.preprocess_for_prediction(classifier.config.data, data))
    except tf.errors.InvalidArgumentError:
      raise UserError(f'{path}: not a readable image (PNG, JPEG, BMP or GIF).') from None
  return np.stack(images)


def probabilities(classifier: trained.TrainedClassifier, images: np.ndarray,
                  batch_size: int = 256) -> np.ndarray:
  """Softmax of the model's logits (eval mode), (N, num_classes) float32."""
  apply = jax.jit(lambda variables, x: jax.nn.softmax(
      classifier.model.apply(variables, x, train=False).astype(np.float32)))
  size = min(batch_size, len(images))
  chunks = []
  for start in range(0, len(images), size):
    chunk = images[start:start + size]
    # Padded to one batch shape, so the model compiles once.
    padded = np.concatenate([chunk, np.zeros((size - len(chunk), *chunk.shape[1:]),
                                             chunk.dtype)])
    chunks.append(np.asarray(apply(classifier.variables, padded))[:len(chunk)])
  return np.concatenate(chunks)


def predict(workdir: str, paths: Sequence[str], top_k: int = 3) -> list[str]:
  """One line per image: `path: class prob, class prob, ...` (top_k most probable classes)."""
  files = find_images(paths)
  classifier = trained.load_classifier(workdir)
  probs = probabilities(classifier, load_images(classifier, files))
  names = classifier.info.class_names
  lines = []
  for path, p in zip(files, probs):
    top = np.argsort(-p, kind='stable')[:top_k]
    lines.append(f'{path}: ' + ', '.join(f'{names[i]} {p[i]:.4f}' for i in top))
  return lines


def main(argv: Sequence[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--workdir', required=True, help='the workdir of a train.classify run')
  parser.add_argument('--top_k', type=int, default=3, help='classes to print per image')
  parser.add_argument('images', nargs='+', help='image files and folders of them')
  args = parser.parse_args(argv)
  try:
    if args.top_k < 1:
      raise UserError(f'--top_k={args.top_k}: expected at least 1.')
    for line in predict(args.workdir, args.images, args.top_k):
      print(line)
  except UserError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(cli.EXIT_USER_ERROR)


if __name__ == '__main__':
  main()

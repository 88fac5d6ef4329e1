"""Classify or segment image files with a trained model, or classify with pretrained weights.

    python -m train.predict --workdir runs/digits_cnn my_digit.png more_digits/ [--top_k 3]
    python -m train.predict --model resnet50 --weights resnet50.pth photo.jpg [--top_k 5]

`--workdir` loads the best checkpoint (by eval accuracy) of the `train.classify` run in DIR and
preprocesses each image exactly as that run's eval pipeline does (decode to the dataset's
channels, resize to the model's input size, rescale, normalize with the run's statistics).
`--model`/`--weights` loads a weight file with `zoo.load_pretrained` and preprocesses as those
weights expect (`zoo.pretrained_config`: resize the shorter side, centre-crop by the crop
fraction, normalize by the weights' mean/std), then names the ImageNet classes. One line per
image: its path and the top-k classes with their probabilities. Folders are searched
recursively for .png, .jpg, .jpeg, .bmp and .gif files.

    python -m train.predict --workdir runs/seg_resize scene.png --output masks/

On a `train.segment` run it writes each image's mask PNG and colour overlay into the --output
folder instead (train/segment_predict.py).
"""

import argparse
import os
import sys
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import numpy as np
import tensorflow as tf

import zoo
from train import segment_predict
from train.core import cli, trained
from train.core.errors import UserError
from train.data import pipeline as input_pipeline
from train.data import pretrained_input

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


def read_images(paths: Sequence[str], preprocess: Callable[[bytes], np.ndarray]) -> np.ndarray:
  """`preprocess` of each file's contents, stacked: (N, H, W, C) float32."""
  images = []
  for path in paths:
    with open(path, 'rb') as f:
      data = f.read()
    try:
      images.append(preprocess(data))
    except tf.errors.InvalidArgumentError:
      raise UserError(f'{path}: not a readable image (PNG, JPEG, BMP or GIF).') from None
  return np.stack(images)


def load_images(classifier: trained.TrainedClassifier, paths: Sequence[str]) -> np.ndarray:
  """The model's input for each file, (N, H, W, C) float32, as the eval pipeline makes it."""
  return read_images(paths, lambda data: input_pipeline.preprocess_for_prediction(
      classifier.config.data, data))


def probabilities(model: nn.Module, variables: dict[str, Any], images: np.ndarray,
                  batch_size: int = 256) -> np.ndarray:
  """Softmax of the model's logits (eval mode), (N, num_classes) float32."""
  apply = jax.jit(lambda variables, x: jax.nn.softmax(
      model.apply(variables, x, train=False).astype(np.float32)))
  size = min(batch_size, len(images))
  chunks = []
  for start in range(0, len(images), size):
    chunk = images[start:start + size]
    # Padded to one batch shape, so the model compiles once.
    padded = np.concatenate([chunk, np.zeros((size - len(chunk), *chunk.shape[1:]),
                                             chunk.dtype)])
    chunks.append(np.asarray(apply(variables, padded))[:len(chunk)])
  return np.concatenate(chunks)


def top_classes(files: Sequence[str], probs: np.ndarray, names: Sequence[str],
                top_k: int) -> list[str]:
  """One line per image: `path: class prob, class prob, ...` (top_k most probable classes)."""
  lines = []
  for path, p in zip(files, probs):
    top = np.argsort(-p, kind='stable')[:top_k]
    lines.append(f'{path}: ' + ', '.join(f'{names[i]} {p[i]:.4f}' for i in top))
  return lines


def predict(workdir: str, paths: Sequence[str], top_k: int = 3) -> list[str]:
  """The top_k classes of each image by the best checkpoint of the run in `workdir`."""
  files = find_images(paths)
  classifier = trained.load_classifier(workdir)
  probs = probabilities(classifier.model, classifier.variables, load_images(classifier, files))
  return top_classes(files, probs, classifier.info.class_names, top_k)


def predict_pretrained(model_name: str, weights: str, paths: Sequence[str],
                       top_k: int = 5) -> list[str]:
  """The top_k classes of each image by `model_name` with the weight file `weights`, the images
  preprocessed as those weights expect (Keras' preprocess_input + decode_predictions)."""
  files = find_images(paths)
  try:
    model, variables, config = zoo.load_pretrained(model_name, weights, with_config=True)
  except ValueError as e:  # ConversionError, or an unknown model name.
    raise UserError(f'--model={model_name} --weights={weights}: {e}') from None
  images = read_images(files, lambda data: pretrained_input.preprocess_file(data, config))
  names = config.class_names() or [str(i) for i in range(config.num_classes)]
  return top_classes(files, probabilities(model, variables, images), names, top_k)


def main(argv: Sequence[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  source = parser.add_mutually_exclusive_group(required=True)
  source.add_argument('--workdir', help='the workdir of a train.classify or train.segment run')
  source.add_argument('--model', help='a zoo model name (with --weights), e.g. resnet50')
  parser.add_argument('--weights', help='a weight file for --model (.pth, .safetensors, .h5, '
                      '.msgpack; see docs/weights.md)')
  parser.add_argument('--top_k', type=int, default=None,
                      help='classes to print per image (default 3 with --workdir, 5 with --model)')
  parser.add_argument('--output', default='',
                      help='segmentation runs: the folder to write masks and overlays into')
  parser.add_argument('images', nargs='+', help='image files and folders of them')
  args = parser.parse_args(argv)
  try:
    if args.top_k is not None and args.top_k < 1:
      raise UserError(f'--top_k={args.top_k}: expected at least 1.')
    if args.model:
      if not args.weights:
        raise UserError(f'--model={args.model} needs --weights FILE (the pretrained weights).')
      lines = predict_pretrained(args.model, args.weights, args.images, args.top_k or 5)
    else:
      if args.weights:
        raise UserError('--weights goes with --model; a --workdir run has its own checkpoint.')
      if segment_predict.is_segmentation_run(args.workdir):
        lines = segment_predict.predict_masks(args.workdir, find_images(args.images), args.output)
      else:
        lines = predict(args.workdir, args.images, args.top_k or 3)
    for line in lines:
      print(line)
  except UserError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(cli.EXIT_USER_ERROR)


if __name__ == '__main__':
  main()

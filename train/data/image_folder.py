"""A folder of images as a data source: `folder:PATH` with one subfolder of images per class.

Either PATH/<class>/... (split into train and test here, stratified and deterministic), or
PATH/<train split>/<class>/... and PATH/<eval split>/<class>/.... Every file is checked up front,
so a bad one stops the run before training instead of in the middle of it.
"""

import concurrent.futures
import dataclasses
import os

import numpy as np
import tensorflow as tf
from PIL import Image

from train.core.errors import UserError
from train.data import holdout

# What `tf.io.decode_image` reads.
_FORMATS = ('JPEG', 'PNG', 'BMP', 'GIF')
_GRAY_MODES = ('1', 'L', 'LA', 'I', 'I;16', 'F')
# Fixed, so the split and the order of the files never change between runs or processes.
_SPLIT_SEED = 0


@dataclasses.dataclass(frozen=True)
class _File:
  path: str
  label: int
  size: tuple[int, int]  # (height, width)
  gray: bool


class ImageFolder:
  """Class names, split sizes, per-process reading and decoding of an image folder."""

  def __init__(self, root: str, *, train_split: str, eval_split: str, test_fraction: float,
               validation_split: str = ''):
    """`validation_split`: the name of a third split subfolder (e.g. 'val'), or '' for none."""
    self.name = f'folder:{root}'
    root = os.path.expanduser(root)
    if not os.path.isdir(root):
      raise UserError(f'data.dataset={self.name!r}: {root} is not a folder.')
    splits = (train_split, eval_split) + ((validation_split,) if validation_split else ())
    split_dirs = [os.path.join(root, s) for s in splits]
    if any(map(os.path.isdir, split_dirs)):
      missing = [d for d in split_dirs if not os.path.isdir(d)]
      if missing:
        raise UserError(f'{missing[0]} does not exist, but {root} has another split folder: '
                        'give it every split (with the class subfolders in each), or set '
                        'data.train_split / data.eval_split / data.validation_split to their '
                        'names.')
      self.class_names = _class_names(split_dirs[0])
      files = {split: _scan(folder, self.class_names)
               for split, folder in zip(splits, split_dirs)}
    elif validation_split:
      raise UserError(f'data.validation_split={validation_split!r}: {root} has no split '
                      'subfolders; give it train/, test/ and that folder, or set '
                      'data.validation_split to a fraction of the training images (e.g. 0.1).')
    else:
      self.class_names = _class_names(root)
      files = _stratified_split(_scan(root, self.class_names), train_split, eval_split,
                                test_fraction, root)
    everything = [f for split_files in files.values() for f in split_files]
    # Grayscale GIFs still decode to 3 channels in TF, so GIFs count as color.
    channels = 1 if all(f.gray for f in everything) else 3
    sizes = {f.size for f in everything}
    height, width = sizes.pop() if len(sizes) == 1 else (None, None)
    self.image_shape = (height, width, channels)
    # A fixed shuffle, so classes are mixed across processes' shares and in shuffle buffers.
    rng = np.random.default_rng(_SPLIT_SEED)
    self._files = {s: [split_files[i] for i in rng.permutation(len(split_files))]
                   for s, split_files in files.items()}

  def num_examples(self, split: str) -> int:
    if split not in self._files:
      raise UserError(f'{self.name} has no split {split!r}; it has {", ".join(self._files)} '
                      '(data.train_split / data.eval_split).')
    return len(self._files[split])

  def read(self, split: str, index: int, count: int) -> tf.data.Dataset:
    """Process `index` of `count`'s share of `split`: {'image': path, 'label'}, fixed order."""
    self.num_examples(split)  # Checks the name.
    share = np.array_split(np.arange(len(self._files[split])), count)[index]
    files = [self._files[split][i] for i in share]
    return tf.data.Dataset.from_tensor_slices({
        'image': tf.constant([f.path for f in files], tf.string),
        'label': tf.constant([f.label for f in files], tf.int64),
    })

  def decode(self, path: tf.Tensor) -> tf.Tensor:
    image = decode_image(tf.io.read_file(path), self.image_shape[-1])
    return tf.ensure_shape(image, self.image_shape)


def decode_image(data: tf.Tensor, channels: int) -> tf.Tensor:
  """A PNG, JPEG, BMP or GIF file's bytes as uint8 (H, W, `channels`).

  TensorFlow decodes BMP and GIF to 3 or 4 channels only, never 1: those are decoded in color
  and converted to grayscale here. PNG and JPEG keep TensorFlow's own conversion.
  """
  if channels != 1:
    return tf.io.decode_image(data, channels=channels, expand_animations=False)
  png_or_jpeg = tf.logical_or(tf.io.is_jpeg(data),
                              tf.equal(tf.strings.substr(data, 0, 4), b'\x89PNG'))

  def from_color():
    rgb = tf.io.decode_image(data, channels=3, expand_animations=False)
    gray = tf.image.rgb_to_grayscale(tf.cast(rgb, tf.float32))
    return tf.cast(tf.clip_by_value(tf.round(gray), 0, 255), tf.uint8)

  return tf.cond(png_or_jpeg,
                 lambda: tf.io.decode_image(data, channels=1, expand_animations=False),
                 from_color)


def _class_names(folder: str) -> tuple[str, ...]:
  names = tuple(sorted(e.name for e in os.scandir(folder)
                       if e.is_dir() and not e.name.startswith('.')))
  if not names:
    raise UserError(f'{folder} has no class subfolders: put the images of each class in '
                    f'{os.path.join(folder, "<class name>")}/.')
  return names


def _scan(folder: str, class_names: tuple[str, ...]) -> list[_File]:
  """Every image under folder/<class>/ (recursively), checked; sorted by path."""
  present = sorted(e.name for e in os.scandir(folder)
                   if e.is_dir() and not e.name.startswith('.'))
  unknown = sorted(set(present) - set(class_names))
  if unknown:
    raise UserError(f'{folder} has class folder(s) {", ".join(unknown)} that the training '
                    'split lacks: add training images for them or remove them.')
  paths, labels = [], []
  for label, name in enumerate(class_names):
    class_paths = _image_paths(os.path.join(folder, name))
    if name in present and not class_paths:
      raise UserError(f'{os.path.join(folder, name)} has no images: add some or remove it.')
    paths += class_paths
    labels += [label] * len(class_paths)
  # Decoding is most of the time and PIL lets go of the GIL while it decodes.
  with concurrent.futures.ThreadPoolExecutor() as pool:
    checked = list(pool.map(inspect_image, paths))
  return [_File(p, label, size, gray) for p, label, (size, gray) in zip(paths, labels, checked)]


def _image_paths(folder: str) -> list[str]:
  paths = []
  for parent, dirs, names in os.walk(folder):
    dirs[:] = [d for d in dirs if not d.startswith('.')]
    # Hidden files are system clutter (.DS_Store), not images.
    paths += [os.path.join(parent, n) for n in names if not n.startswith('.')]
  return sorted(paths)


def inspect_image(path: str) -> tuple[tuple[int, int], bool]:
  """Decodes the file fully; returns ((height, width), grayscale). UserError if it can't."""
  try:
    with Image.open(path) as image:
      image.load()
      image_format, mode, (width, height) = image.format, image.mode, image.size
  except Exception as e:  # PIL raises many types for bad files; all mean the same to a user.
    raise UserError(f'{path} is not a readable image ({type(e).__name__}: {e}): '
                    'replace or remove it.') from e
  if image_format not in _FORMATS:
    raise UserError(f'{path} is a {image_format} image; the pipeline reads '
                    f'{", ".join(_FORMATS)}: convert or remove it.')
  if image_format == 'BMP':
    _check_tensorflow_reads(path)
  return (height, width), mode in _GRAY_MODES and image_format != 'GIF'


def _check_tensorflow_reads(path: str) -> None:
  """BMP variants TensorFlow's decoder lacks (1-bit, compressed) pass PIL: try the real one."""
  try:
    decode_image(tf.io.read_file(path), 3)
  except tf.errors.InvalidArgumentError as e:
    reason = e.message.splitlines()[0] if e.message else 'unsupported'
    raise UserError(f'{path} is a BMP variant TensorFlow cannot read ({reason}): convert it to '
                    'PNG or a 24-bit BMP, or remove it.') from None


def _stratified_split(files: list[_File], train_split: str, eval_split: str,
                      test_fraction: float, root: str) -> dict[str, list[_File]]:
  """A fixed `test_fraction` of each class (rounded) for the eval split, the rest for training."""
  if not (isinstance(test_fraction, (int, float)) and 0 < test_fraction < 1):
    raise UserError(f'data.folder_test_fraction={test_fraction!r}: expected a fraction in (0, 1).')
  test = holdout.stratified_mask(np.array([f.label for f in files]), test_fraction)
  if not test.any():
    raise UserError(f'data.folder_test_fraction={test_fraction} leaves no test images in {root} '
                    f'({len(files)} images): raise it, or add {train_split}/ and {eval_split}/ '
                    'subfolders.')
  return {train_split: [f for f, held in zip(files, test) if not held],
          eval_split: [f for f, held in zip(files, test) if held]}

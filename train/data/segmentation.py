"""Input pipeline for semantic segmentation: images with per-pixel class masks.

Sources (`data.dataset`):
- a TFDS dataset with an image and a mask feature (`data.image_key`, `data.mask_key`), e.g.
  the offline `digit_scenes` (train/digit_scenes.py) or `oxford_iiit_pet`, through `tfds.load`;
- `folder:PATH`, a folder of images with a parallel folder of mask PNGs of the same names:
  PATH/images/x.jpg and PATH/masks/x.png (split here, deterministically, by
  `data.folder_test_fraction`), or PATH/<split>/images and PATH/<split>/masks for each split.
  A mask is single-channel (grayscale or palette PNG; each value a class index) or, with
  `data.palette`, a colour PNG whose colours are those of the classes. Every pair is checked
  before training; the first bad one stops the run with one line naming the file.

A batch is {'image': float32 (B, H, W, C), 'label': int32 (B, H, W)} and, in evaluation,
'mask': (B,) bool, False on padding. Label values: 0..num_classes-1, or `data.ignore_label` for
pixels that count nowhere (unlabeled, or outside the image after augmentation). Raw mask values
go through `data.label_map` (raw value -> class or ignore label) when one is given; in a TFDS
dataset a value without a class is ignored (in a folder it is an error). Streaming, sharding,
exact resume and padded evaluation are those of the classification pipeline
(`input_pipeline.train_batches`, `eval_batches`).
"""

import concurrent.futures
import dataclasses
import functools
import io
import os
from typing import Iterator

import ml_collections
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image

from configs.segment_base import AUGMENT  # the `config.data` fields
from configs.segment_base import data as default_config
from train.core.errors import UserError
from train.data import image_folder, tfds_source
from train.data import pipeline as input_pipeline

# Mask colours and label values are 8-bit.
_NUM_VALUES = 256


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  class_names: tuple[str, ...]  # Index = class; background included.
  image_shape: tuple[int, int, int]  # (height, width, channels) of the batches.
  num_train: int
  num_eval: int

  @property
  def num_classes(self) -> int:
    return len(self.class_names)


def complete(data_config) -> ml_collections.ConfigDict:
  """`data_config` laid over `default_config()`, checked."""
  config = default_config()
  unknown = sorted(set(data_config) - set(config))
  if unknown:
    raise UserError(f'unknown field(s) data.{", data.".join(unknown)}; known: '
                    f'{", ".join(config)}.')
  config.update(data_config.to_dict() if hasattr(data_config, 'to_dict') else data_config)
  augment = dict(config.augment)
  if set(augment) - set(AUGMENT):
    raise UserError(f'data.augment has unknown field(s) {sorted(set(augment) - set(AUGMENT))}; '
                    f'known: {", ".join(AUGMENT)}.')
  config.augment = {**AUGMENT, **augment}
  low, high = config.augment['scale']
  if not 0 < low <= high:
    raise UserError(f'data.augment.scale={tuple(config.augment["scale"])!r}: expected '
                    '(low, high) with 0 < low <= high.')
  if not 0 <= config.ignore_label < _NUM_VALUES:
    raise UserError(f'data.ignore_label={config.ignore_label}: expected a value in 0..255.')
  return config


def get_dataset_info(data_config) -> DatasetInfo:
  config = complete(data_config)
  source = _source(config)
  return DatasetInfo(_class_names(source, config), input_pipeline.output_shape(source, config),
                     source.num_examples(config.train_split),
                     source.num_examples(config.eval_split))


def make_train_iterator(data_config, *, seed: int, global_batch_size: int,
                        start_step: int = 0) -> Iterator[dict[str, np.ndarray]]:
  """Endless augmented batches {'image', 'label'} of this process's share; see
  `input_pipeline.make_train_iterator` for determinism and resume."""
  config = complete(data_config)
  source = _source(config)
  return input_pipeline.train_batches(
      source, config, _decoder(source, config), _batch_finisher(config), seed=seed,
      global_batch_size=global_batch_size, start_step=start_step)


def make_eval_iterator(data_config, *, global_batch_size: int, split: str | None = None
                       ) -> Iterator[dict[str, np.ndarray]]:
  """One padded pass {'image', 'label', 'mask'} over this process's share of `split` (default
  the eval split)."""
  config = complete(data_config)
  source = _source(config)
  return input_pipeline.eval_batches(source, config, _preprocessor(source, config),
                                     global_batch_size=global_batch_size,
                                     split=split or config.eval_split)


def validation_split(data_config) -> None:
  """Segmentation selects checkpoints on its eval split: no validation split."""
  del data_config
  return None


def prepare_image(data_config, image: bytes) -> np.ndarray:
  """An image file's contents as the eval pipeline hands it to the model: float32 (H, W, C).
  Bytes that are no image raise `tf.errors.InvalidArgumentError`."""
  config = complete(data_config)
  shape = input_pipeline.output_shape(_source(config), config)
  image = tf.io.decode_image(image, channels=shape[-1], expand_animations=False)
  return _normalize(config, _resize(tf.image.convert_image_dtype(image, tf.float32),
                                    shape[:2], 'bilinear')).numpy()


def displayable(data_config, images: np.ndarray) -> np.ndarray:
  """Batch images (N, H, W, C) back on the [0, 1] scale, as RGB (N, H, W, 3), for grids."""
  config = complete(data_config)
  if config.mean:
    images = images * np.asarray(config.std, np.float32) + np.asarray(config.mean, np.float32)
  return np.broadcast_to(images, (*images.shape[:3], 3)) if images.shape[-1] == 1 else images


def augment_pair(image: tf.Tensor, labels: tf.Tensor, seed: tf.Tensor, *, flip: bool,
                 scale: tuple[float, float], ignore_label: int) -> tuple[tf.Tensor, tf.Tensor]:
  """Random zoom (image bilinear, labels nearest), crop back to the size, left-right flip.

  `image` (H, W, C) float, `labels` (H, W, 1) int; one seed moves both the same way. Zooming
  out pads the image with zeros and the labels with `ignore_label`.
  """
  height, width, channels = image.shape
  seeds = tf.random.experimental.stateless_split(seed, num=3)
  low, high = scale
  if (low, high) != (1.0, 1.0):
    factor = tf.random.stateless_uniform([], seeds[0], low, high)
    size = tf.cast(tf.round(factor * tf.constant([height, width], tf.float32)), tf.int32)
    image = tf.image.resize(image, size, 'bilinear')
    labels = tf.image.resize(labels, size, 'nearest')
    pad = tf.maximum(tf.constant([height, width]) - size, 0)
    paddings = tf.stack([pad // 2, pad - pad // 2], axis=1)
    image = tf.pad(image, tf.concat([paddings, [[0, 0]]], 0))
    labels = tf.pad(labels, tf.concat([paddings, [[0, 0]]], 0), constant_values=ignore_label)
  # Cropped and flipped as one tensor, so image and labels cannot drift apart.
  both = tf.concat([image, tf.cast(labels, tf.float32)], axis=-1)
  if (low, high) != (1.0, 1.0):
    both = tf.image.stateless_random_crop(both, [height, width, channels + 1], seeds[1])
  if flip:
    both = tf.image.stateless_random_flip_left_right(both, seeds[2])
  both = tf.ensure_shape(both, (height, width, channels + 1))
  return both[..., :channels], tf.cast(tf.round(both[..., channels:]), labels.dtype)


def _decoder(source, config):
  """A function example -> {'image': float32 in [0, 1], 'label': int32 (H, W, 1)} at the output
  shape."""
  shape = input_pipeline.output_shape(source, config)
  table = tf.constant(_label_table(config, len(_class_names(source, config))), tf.int32)

  def decode(example):
    image = tf.image.convert_image_dtype(source.decode_image(example['image']), tf.float32)
    labels = tf.gather(table, tf.cast(source.decode_mask(example['mask']), tf.int32))
    return {'image': _resize(image, shape[:2], 'bilinear'),
            'label': _resize(labels, shape[:2], 'nearest')}

  return decode


def _preprocessor(source, config):
  """A function example -> {'image': float32 normalized, 'label': int32 (H, W)}."""
  decode = _decoder(source, config)

  def preprocess(example):
    decoded = decode(example)
    return {'image': _normalize(config, decoded['image']), 'label': decoded['label'][..., 0]}

  return preprocess


def _batch_finisher(config) -> input_pipeline.Finisher:
  """Training batches: each pair augmented, seeded by (key, its position in the stream), then
  normalized."""
  def augment(image, labels, position, key):
    return augment_pair(image, labels, tf.random.experimental.stateless_fold_in(key, position),
                        flip=config.augment['flip'], scale=tuple(config.augment['scale']),
                        ignore_label=config.ignore_label)

  def finish(batch, positions, key):
    images, labels = tf.map_fn(
        lambda example: augment(*example, key), (batch['image'], batch['label'], positions),
        fn_output_signature=(tf.TensorSpec(batch['image'].shape[1:], tf.float32),
                             tf.TensorSpec(batch['label'].shape[1:], tf.int32)))
    return {'image': _normalize(config, images), 'label': labels[..., 0]}

  return finish


def _resize(x: tf.Tensor, size: tuple[int, int], method: str) -> tf.Tensor:
  if tuple(x.shape[:2]) == tuple(size):
    return x
  out = tf.image.resize(x, size, method, antialias=method == 'bilinear')
  return tf.ensure_shape(out, (*size, x.shape[-1]))


def _normalize(config, image: tf.Tensor) -> tf.Tensor:
  if not config.mean:
    return image
  channels = image.shape[-1]
  mean, std = np.asarray(config.mean, np.float32), np.asarray(config.std, np.float32)
  if mean.shape != (channels,) or std.shape != (channels,) or not np.all(std > 0):
    raise UserError(f'data.mean and data.std need {channels} value(s) each (std > 0, on the '
                    f'[0, 1] scale); got mean={tuple(config.mean)!r}, std={tuple(config.std)!r}.')
  return (image - mean) / std


def _label_table(config, num_classes: int) -> np.ndarray:
  """(256,) int32: the label of each raw mask value (ignore_label where it has no class)."""
  table = np.full(_NUM_VALUES, config.ignore_label, np.int32)
  if not config.label_map:
    table[:num_classes] = np.arange(num_classes)
    return table
  for raw, label in enumerate(config.label_map):
    if not (0 <= label < num_classes or label == config.ignore_label):
      raise UserError(f'data.label_map[{raw}]={label}: expected a class in 0..{num_classes - 1} '
                      f'or the ignore label {config.ignore_label}.')
  table[:len(config.label_map)] = config.label_map
  return table


def _class_names(source, config) -> tuple[str, ...]:
  names = tuple(config.class_names) or source.class_names
  if not names:
    raise UserError(f'{source.name} does not name its classes: set data.class_names to the '
                    "name of each class, in label order (e.g. ('background', 'cat')).")
  return names


def _source(config):
  return _cached_source(config.dataset, config.data_dir, config.image_key, config.mask_key,
                        config.train_split, config.eval_split, config.folder_test_fraction,
                        tuple(map(tuple, config.palette)), tuple(config.label_map),
                        config.ignore_label, len(config.class_names))


@functools.lru_cache(maxsize=8)
def _cached_source(dataset, data_dir, image_key, mask_key, train_split, eval_split,
                   test_fraction, palette, label_map, ignore_label, num_classes):
  if dataset.startswith(input_pipeline.FOLDER_PREFIX):
    if not num_classes:
      raise UserError(f'data.dataset={dataset!r}: set data.class_names to the name of each '
                      "class, in label order (e.g. ('background', 'road', 'car')).")
    return MaskFolder(dataset[len(input_pipeline.FOLDER_PREFIX):], train_split=train_split,
                      eval_split=eval_split, test_fraction=test_fraction, palette=palette,
                      num_values=len(label_map) or num_classes, ignore_label=ignore_label)
  return TfdsMasks(dataset, data_dir, image_key, mask_key)


class TfdsMasks:
  """A TFDS dataset with an image and a segmentation mask per example."""

  def __init__(self, name: str, data_dir: str, image_key: str, mask_key: str):
    self.name = name
    self._builder = tfds_source.prepared_builder(name, data_dir or None)
    features = self._builder.info.features
    for field, key in (('image_key', image_key), ('mask_key', mask_key)):
      if not isinstance(features[key] if key in features else None, tfds.features.Image):
        images = [k for k in features if isinstance(features[k], tfds.features.Image)]
        raise UserError(f'data.{field}={key!r} is not an image feature of {name}; its image '
                        f'features are {images}.')
    self._keys = (image_key, mask_key)
    self._image, self._mask = features[image_key], features[mask_key]
    # A LabeledImage names its classes; a plain Image does not.
    self.class_names = tuple(getattr(self._mask, 'names', None) or ())
    self.image_shape = self._image.shape

  def num_examples(self, split: str) -> int:
    return int(self._dataset(split).cardinality())

  def read(self, split: str, index: int, count: int) -> tf.data.Dataset:
    """Process `index` of `count`'s share, in a fixed order: {'image', 'mask'}, undecoded."""
    ds = self._dataset(tfds.even_splits(split, n=count, drop_remainder=False)[index])
    image_key, mask_key = self._keys
    return ds.map(lambda ex: {'image': ex[image_key], 'mask': ex[mask_key]})

  def decode_image(self, image: tf.Tensor) -> tf.Tensor:
    return self._image.decode_example(image)

  def decode_mask(self, mask: tf.Tensor) -> tf.Tensor:
    return self._mask.decode_example(mask)

  def _dataset(self, split) -> tf.data.Dataset:
    try:
      return self._builder.as_dataset(
          split=split, shuffle_files=False,
          decoders={key: tfds.decode.SkipDecoding() for key in self._keys})
    except ValueError as e:
      raise UserError(f'{self.name}: {e} (data.train_split / data.eval_split)') from e


@dataclasses.dataclass(frozen=True)
class _Pair:
  image: str  # Path.
  mask: bytes  # The mask as a single-channel PNG of label values.
  gray: bool


class MaskFolder:
  """A folder of images and a parallel folder of masks (see the module docstring)."""

  def __init__(self, root: str, *, train_split: str, eval_split: str, test_fraction: float,
               palette: tuple[tuple[int, int, int], ...], num_values: int, ignore_label: int):
    self.name = f'folder:{root}'
    self.class_names = ()
    root = os.path.expanduser(root)
    if not os.path.isdir(root):
      raise UserError(f'data.dataset={self.name!r}: {root} is not a folder.')
    check = functools.partial(_pair, palette=palette, num_values=num_values,
                              ignore_label=ignore_label)
    if os.path.isdir(os.path.join(root, train_split)):
      pairs = {split: _scan(os.path.join(root, split), check)
               for split in (train_split, eval_split)}
    else:
      if not (isinstance(test_fraction, (int, float)) and 0 < test_fraction < 1):
        raise UserError(f'data.folder_test_fraction={test_fraction!r}: expected a fraction in '
                        '(0, 1).')
      everything = _scan(root, check)
      order = np.random.default_rng(0).permutation(len(everything))
      num_test = max(1, round(len(everything) * test_fraction))
      pairs = {eval_split: [everything[i] for i in order[:num_test]],
               train_split: [everything[i] for i in order[num_test:]]}
    self._pairs = pairs
    sizes = {p.size for split in pairs.values() for p in split}
    self.image_shape = (*(sizes.pop() if len(sizes) == 1 else (None, None)),
                        1 if all(p.pair.gray for s in pairs.values() for p in s) else 3)

  def num_examples(self, split: str) -> int:
    if split not in self._pairs:
      raise UserError(f'{self.name} has no split {split!r}; it has {", ".join(self._pairs)} '
                      '(data.train_split / data.eval_split).')
    return len(self._pairs[split])

  def read(self, split: str, index: int, count: int) -> tf.data.Dataset:
    self.num_examples(split)
    share = np.array_split(np.arange(len(self._pairs[split])), count)[index]
    pairs = [self._pairs[split][i].pair for i in share]
    return tf.data.Dataset.from_tensor_slices({
        'image': tf.constant([p.image for p in pairs], tf.string),
        'mask': tf.constant([p.mask for p in pairs], tf.string)})

  def decode_image(self, path: tf.Tensor) -> tf.Tensor:
    channels = self.image_shape[-1]
    image = tf.io.decode_image(tf.io.read_file(path), channels=channels, expand_animations=False)
    return tf.ensure_shape(image, (None, None, channels))

  def decode_mask(self, png: tf.Tensor) -> tf.Tensor:
    return tf.io.decode_png(png, channels=1)


@dataclasses.dataclass(frozen=True)
class _Checked:
  pair: _Pair
  size: tuple[int, int]


def _scan(folder: str, check) -> list[_Checked]:
  """Every (image, mask) pair of folder/images and folder/masks, checked; sorted by name."""
  images_dir, masks_dir = os.path.join(folder, 'images'), os.path.join(folder, 'masks')
  for d in (images_dir, masks_dir):
    if not os.path.isdir(d):
      raise UserError(f'{d} is not a folder: put the images in {images_dir}/ and a mask PNG of '
                      f'the same name for each in {masks_dir}/.')
  images = {os.path.splitext(n)[0]: os.path.join(images_dir, n)
            for n in sorted(os.listdir(images_dir)) if not n.startswith('.')}
  masks = {os.path.splitext(n)[0]: os.path.join(masks_dir, n)
           for n in sorted(os.listdir(masks_dir)) if not n.startswith('.')}
  for stem, path in images.items():
    if stem not in masks:
      raise UserError(f'{path} has no mask: add {os.path.join(masks_dir, stem)}.png or remove '
                      'the image.')
  for stem, path in masks.items():
    if stem not in images:
      raise UserError(f'{path} has no image of the same name in {images_dir}: add the image or '
                      'remove the mask.')
  if not images:
    raise UserError(f'{images_dir} has no images: add images and their masks.')
  with concurrent.futures.ThreadPoolExecutor() as pool:
    return list(pool.map(lambda stem: check(images[stem], masks[stem]), sorted(images)))


def _pair(image_path: str, mask_path: str, *, palette, num_values: int,
          ignore_label: int) -> _Checked:
  """Checks one pair; the mask becomes a PNG of label values (palette colours mapped)."""
  (height, width), gray = image_folder.inspect_image(image_path)
  try:
    with Image.open(mask_path) as mask:
      mask.load()
      mode, values = mask.mode, np.asarray(mask)
  except Exception as e:  # PIL raises many types for bad files; all mean the same to a user.
    raise UserError(f'{mask_path} is not a readable image ({type(e).__name__}: {e}): replace '
                    'or remove it.') from e
  if values.shape[:2] != (height, width):
    raise UserError(f'{mask_path} is {values.shape[1]}x{values.shape[0]} but its image '
                    f'{image_path} is {width}x{height}: a mask must have its image\'s size.')
  if values.ndim == 3:
    if not palette:
      raise UserError(f'{mask_path} is a colour ({mode}) mask: set data.palette to the (r, g, b) '
                      'of each class, in class order, or save masks as single-channel PNGs of '
                      'class indices.')
    values = _colours_to_labels(values[..., :3], palette, mask_path)
  bad = [v for v in np.unique(values).tolist() if v >= num_values and v != ignore_label]
  if bad:
    raise UserError(f'{mask_path} has label value(s) {bad[:5]}: neither a class (0..'
                    f'{num_values - 1}) nor the ignore label ({ignore_label}); fix the mask, or '
                    'set data.class_names, data.label_map or data.ignore_label.')
  buffer = io.BytesIO()
  Image.fromarray(values.astype(np.uint8), 'L').save(buffer, format='PNG')
  return _Checked(_Pair(image_path, buffer.getvalue(), gray), (height, width))


def _colours_to_labels(rgb: np.ndarray, palette, path: str) -> np.ndarray:
  codes = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]
  lookup = {(r << 16) | (g << 8) | b: label for label, (r, g, b) in enumerate(palette)}
  unknown = sorted(set(np.unique(codes).tolist()) - set(lookup))
  if unknown:
    colour = tuple(int(x) for x in ((unknown[0] >> 16) & 255, (unknown[0] >> 8) & 255,
                                    unknown[0] & 255))
    raise UserError(f'{path} has colour {colour}, which is not in data.palette: add it (in its '
                    "class's position) or fix the mask.")
  labels = np.zeros(codes.shape, np.uint8)
  for code, label in lookup.items():
    labels[codes == code] = label
  return labels

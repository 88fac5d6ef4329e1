"""Input pipeline for image classification: TFDS datasets and image folders, per-process shares.

Each process reads only its share of a split. Training streams are endless, shuffled per epoch
and augmented batch by batch with stateless randomness keyed on (seed, shard, the batch's first
position in the stream), so a stream is a pure function of (config, seed) and resuming at step k
replays nothing but the (cheap, undecoded) reads of the current epoch. A small split is decoded
once, held in memory and shuffled as a whole each epoch. Evaluation is one padded, masked pass in
which every process yields the same number of batches.
"""

import dataclasses
import functools
import json
import logging
import math
from typing import Callable, Iterator, NamedTuple, Protocol

import jax
import ml_collections
import numpy as np
import tensorflow as tf

from configs.common import data as default_config  # the `config.data` fields
from train.core.errors import UserError
from train.data import augment as augment_lib
from train.data import holdout, image_folder, pretrained_input, tfds_source
from zoo.pretrained_config import Preprocessing

try:
  # Before TF touches them (imports don't): the accelerators belong to JAX.
  tf.config.set_visible_devices([], 'GPU')
except RuntimeError:  # Something ran TF ops before this module was imported.
  logging.warning('TensorFlow was initialized before %s was imported; it may hold GPU memory.',
                  __name__)

FOLDER_PREFIX = 'folder:'
# The split a fractional `data.validation_split` holds out of the training split.
HELD_OUT = 'held_out'
NORMALIZATIONS = ('none', 'per_channel', 'featurewise', 'samplewise')
INTERPOLATIONS = ('bilinear', 'bicubic', 'area', 'nearest', 'lanczos3', 'lanczos5', 'gaussian',
                  'mitchellcubic')  # tf.image.resize's methods
# Keras adds this to standard deviations so a constant image or channel does not divide by 0.
_STD_EPSILON = 1e-6
# 'featurewise' statistics come from at most this many training images (the first ones, which
# are in random order: TFDS shuffles when it prepares a dataset, folders are shuffled here).
FEATUREWISE_MAX_EXAMPLES = 10_000


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  num_classes: int
  image_shape: tuple[int, int, int]  # (height, width, channels) of the batches, after resizing.
  num_train: int
  num_eval: int  # of `data.eval_split`
  class_names: tuple[str, ...]
  num_validation: int = 0  # of the validation split; 0 without `data.validation_split`


def get_dataset_info(data_config) -> DatasetInfo:
  config = _complete(data_config)
  source = _source(config)
  validation = validation_split(config)
  return DatasetInfo(
      num_classes=len(source.class_names),
      image_shape=output_shape(source, config),
      num_train=source.num_examples(config.train_split),
      num_eval=source.num_examples(config.eval_split),
      class_names=tuple(source.class_names),
      num_validation=source.num_examples(validation) if validation else 0,
  )


def validation_split(data_config) -> str | None:
  """The split evaluations during training use when `data.validation_split` is set: its name,
  or HELD_OUT for a fraction of the training split. None when it is not set."""
  value = _complete(data_config).validation_split
  if value is None:
    return None
  return value if isinstance(value, str) else HELD_OUT


def input_preprocessing(data_config) -> Preprocessing:
  """What the model sees of an RGB image x in [0, 1]: the channels reversed when `data.bgr`,
  then (x - mean) / std, with `mean` and `std` in that (the model's) channel order.

  For code that feeds a model images from elsewhere (e.g. generated ones), the same way the
  pipeline does. 'samplewise' has no such constants (each image uses its own): UserError.
  """
  config = _complete(data_config)
  shape = output_shape(_source(config), config)
  if config.normalization == 'samplewise':
    raise UserError("data.normalization='samplewise' standardizes each image by itself; it has "
                    'no fixed statistics.')
  mean, std = _fixed_stats(config, shape)
  # The pipeline normalizes in RGB order, then reverses the channels: the same as reversing
  # first and normalizing by the reversed statistics.
  order = slice(None, None, -1) if config.bgr else slice(None)
  return Preprocessing(mean=tuple(map(float, mean[order])), std=tuple(map(float, std[order])),
                       bgr=config.bgr)


def graph_fn(fn: Callable) -> Callable:
  """`fn` for `Dataset.map` traced as it is, without AutoGraph: the pipeline's functions branch on
  config values only, never on tensors, and converting them cost about as much as tracing them
  (half of building a small run's pipelines)."""
  return tf.autograph.experimental.do_not_convert(fn)


def make_train_iterator(data_config, *, seed: int, global_batch_size: int,
                        start_step: int = 0) -> Iterator[dict[str, np.ndarray]]:
  """Endless augmented batches of this process's share: {'image', 'label'}.

  Deterministic given (config, seed); with `start_step=k` it yields exactly what a fresh
  iterator yields from its k-th batch on. The split is read as `data.shards` streams (0: one
  per process), each a fixed slice of every global batch, and each process reads only its
  own streams: with a fixed number of shards the global batches do not depend on how many
  processes read them.
  """
  config = _complete(data_config)
  source = _source(config)
  build = lambda: train_dataset(
      source, config, _decoder(source, config), _batch_finisher(source, config), seed=seed,
      global_batch_size=global_batch_size, start_step=start_step)
  return _reused(build, source, config, 'train', seed, global_batch_size,
                 start_step).as_numpy_iterator()


# (batch of decoded examples, their positions in the stream, the stream's augmentation key)
# -> the batch the model sees.
Finisher = Callable[[dict[str, tf.Tensor], tf.Tensor, tf.Tensor], dict[str, tf.Tensor]]


def train_batches(source: 'Source', config, decode, finish: Finisher, *, seed: int,
                  global_batch_size: int, start_step: int = 0
                  ) -> Iterator[dict[str, np.ndarray]]:
  """`make_train_iterator` for any task: `decode(example)` decodes one example of `source`, the
  same every epoch (kept in memory when the split is small), `finish` augments and normalizes
  each batch; `config` has the fields `train_split`, `shards` and `shuffle_buffer`."""
  return train_dataset(source, config, decode, finish, seed=seed,
                       global_batch_size=global_batch_size,
                       start_step=start_step).as_numpy_iterator()


def train_dataset(source: 'Source', config, decode, finish: Finisher, *, seed: int,
                  global_batch_size: int, start_step: int = 0) -> tf.data.Dataset:
  """The dataset `train_batches` iterates."""
  _local_batch_size(global_batch_size)
  count = jax.process_count()
  shards = config.shards or count
  if shards % count or global_batch_size % shards:
    raise UserError(f'data.shards={shards} must be a multiple of the number of processes '
                    f'({count}) and divide the global batch size ({global_batch_size}); '
                    f'set --config.data.shards accordingly.')
  per_process = shards // count
  local = range(jax.process_index() * per_process, (jax.process_index() + 1) * per_process)
  batch_size = global_batch_size // shards
  split = source.read(config.train_split, 0, 1)
  decoded = split.map(graph_fn(decode), num_parallel_calls=tf.data.AUTOTUNE)
  size = int(split.cardinality())
  if size * _example_bytes(decoded.element_spec) <= IN_MEMORY_MAX_BYTES:
    bounds = {s: (s * size // shards, (s + 1) * size // shards) for s in local}
    for shard, (low, high) in bounds.items():
      if low == high:
        raise _empty_shard(source, config, shard, shards)
    ds = _in_memory_batches(decoded, size, bounds, config.shuffle_buffer > 1, finish, seed,
                            batch_size, start_step)
  else:
    streams = [_streamed_shard(source, config, decode, finish, seed, shard, shards, batch_size,
                               start_step) for shard in local]
    ds = streams[0] if per_process == 1 else tf.data.Dataset.zip(tuple(streams)).map(_concat)
  return ds.prefetch(tf.data.AUTOTUNE)


# A training split whose decoded images take at most this many bytes is decoded once and held in
# memory, and its batches are gathered from it: decoding every epoch, and tf.data's per-example
# overhead, cost more CPU than small models' steps (64 PNG digits of 8x8: about 22 ms of pipeline
# CPU per batch streamed, against a 24 ms step on 2 cores).
IN_MEMORY_MAX_BYTES = 1 << 30


def _shard_keys(seed: int, shard: int) -> tuple[tf.Tensor, tf.Tensor]:
  """(shuffle key, augmentation key) of one shard."""
  key = tf.constant([seed, shard], tf.int64)
  return tuple(tf.random.experimental.stateless_fold_in(key, i) for i in (0, 1))


def _empty_shard(source: 'Source', config, shard: int, shards: int) -> UserError:
  return UserError(f'shard {shard} of {shards} got no training examples from {source.name} '
                   f'split {config.train_split!r}: use a larger split or fewer shards.')


def _concat(*parts: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
  return {k: tf.concat([p[k] for p in parts], 0) for k in parts[0]}


def _in_memory_batches(decoded: tf.data.Dataset, size: int, bounds: dict[int, tuple[int, int]],
                       shuffle: bool, finish: Finisher, seed: int, batch_size: int,
                       start_step: int) -> tf.data.Dataset:
  """This process's batches, gathered from the `size` examples of `decoded` held as tensors, all
  its shards in one function. Shard s holds examples [low, high) = bounds[s] of the split; its
  batch b holds positions b * batch_size onwards of its stream of epochs, each epoch a
  permutation of the shard drawn from (its shuffle key, epoch) (the identity without
  `shuffle`), and is finished with its augmentation key."""
  examples = decoded.batch(size).get_single_element()
  keys = [_shard_keys(seed, s) for s in bounds]

  def picks(index, low, high, shuffle_key):
    count = high - low
    positions = index * batch_size + tf.range(batch_size, dtype=tf.int64)
    epochs = positions // count

    def order(epoch):
      indices = tf.range(count, dtype=tf.int64)
      if not shuffle:
        return indices
      return tf.random.experimental.stateless_shuffle(
          indices, tf.random.experimental.stateless_fold_in(shuffle_key, epoch))

    # The orders of the epochs the batch spans: at most two unless it is larger than the shard.
    orders = tf.stack([order(epochs[0] + i) for i in range(batch_size // count + 2)])
    return positions, low + tf.gather_nd(
        orders, tf.stack([epochs - epochs[0], positions % count], axis=1))

  def batch(index):
    chosen = [picks(index, low, high, shuffle_key)
              for (low, high), (shuffle_key, _) in zip(bounds.values(), keys)]
    # One gather for every shard; each shard's part is finished with its own key.
    gathered = tf.nest.map_structure(
        lambda x: tf.gather(x, tf.concat([p for _, p in chosen], 0)), examples)
    positions = tf.stack([p for p, _ in chosen])
    augment_keys = tf.stack([k for _, k in keys])
    first = finish(tf.nest.map_structure(lambda x: x[:batch_size], gathered), positions[0],
                   augment_keys[0])
    if len(chosen) == 1:
      return first
    # The other shards over a leading shard axis, so that `finish` is traced twice rather than
    # once per shard (most of the time it took to build the dataset of 8 augmented shards).
    others = tf.nest.map_structure(
        lambda x: tf.reshape(x[batch_size:], [len(chosen) - 1, batch_size, *x.shape[1:]]),
        gathered)
    finished = tf.map_fn(
        lambda part: finish(*part), (others, positions[1:], augment_keys[1:]),
        fn_output_signature=tf.nest.map_structure(lambda x: tf.TensorSpec(x.shape, x.dtype),
                                                  first))
    return _concat(first, tf.nest.map_structure(lambda x: tf.reshape(x, [-1, *x.shape[2:]]),
                                                finished))

  return tf.data.Dataset.counter(start_step).map(graph_fn(batch),
                                                 num_parallel_calls=tf.data.AUTOTUNE)


def _streamed_shard(source: 'Source', config, decode, finish: Finisher, seed: int, shard: int,
                    shards: int, batch_size: int, start_step: int) -> tf.data.Dataset:
  """Shard `shard` of `shards` of the training split (the source's own share), read and decoded
  example by example, shuffled per epoch, batched, augmented."""
  raw = source.read(config.train_split, shard, shards)
  num_local = int(raw.cardinality())
  if num_local <= 0:
    raise _empty_shard(source, config, shard, shards)
  shuffle_key, augment_key = _shard_keys(seed, shard)
  ds = _streamed_batches(raw, decode, num_local, config.shuffle_buffer, shuffle_key,
                         batch_size, start_step)
  return ds.map(graph_fn(lambda positions, batch: finish(batch, positions, augment_key)),
                num_parallel_calls=tf.data.AUTOTUNE)


def _streamed_batches(raw: tf.data.Dataset, decode, count: int, shuffle_buffer: int,
                      shuffle_key: tf.Tensor, batch_size: int, start_step: int
                      ) -> tf.data.Dataset:
  """(positions, batch) read and decoded example by example, each epoch shuffled through a
  buffer of `shuffle_buffer` examples."""
  def epoch(number):
    examples = raw
    if shuffle_buffer > 1:
      shuffle_seed = tf.random.stateless_uniform(
          [], tf.random.experimental.stateless_fold_in(shuffle_key, number),
          minval=None, maxval=None, dtype=tf.int64)
      examples = examples.shuffle(shuffle_buffer, seed=shuffle_seed)
    return examples.enumerate(start=number * count)

  start = start_step * batch_size
  ds = tf.data.Dataset.counter(start // count).flat_map(epoch)
  # Skipped before decoding: resuming costs reading at most one epoch, not decoding it.
  ds = ds.skip(start % count).map(
      graph_fn(lambda position, example: (position, decode(example))),
      num_parallel_calls=tf.data.AUTOTUNE)
  return ds.batch(batch_size, drop_remainder=True)


def _example_bytes(spec) -> int:
  """Bytes of one example of this element spec (every shape known)."""
  return sum(s.shape.num_elements() * s.dtype.size for s in tf.nest.flatten(spec))


def make_eval_iterator(data_config, *, global_batch_size: int, split: str | None = None
                       ) -> Iterator[dict[str, np.ndarray]]:
  """One pass over this process's share of `split` (default `data.eval_split`; see also
  `validation_split`): {'image', 'label', 'mask'}; padding has mask False.

  Every process yields ceil(num_examples / global_batch_size) batches, however uneven the shares.
  """
  config = _complete(data_config)
  source = _source(config)
  split = split or config.eval_split
  build = lambda: eval_dataset(source, config, _preprocessor(source, config),
                               global_batch_size=global_batch_size, split=split)
  return _reused(build, source, config, 'eval', split, global_batch_size).as_numpy_iterator()


def eval_batches(source: 'Source', config, preprocess, *, global_batch_size: int,
                 split: str) -> Iterator[dict[str, np.ndarray]]:
  """`make_eval_iterator` for any task: `preprocess(example)` decodes one example of `source`
  (it must not return a 'mask' key)."""
  return eval_dataset(source, config, preprocess, global_batch_size=global_batch_size,
                      split=split).as_numpy_iterator()


def eval_dataset(source: 'Source', config, preprocess, *, global_batch_size: int,
                 split: str) -> tf.data.Dataset:
  """The dataset `eval_batches` iterates."""
  batch_size = _local_batch_size(global_batch_size)
  num_batches = math.ceil(source.num_examples(split) / global_batch_size)
  raw = source.read(split, jax.process_index(), jax.process_count())
  ds = raw.map(graph_fn(lambda example: {**preprocess(example), 'mask': True}),
               num_parallel_calls=tf.data.AUTOTUNE)
  padding = tf.nest.map_structure(lambda spec: tf.zeros(spec.shape, spec.dtype), ds.element_spec)
  ds = ds.concatenate(tf.data.Dataset.from_tensors(padding).repeat())
  ds = ds.take(num_batches * batch_size).batch(batch_size)
  return ds.prefetch(tf.data.AUTOTUNE)


# Built datasets by what they are a function of. Building one traces its Python functions into
# TensorFlow graphs and opens the source's files, which costs more than a small dataset's pass:
# a run evaluating every epoch, and the trials of a search, build each one once per process.
_DATASETS: dict[tuple, tuple['Source', tf.data.Dataset]] = {}
_MAX_DATASETS = 16


def _reused(build: Callable[[], tf.data.Dataset], source: 'Source', config, *args
            ) -> tf.data.Dataset:
  """`build()`, or what it returned before for the same source object (one built anew gives new
  datasets), completed config (by its text), `args` and place of this process."""
  key = (id(source), json.dumps(config.to_dict(), sort_keys=True, default=repr), *args,
         jax.process_index(), jax.process_count())
  if key not in _DATASETS:
    if len(_DATASETS) >= _MAX_DATASETS:
      del _DATASETS[next(iter(_DATASETS))]  # the oldest
    _DATASETS[key] = (source, build())  # the source kept alive, so its id stays its own
  return _DATASETS[key][1]


def preprocess_for_prediction(data_config, image: bytes | np.ndarray) -> np.ndarray:
  """One image as the eval pipeline hands it to the model: float32 (height, width, channels).

  `image` is an image file's contents (PNG, JPEG, BMP or GIF) or a uint8 (H, W) or (H, W, C)
  array of any size. It is decoded to the dataset's number of channels, then resized, rescaled
  and normalized by the pipeline's own functions ('featurewise': with the training split's
  statistics). Bytes that are no image raise `tf.errors.InvalidArgumentError`.
  """
  config = _complete(data_config)
  shape = output_shape(_source(config), config)
  if isinstance(image, np.ndarray):
    if image.dtype != np.uint8 or image.ndim not in (2, 3):
      raise UserError(f'expected a uint8 (H, W) or (H, W, C) image; got {image.dtype} '
                      f'{image.shape}.')
    # Through lossless PNG, so arrays get the same channel conversion as files.
    image = tf.io.encode_png(image.reshape(*image.shape[:2], -1))
  image = image_folder.decode_image(image, shape[-1])
  return _normalizer(config, shape)(_rescaled(image, shape, _resize_of(config))).numpy()


class Source(Protocol):
  """Where examples come from: a `tfds_source.TfdsSource` or an `image_folder.ImageFolder`."""
  name: str
  class_names: tuple[str, ...]
  image_shape: tuple[int | None, int | None, int]  # As stored; None where sizes vary.

  def num_examples(self, split: str) -> int:
    ...

  def read(self, split: str, index: int, count: int) -> tf.data.Dataset:
    """Process `index` of `count`'s share, in a fixed order: {'image': undecoded, 'label'}."""

  def decode(self, image: tf.Tensor) -> tf.Tensor:
    """An undecoded image to uint8 (H, W, C)."""


def _complete(data_config) -> ml_collections.ConfigDict:
  """`data_config` laid over `default_config()`, checked."""
  config = default_config().to_dict()
  for name, value in data_config.items():
    if name == 'augment':
      config['augment'] = augment_lib.validated(value)
    elif name in config:
      config[name] = value
    else:  # Harmless if another part of the trainer reads it; a typo if not.
      logging.warning('data.%s is not an input pipeline field (%s); ignored.', name,
                      ', '.join(config))
  config = ml_collections.ConfigDict(config)
  if config.normalization not in NORMALIZATIONS:
    raise UserError(f'data.normalization={config.normalization!r}: expected one of '
                    f'{NORMALIZATIONS}.')
  size = tuple(config.image_size)
  if size and not (len(size) == 2 and all(isinstance(s, int) and s > 0 for s in size)):
    raise UserError(f'data.image_size={config.image_size!r}: expected (height, width) or ().')
  if not (isinstance(config.crop_fraction, (int, float)) and 0 <= config.crop_fraction <= 1):
    raise UserError(f'data.crop_fraction={config.crop_fraction!r}: expected 0 (resize the whole '
                    'image) or a fraction in (0, 1] (resize, then crop the centre), e.g. 0.875.')
  if config.interpolation not in INTERPOLATIONS:
    raise UserError(f'data.interpolation={config.interpolation!r}: expected one of '
                    f'{INTERPOLATIONS}.')
  if not (isinstance(config.shards, int) and config.shards >= 0):
    raise UserError(f'data.shards={config.shards!r}: expected an int >= 0.')
  if not (isinstance(config.shuffle_buffer, int) and config.shuffle_buffer >= 0):
    raise UserError(f'data.shuffle_buffer={config.shuffle_buffer!r}: expected an int >= 0.')
  config.validation_split = _checked_validation_split(config)
  return config


def _checked_validation_split(config) -> float | str | None:
  """`data.validation_split` as a fraction in (0, 1), a split name, or None ('' and 0: None)."""
  value = config.validation_split
  if value in (None, '', 0):
    return None
  if isinstance(value, str):
    if value in (config.train_split, config.eval_split):
      raise UserError(f'data.validation_split={value!r} is also data.train_split or '
                      'data.eval_split: name a split of its own, or give a fraction of the '
                      'training split (e.g. 0.1).')
    return value
  if isinstance(value, float) and 0 < value < 1:
    return value
  raise UserError(f'data.validation_split={value!r}: expected a fraction in (0, 1) of the '
                  "training split, or a split name such as 'train[90%:]' or 'val'.")


def _local_batch_size(global_batch_size: int) -> int:
  count = jax.process_count()
  if not (isinstance(global_batch_size, int) and global_batch_size > 0
          and global_batch_size % count == 0):
    raise UserError(f'global batch size {global_batch_size!r} must be a positive multiple of '
                    f'the number of processes ({count}).')
  return global_batch_size // count


class _SourceKey(NamedTuple):
  """The fields that pick a source and its splits."""
  dataset: str
  data_dir: str
  train_split: str
  eval_split: str
  folder_test_fraction: float
  classes: tuple[int, ...]
  validation_split: float | str | None


def _source(config) -> Source:
  return _cached_source(_source_key(config))


def _source_key(config) -> _SourceKey:
  return _SourceKey(config.dataset, config.data_dir, config.train_split, config.eval_split,
                    config.folder_test_fraction, tuple(config.classes),
                    config.validation_split)


@functools.lru_cache(maxsize=8)
def _cached_source(key: _SourceKey) -> Source:
  # Cached: a folder is checked file by file, and a builder is reused by info and iterators.
  named_validation = key.validation_split if isinstance(key.validation_split, str) else ''
  if key.dataset.startswith(FOLDER_PREFIX):
    source = image_folder.ImageFolder(
        key.dataset[len(FOLDER_PREFIX):], train_split=key.train_split,
        eval_split=key.eval_split, test_fraction=key.folder_test_fraction,
        validation_split=named_validation)
  else:
    source = tfds_source.TfdsSource(key.dataset, key.data_dir)
    if named_validation:
      for field, split in (('train_split', key.train_split), ('eval_split', key.eval_split)):
        source.check_disjoint(named_validation, split, 'data.validation_split', f'data.{field}')
  if key.classes:
    source = _ClassSubset(source, key.classes)
  if isinstance(key.validation_split, float):
    source = _HeldOut(source, key.train_split, key.validation_split)
  return source


class _HeldOut:
  """A fractional `data.validation_split`: a fixed, stratified share of each class of the
  training split becomes the HELD_OUT split; the training split keeps the rest.

  Reads the training split's labels once. Each process's share of either part is the part of its
  share of the whole training split, so shares stay contiguous reads of the underlying source.
  """

  def __init__(self, source: Source, train_split: str, fraction: float):
    self._source, self._train_split = source, train_split
    labels = source.read(train_split, 0, 1).map(lambda example: example['label']).batch(4096)
    self._held = holdout.stratified_mask(
        np.concatenate(list(labels.as_numpy_iterator())), fraction)
    if self._held.all() or not self._held.any():
      raise UserError(f'data.validation_split={fraction} holds out {self._held.sum()} of the '
                      f'{len(self._held)} examples of {source.name} split {train_split!r}: '
                      'choose a fraction that leaves examples on both sides.')
    self.name = source.name
    self.class_names = source.class_names
    self.image_shape = source.image_shape

  def num_examples(self, split: str) -> int:
    if split == HELD_OUT:
      return int(self._held.sum())
    if split == self._train_split:
      return int((~self._held).sum())
    return self._source.num_examples(split)

  def read(self, split: str, index: int, count: int) -> tf.data.Dataset:
    if split not in (HELD_OUT, self._train_split):
      return self._source.read(split, index, count)
    sizes = [int(self._source.read(self._train_split, i, count).cardinality())
             for i in range(index + 1)]
    start = sum(sizes[:-1])
    keep = self._held[start:start + sizes[-1]]
    keep = keep if split == HELD_OUT else ~keep
    keep_table = tf.constant(keep)
    ds = self._source.read(self._train_split, index, count).enumerate()
    ds = ds.filter(lambda i, _: keep_table[i]).map(lambda _, example: example)
    # Filtering forgets the size, which the training stream needs to number its epochs.
    return ds.apply(tf.data.experimental.assert_cardinality(int(keep.sum())))

  def decode(self, image: tf.Tensor) -> tf.Tensor:
    return self._source.decode(image)


class _ClassSubset:
  """The examples of `source` whose label is in `classes` (`data.classes`).

  Labels keep their values and `class_names` stays whole, so a model trained on a subset
  still speaks the dataset's label space (e.g. train on digits 0-8, score all ten).
  """

  def __init__(self, source: Source, classes: tuple[int, ...]):
    num_classes = len(source.class_names)
    if not all(isinstance(c, int) and 0 <= c < num_classes for c in classes):
      raise UserError(f'data.classes={classes!r}: expected labels in 0..{num_classes - 1} of '
                      f'{source.name}.')
    self._source = source
    self._classes = tf.constant(sorted(set(classes)), tf.int64)
    self._counts = {}
    self.name = f'{source.name} (classes {", ".join(map(str, classes))})'
    self.class_names = source.class_names
    self.image_shape = source.image_shape

  def num_examples(self, split: str) -> int:
    return self._count(split, 0, 1)

  def read(self, split: str, index: int, count: int) -> tf.data.Dataset:
    # Filtering forgets the size, which the training stream needs to number its epochs.
    return self._filtered(split, index, count).apply(
        tf.data.experimental.assert_cardinality(self._count(split, index, count)))

  def decode(self, image: tf.Tensor) -> tf.Tensor:
    return self._source.decode(image)

  def _filtered(self, split: str, index: int, count: int) -> tf.data.Dataset:
    keep = lambda example: tf.reduce_any(tf.cast(example['label'], tf.int64) == self._classes)
    return self._source.read(split, index, count).filter(keep)

  def _count(self, split: str, index: int, count: int) -> int:
    """Examples kept in a share, counted once by reading it (labels and undecoded images)."""
    if (split, index, count) not in self._counts:
      ds = self._filtered(split, index, count)
      self._counts[split, index, count] = int(ds.reduce(tf.constant(0, tf.int64),
                                                        lambda n, _: n + 1))
    return self._counts[split, index, count]


def output_shape(source: Source, config) -> tuple[int, int, int]:
  height, width, channels = source.image_shape
  if config.image_size:
    height, width = config.image_size
  elif height is None or width is None:
    raise UserError(f'the images of {source.name} vary in size: set data.image_size = '
                    '(height, width) to resize them to.')
  return height, width, channels


def _preprocessor(source: Source, config):
  """A function example -> {'image': float32 normalized, 'label': int32}: what evaluation and
  prediction feed the model."""
  decode = _decoder(source, config)
  normalize = _normalizer(config, output_shape(source, config))

  def preprocess(example):
    decoded = decode(example)
    return {**decoded, 'image': normalize(decoded['image'])}

  return preprocess


def _decoder(source: Source, config):
  """A function example -> {'image': float32 in [0, 1] at the output shape, 'label': int32}."""
  shape = output_shape(source, config)
  resize = _resize_of(config)
  return lambda example: {'image': _decoded(source, example['image'], shape, resize),
                          'label': tf.cast(example['label'], tf.int32)}


def _batch_finisher(source: Source, config) -> Finisher:
  """Training batches augmented (each batch seeded by (key, its first position)), then
  normalized."""
  augment = augment_lib.make_augment(config.augment)
  normalize = _normalizer(config, output_shape(source, config))

  def finish(batch, positions, key):
    images = batch['image']
    if augment is not None:
      images = augment(images, tf.random.experimental.stateless_fold_in(key, positions[0]))
    return {**batch, 'image': normalize(images)}

  return finish


class _Resize(NamedTuple):
  """How images are brought to `data.image_size` (the fields of that name)."""
  crop_fraction: float
  interpolation: str


def _resize_of(config) -> _Resize:
  return _Resize(config.crop_fraction, config.interpolation)


def _decoded(source: Source, image: tf.Tensor, shape: tuple[int, int, int],
             resize: _Resize) -> tf.Tensor:
  """Decoded, in [0, 1], resized to `shape`."""
  return _rescaled(source.decode(image), shape, resize)


def _rescaled(image: tf.Tensor, shape: tuple[int, int, int], resize: _Resize) -> tf.Tensor:
  """A uint8 image rescaled to [0, 1] and brought to `shape` as `resize` says."""
  if resize.crop_fraction:
    image = pretrained_input.resize_and_crop(image, shape[:2], resize.crop_fraction,
                                             resize.interpolation)
    return tf.ensure_shape(image, shape)
  image = tf.image.convert_image_dtype(image, tf.float32)
  if tuple(image.shape[:2]) != shape[:2]:
    # Antialiasing only matters when shrinking, and is slow.
    shrinking = not image.shape[:2].is_fully_defined() or any(
        new < old for new, old in zip(shape[:2], image.shape[:2]))
    image = tf.image.resize(image, shape[:2], method=resize.interpolation, antialias=shrinking)
    image = tf.clip_by_value(image, 0.0, 1.0)  # Cubic and Lanczos kernels overshoot.
  return tf.ensure_shape(image, shape)


def _normalizer(config, shape: tuple[int, int, int]):
  """The function that maps a [0, 1] image to what the model sees."""
  normalize = _channel_normalizer(config, shape)
  if config.bgr:
    return lambda image: normalize(image)[..., ::-1]
  return normalize


def _channel_normalizer(config, shape: tuple[int, int, int]):
  mode = config.normalization
  if mode == 'none':
    return lambda image: image
  if mode == 'samplewise':  # As Keras: over all of the image's values.
    over_image = lambda f, images: f(images, axis=(-3, -2, -1), keepdims=True)
    return lambda images: ((images - over_image(tf.reduce_mean, images))
                           / (over_image(tf.math.reduce_std, images) + _STD_EPSILON))
  mean, std = _fixed_stats(config, shape)
  return lambda image: (image - mean) / std


def _fixed_stats(config, shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
  """(mean, std) in RGB order of every normalization but 'samplewise'."""
  if config.normalization == 'none':
    return np.zeros(shape[-1], np.float32), np.ones(shape[-1], np.float32)
  if config.normalization == 'featurewise':
    mean, std = _featurewise_stats(_source_key(config), shape, _resize_of(config))
    return mean, std + _STD_EPSILON
  return _given_stats(config, shape[-1])


def _given_stats(config, channels: int) -> tuple[np.ndarray, np.ndarray]:
  mean, std = np.asarray(config.mean, np.float32), np.asarray(config.std, np.float32)
  if mean.shape != (channels,) or std.shape != (channels,) or not np.all(std > 0):
    raise UserError(f"data.normalization='per_channel' needs data.mean and data.std with "
                    f'{channels} value(s) each (std > 0, on the [0, 1] scale); got '
                    f'mean={tuple(config.mean)!r}, std={tuple(config.std)!r}.')
  return mean, std


@functools.lru_cache(maxsize=8)
def _featurewise_stats(key: _SourceKey, shape: tuple[int, int, int],
                       resize: _Resize) -> tuple[np.ndarray, np.ndarray]:
  """Per-channel mean and std of the (resized, unaugmented) training images, on [0, 1], in RGB
  order.

  Every process reads the same (whole-split) examples, so all normalize identically.
  """
  source = _cached_source(key)
  ds = source.read(key.train_split, 0, 1).take(FEATUREWISE_MAX_EXAMPLES)
  ds = ds.map(graph_fn(lambda example: _decoded(source, example['image'], shape, resize)),
              num_parallel_calls=tf.data.AUTOTUNE).batch(256)
  count, total, total_sq = 0, np.zeros(shape[-1]), np.zeros(shape[-1])
  for images in ds.as_numpy_iterator():
    pixels = images.reshape(-1, shape[-1]).astype(np.float64)
    count += len(pixels)
    total += pixels.sum(0)
    total_sq += np.square(pixels).sum(0)
  mean = total / count
  std = np.sqrt(np.maximum(total_sq / count - np.square(mean), 0.0))
  return mean.astype(np.float32), std.astype(np.float32)

"""Tests for the classification input pipeline: digits, TFDS, folders, multi-host shares."""

import collections
import os

import chex
import jax
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image
from sklearn import datasets as sk_datasets

from train.core.errors import UserError
from train.data import pipeline as input_pipeline
from train.data import tfds_source

NUM_TRAIN, NUM_TEST = 1437, 360


@pytest.fixture(name='data_dir', scope='module')
def data_dir_fixture(tmp_path_factory):
  """A TFDS data_dir with sklearn_digits prepared (once for the module)."""
  data_dir = str(tmp_path_factory.mktemp('tfds'))
  input_pipeline.get_dataset_info(_config(data_dir))
  return data_dir


def _config(data_dir, **fields):
  """The default data config on `data_dir`, read as one stream per process (shards=0), the
  layout the epoch and share assertions below are written for."""
  config = input_pipeline.default_config()
  config.update({'data_dir': data_dir, 'shards': 0, **fields})
  return config


def _processes(monkeypatch, index, count):
  monkeypatch.setattr(jax, 'process_index', lambda: index)
  monkeypatch.setattr(jax, 'process_count', lambda: count)


def _take(iterator, n):
  return [next(iterator) for _ in range(n)]


def _split(data_dir, split):
  """(labels, images) of a digits split, straight from TFDS."""
  ds = tfds.builder('sklearn_digits', data_dir=data_dir).as_dataset(split=split)
  examples = list(ds.as_numpy_iterator())
  return [int(e['label']) for e in examples], [e['image'] for e in examples]


def _pixels(images):
  """Images (uint8, or float in [0, 1]) as a sorted list of uint8 pixel lists."""
  images = np.asarray(images)
  if images.dtype != np.uint8:
    images = np.round(images * 255).astype(np.uint8)
  return sorted(images.reshape(len(images), -1).tolist())


def test_tensorflow_sees_no_gpu():
  assert not tf.config.get_visible_devices('GPU')


# The digits builder.


def test_digits_builder(data_dir):
  builder = tfds.builder('sklearn_digits', data_dir=data_dir)
  class_sizes = np.bincount(sk_datasets.load_digits().target)
  assert builder.info.splits['train'].num_examples == NUM_TRAIN
  assert builder.info.splits['test'].num_examples == NUM_TEST
  for split, size in (('train', NUM_TRAIN), ('test', NUM_TEST)):
    labels, images = _split(data_dir, split)
    assert len(labels) == size
    assert set(labels) == set(range(10))
    # Stratified: every class has its share of the split, give or take one example.
    fraction = size / (NUM_TRAIN + NUM_TEST)
    for label, count in collections.Counter(labels).items():
      assert abs(count - fraction * class_sizes[label]) <= 1
    images = np.stack(images)
    chex.assert_shape(images, (size, 8, 8, 1))
    chex.assert_type(images, np.uint8)
    assert images.min() == 0 and images.max() == 255


def test_dataset_info(data_dir):
  info = input_pipeline.get_dataset_info(_config(data_dir))
  assert info == input_pipeline.DatasetInfo(
      num_classes=10, image_shape=(16, 16, 1), num_train=NUM_TRAIN, num_eval=NUM_TEST,
      class_names=tuple('0123456789'))
  info = input_pipeline.get_dataset_info(_config(data_dir, image_size=()))
  assert info.image_shape == (8, 8, 1)


# The training iterator.

AUGMENT = dict(flip=True, crop_padding=1, rotation=10.0, shift=0.1, zoom=0.1, shear=5.0,
               noise_std=0.02)


def test_train_batches(data_dir):
  batch = next(input_pipeline.make_train_iterator(_config(data_dir), seed=0, global_batch_size=32))
  assert set(batch) == {'image', 'label'}
  chex.assert_shape(batch['image'], (32, 16, 16, 1))
  chex.assert_type([batch['image'], batch['label']], [np.float32, np.int32])
  assert set(batch['label']) <= set(range(10))


def test_train_is_deterministic_given_the_seed(data_dir):
  config = _config(data_dir, augment=AUGMENT)
  runs = [_take(input_pipeline.make_train_iterator(config, seed=s, global_batch_size=64), 2)
          for s in (0, 0, 1)]
  chex.assert_trees_all_equal(runs[0], runs[1])
  assert not np.array_equal(runs[0][0]['label'], runs[2][0]['label'])


def test_train_resumes_exactly_across_an_epoch_boundary(data_dir):
  config = _config(data_dir, augment=AUGMENT)
  make = lambda **kw: input_pipeline.make_train_iterator(config, seed=3, global_batch_size=100,
                                                         **kw)
  fresh = _take(make(), 17)
  resumed = _take(make(start_step=13), 4)  # The epoch (1437 examples) ends in batch 14.
  chex.assert_trees_all_equal(fresh[13:], resumed)


def test_train_epochs_hold_every_example_once_in_a_new_order(data_dir):
  config = _config(data_dir, image_size=(), normalization='none')
  # 1437 = 3 * 479: batches 0-2 are epoch 0, batch 3 starts epoch 1.
  batches = _take(input_pipeline.make_train_iterator(config, seed=0, global_batch_size=479), 4)
  labels, images = _split(data_dir, 'train')
  epoch = np.concatenate([b['image'] for b in batches[:3]])
  assert _pixels(epoch) == _pixels(images)
  assert not np.array_equal(batches[0]['label'], batches[3]['label'])


def test_train_processes_read_disjoint_shares(data_dir, monkeypatch):
  config = _config(data_dir, image_size=(), normalization='none')
  shares = []
  for index in range(2):  # Shares of 719 and 718 examples.
    _processes(monkeypatch, index, 2)
    shares.append(next(input_pipeline.make_train_iterator(config, seed=0,
                                                          global_batch_size=1436))['image'])
  both = collections.Counter(map(tuple, _pixels(np.concatenate(shares))))
  split = collections.Counter(map(tuple, _pixels(_split(data_dir, 'train')[1])))
  assert not both - split  # No example twice.


def test_train_batch_is_the_process_share(data_dir, monkeypatch):
  _processes(monkeypatch, 1, 2)
  batch = next(input_pipeline.make_train_iterator(_config(data_dir), seed=0, global_batch_size=32))
  chex.assert_shape(batch['image'], (16, 16, 16, 1))
  with pytest.raises(UserError, match=r'global batch size 33 .* processes \(2\)'):
    input_pipeline.make_train_iterator(_config(data_dir), seed=0, global_batch_size=33)


# The evaluation iterator.


def _eval(config, batch_size, processes, monkeypatch):
  """All processes' eval batches, as lists per process."""
  runs = []
  for index in range(processes):
    _processes(monkeypatch, index, processes)
    runs.append(list(input_pipeline.make_eval_iterator(config, global_batch_size=batch_size)))
  return runs


@pytest.mark.parametrize('processes, split, size', [(1, 'test', 360), (2, 'test[:357]', 357)])
def test_eval_covers_every_example_exactly_once(data_dir, monkeypatch, processes, split, size):
  config = _config(data_dir, eval_split=split, image_size=(), normalization='none')
  runs = _eval(config, 64, processes, monkeypatch)
  assert [len(batches) for batches in runs] == [6] * processes  # ceil(size / 64)
  batches = [b for batches in runs for b in batches]
  local = 64 // processes
  for b in batches:
    chex.assert_shape([b['image'], b['label'], b['mask']], [(local, 8, 8, 1), (local,), (local,)])
  masks = np.concatenate([b['mask'] for b in batches]).astype(bool)
  assert masks.sum() == size
  labels = np.concatenate([b['label'] for b in batches])[masks]
  images = np.concatenate([b['image'] for b in batches])[masks]
  expected_labels, expected_images = _split(data_dir, split)
  assert sorted(labels.tolist()) == sorted(expected_labels)
  assert _pixels(images) == _pixels(expected_images)


def test_eval_is_not_augmented(data_dir):
  plain = list(input_pipeline.make_eval_iterator(_config(data_dir), global_batch_size=360))
  augmented = list(input_pipeline.make_eval_iterator(_config(data_dir, augment=AUGMENT),
                                                     global_batch_size=360))
  chex.assert_trees_all_equal(plain, augmented)


# Normalization.


def _all_eval_images(config):
  batches = list(input_pipeline.make_eval_iterator(config, global_batch_size=512))
  return np.concatenate([b['image'][b['mask'].astype(bool)] for b in batches])


def test_normalization_none_is_unit_range(data_dir):
  images = _all_eval_images(_config(data_dir, normalization='none'))
  assert images.min() == 0.0 and images.max() == 1.0


def test_normalization_per_channel(data_dir):
  plain = _all_eval_images(_config(data_dir, normalization='none'))
  normalized = _all_eval_images(_config(data_dir, normalization='per_channel', mean=(0.25,),
                                        std=(0.5,)))
  np.testing.assert_allclose(normalized, (plain - 0.25) / 0.5, rtol=1e-6)


def test_input_preprocessing_is_what_the_model_sees_with_bgr(tmp_path):
  """With data.bgr the statistics come in the model's (BGR) channel order and, applied to the
  RGB images (NumPy, or JAX under jit as the feature networks do), give the pipeline's."""
  rng = np.random.default_rng(0)
  for name in ('a', 'b'):
    os.makedirs(tmp_path / name)
    for i in range(3):
      pixels = rng.integers(0, 256, (4, 5, 3), np.uint8)
      Image.fromarray(pixels, 'RGB').save(tmp_path / name / f'{i}.png')
  config = _folder_config(tmp_path, normalization='per_channel', mean=(0.1, 0.2, 0.3),
                          std=(0.5, 0.25, 0.125), bgr=True)
  preprocessing = input_pipeline.input_preprocessing(config)
  assert preprocessing.bgr
  np.testing.assert_allclose(preprocessing.mean, (0.3, 0.2, 0.1), rtol=1e-6)
  np.testing.assert_allclose(preprocessing.std, (0.125, 0.25, 0.5), rtol=1e-6)
  rgb = _all_eval_images(_folder_config(tmp_path))
  seen = _all_eval_images(config)
  np.testing.assert_allclose(seen, (rgb - (0.1, 0.2, 0.3))[..., ::-1] / (0.125, 0.25, 0.5),
                             rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(preprocessing(rgb), seen, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(jax.jit(preprocessing)(rgb), seen, rtol=1e-6, atol=1e-6)


def test_normalization_featurewise_standardizes_the_training_split(data_dir):
  # The training split, read as an eval split, comes out with mean 0 and std 1 per channel.
  images = _all_eval_images(_config(data_dir, eval_split='train', normalization='featurewise'))
  np.testing.assert_allclose(images.mean(), 0.0, atol=1e-4)
  np.testing.assert_allclose(images.std(), 1.0, atol=1e-4)


def test_normalization_samplewise_standardizes_each_image(data_dir):
  images = _all_eval_images(_config(data_dir, normalization='samplewise'))
  np.testing.assert_allclose(images.mean(axis=(1, 2, 3)), 0.0, atol=1e-5)
  np.testing.assert_allclose(images.std(axis=(1, 2, 3)), 1.0, atol=1e-4)


@pytest.mark.parametrize('fields, message', [
    (dict(normalization='per_channel'), r"data.mean and data.std with 1 value\(s\)"),
    (dict(normalization='per_channel', mean=(0.5,), std=(0.0,)), 'std > 0'),
    (dict(normalization='zca'), "data.normalization='zca'"),
    (dict(image_size=(16,)), r'data.image_size=\(16,\)'),
    (dict(shuffle_buffer=-1), 'data.shuffle_buffer=-1'),
    (dict(augment=dict(rotate=10.0)), 'data.augment.rotate'),
    (dict(eval_split='validation'), "Unknown split 'validation'"),
    (dict(eval_split='test[:5000]'), r'slice \[:5000\] incompatible with 360 examples'),
])
def test_bad_config_values_name_the_field(data_dir, fields, message):
  with pytest.raises(UserError, match=message):
    list(input_pipeline.make_eval_iterator(_config(data_dir, **fields), global_batch_size=8))


# Named TFDS datasets.


def test_unknown_dataset(tmp_path):
  with pytest.raises(UserError, match="data.dataset='no_such_dataset_xyz' is not a TFDS dataset"):
    input_pipeline.get_dataset_info(_config(str(tmp_path), dataset='no_such_dataset_xyz'))


def test_dataset_that_cannot_be_downloaded(tmp_path, monkeypatch):
  def offline(*args, **kwargs):
    raise ConnectionError('network is unreachable')
  monkeypatch.setattr(tfds.core.DatasetBuilder, 'download_and_prepare', offline)
  with pytest.raises(UserError) as e:
    input_pipeline.get_dataset_info(_config(str(tmp_path), dataset='mnist'))
  message = str(e.value)
  for part in ("'mnist'", 'network is unreachable', 'tfds build mnist', '--manual_dir',
               'data.data_dir'):
    assert part in message


def test_dataset_prepared_by_another_process_is_used(data_dir, monkeypatch):
  def lost_the_race(*args, **kwargs):
    raise FileExistsError('the other process renamed its copy first')
  monkeypatch.setattr(tfds.core.DatasetBuilder, 'download_and_prepare', lost_the_race)
  builder = tfds_source.prepared_builder('sklearn_digits', data_dir)
  assert builder.info.splits['test'].num_examples == NUM_TEST


@pytest.mark.parametrize('name, shape', [('mnist', (28, 28, 1)), ('cifar10', (32, 32, 3))])
def test_named_dataset_under_mock_data(tmp_path, name, shape):
  config = _config(str(tmp_path), dataset=name, image_size=(), augment=AUGMENT)
  with tfds.testing.mock_data(num_examples=12):
    info = input_pipeline.get_dataset_info(config)
    assert (info.num_classes, info.image_shape, info.num_train, info.num_eval) == (
        10, shape, 12, 12)
    batch = next(input_pipeline.make_train_iterator(config, seed=0, global_batch_size=8))
    chex.assert_shape(batch['image'], (8, *shape))
    evals = list(input_pipeline.make_eval_iterator(config, global_batch_size=8))
  assert [int(b['mask'].sum()) for b in evals] == [8, 4]


# Image folders.


def _write_images(folder, counts, size=(6, 5), mode='L'):
  """counts: {class name: number of images}; pixel values encode (class, index)."""
  for label, (name, count) in enumerate(sorted(counts.items())):
    os.makedirs(folder / name, exist_ok=True)
    for i in range(count):
      values = np.full((*size, 3) if mode == 'RGB' else size, 10 * label + i, np.uint8)
      Image.fromarray(values, mode).save(folder / name / f'{i}.png')


def _folder_config(folder, **fields):
  return _config('', **{'dataset': f'folder:{folder}', 'image_size': (), 'normalization': 'none',
                        **fields})


def test_folder_with_automatic_split(tmp_path, monkeypatch):
  _write_images(tmp_path, {'cat': 5, 'dog': 10, 'emu': 5})
  config = _folder_config(tmp_path)
  assert input_pipeline.get_dataset_info(config) == input_pipeline.DatasetInfo(
      num_classes=3, image_shape=(6, 5, 1), num_train=16, num_eval=4,
      class_names=('cat', 'dog', 'emu'))
  batch = next(input_pipeline.make_train_iterator(config, seed=0, global_batch_size=4))
  chex.assert_shape(batch['image'], (4, 6, 5, 1))
  # 2 processes, uneven shares (2 + 2 of 4 is even; 3 per batch is not): one pass, each once.
  runs = _eval(config, 2, 2, monkeypatch)
  assert [len(r) for r in runs] == [2, 2]
  batches = [b for r in runs for b in r]
  masks = np.concatenate([b['mask'] for b in batches]).astype(bool)
  values = np.round(np.concatenate([b['image'][:, 0, 0, 0] for b in batches])[masks] * 255)
  labels = np.concatenate([b['label'] for b in batches])[masks]
  assert sorted(labels.tolist()) == [0, 1, 1, 2]  # Stratified: 20% of each class.
  np.testing.assert_array_equal(values // 10, labels)  # Each image with its own label.


def test_folder_with_split_subfolders_and_mixed_sizes(tmp_path):
  _write_images(tmp_path / 'train', {'a': 3, 'b': 2}, size=(6, 6))
  _write_images(tmp_path / 'train', {'c': 2}, size=(9, 7), mode='RGB')
  _write_images(tmp_path / 'test', {'a': 1, 'c': 1}, size=(6, 6))
  with pytest.raises(UserError, match=r'vary in size: set data.image_size'):
    input_pipeline.get_dataset_info(_folder_config(tmp_path))
  config = _folder_config(tmp_path, image_size=(8, 8))
  info = input_pipeline.get_dataset_info(config)
  assert (info.class_names, info.image_shape, info.num_train, info.num_eval) == (
      ('a', 'b', 'c'), (8, 8, 3), 7, 2)
  (batch,) = input_pipeline.make_eval_iterator(config, global_batch_size=2)
  assert sorted(batch['label'].tolist()) == [0, 2]
  chex.assert_shape(batch['image'], (2, 8, 8, 3))


@pytest.mark.parametrize('make, message', [
    (lambda root: None, 'has no class subfolders'),
    (lambda root: os.makedirs(root / 'cat'), 'cat has no images'),
    (lambda root: (root / 'train').mkdir(), 'test does not exist'),
])
def test_folder_layout_errors(tmp_path, make, message):
  make(tmp_path)
  with pytest.raises(UserError, match=message) as e:
    input_pipeline.get_dataset_info(_folder_config(tmp_path))
  assert str(tmp_path) in str(e.value)


@pytest.mark.parametrize('content, message', [
    (b'not an image at all', 'is not a readable image'),
    (None, 'is not a readable image'),  # A PNG cut short.
])
def test_folder_bad_file_is_named(tmp_path, content, message):
  _write_images(tmp_path, {'cat': 3, 'dog': 3}, size=(32, 32))
  bad = tmp_path / 'dog' / '1.png'
  bad.write_bytes(content if content is not None else bad.read_bytes()[:60])
  with pytest.raises(UserError, match=message) as e:
    input_pipeline.get_dataset_info(_folder_config(tmp_path))
  assert str(bad) in str(e.value)


def test_missing_folder(tmp_path):
  with pytest.raises(UserError, match='is not a folder'):
    input_pipeline.get_dataset_info(_folder_config(tmp_path / 'nowhere'))


def test_fixed_shards_give_the_same_global_batches_on_any_process_count(data_dir, monkeypatch):
  config = _config(data_dir, augment=AUGMENT, shards=4)
  make = lambda: _take(input_pipeline.make_train_iterator(config, seed=0, global_batch_size=32,
                                                          start_step=40), 2)
  single = make()  # Step 40 is past the first epoch of every shard.
  shares = []
  for index in range(2):
    _processes(monkeypatch, index, 2)
    shares.append(make())
  for step, batch in enumerate(single):
    for key in ('image', 'label'):
      np.testing.assert_array_equal(
          batch[key], np.concatenate([share[step][key] for share in shares]))
  with pytest.raises(UserError, match=r'data.shards=4 must be a multiple of the number of '
                                      r'processes \(2\) and divide the global batch size \(30\)'):
    input_pipeline.make_train_iterator(config, seed=0, global_batch_size=30)


def test_classes_keeps_only_those_labels_in_both_splits(data_dir, monkeypatch):
  kept = (0, 3, 8)
  config = _config(data_dir, classes=kept, normalization='none')
  labels = {split: sorted(label for label in _split(data_dir, split)[0] if label in kept)
            for split in ('train', 'test')}
  info = input_pipeline.get_dataset_info(config)
  assert (info.num_classes, info.num_train, info.num_eval) == (
      10, len(labels['train']), len(labels['test']))
  # A batch of the whole subset is one epoch: each kept example once, nothing else.
  for batch in _take(input_pipeline.make_train_iterator(
      config, seed=0, global_batch_size=len(labels['train'])), 2):
    assert sorted(batch['label'].tolist()) == labels['train']
  # Evaluation on two processes: every kept test example exactly once.
  seen = []
  for index in range(2):
    _processes(monkeypatch, index, 2)
    for batch in input_pipeline.make_eval_iterator(config, global_batch_size=64):
      seen += batch['label'][batch['mask']].tolist()
  assert sorted(seen) == labels['test']
  with pytest.raises(UserError, match=r'data.classes=\(3, 10\): expected labels in 0..9'):
    input_pipeline.get_dataset_info(_config(data_dir, classes=(3, 10)))

"""data.validation_split: a fixed, stratified hold-out of the training split, or a named split
that must not overlap it; runs select on it and score the test split once, at the end."""

import collections

import numpy as np
import pytest
from conftest import read_metrics

from train import classify
from train.core.errors import UserError
from train.data import pipeline as input_pipeline


def _config(data_dir, **fields):
  config = input_pipeline.default_config()
  config.update(dict(data_dir=data_dir, image_size=(), normalization='none', **fields))
  return config


def _examples(config, split):
  """(image bytes, label) of every real example of `split`."""
  out = []
  for batch in input_pipeline.make_eval_iterator(config, global_batch_size=128, split=split):
    for image, label in zip(batch['image'][batch['mask']], batch['label'][batch['mask']]):
      out.append((image.tobytes(), int(label)))
  return out


def test_fraction_is_fixed_stratified_and_disjoint(data_dir, monkeypatch):
  config = _config(data_dir, validation_split=0.2)
  info = input_pipeline.get_dataset_info(config)
  assert (info.num_train, info.num_validation, info.num_eval) == (1150, 287, 360)
  split = input_pipeline.validation_split(config)
  held, kept = _examples(config, split), _examples(config, 'train')
  everything = _examples(_config(data_dir), 'train')
  assert sorted(held + kept) == sorted(everything)
  assert not {image for image, _ in held} & {image for image, _ in kept}
  per_class = collections.Counter(label for _, label in everything)
  for label, count in collections.Counter(label for _, label in held).items():
    assert count == round(per_class[label] * 0.2)
  # Two processes' shares are the same hold-out, split between them.
  shares = []
  for index in range(2):
    monkeypatch.setattr('jax.process_index', lambda index=index: index)
    monkeypatch.setattr('jax.process_count', lambda: 2)
    input_pipeline._cached_source.cache_clear()  # pylint: disable=protected-access
    shares += _examples(config, split)
  assert sorted(shares) == sorted(held)


def test_named_split_must_not_overlap_training(data_dir):
  with pytest.raises(UserError, match=r"share examples of .* split 'train'"):
    input_pipeline.get_dataset_info(_config(data_dir, validation_split='train[90%:]'))
  config = _config(data_dir, train_split='train[:90%]', validation_split='train[90%:]')
  info = input_pipeline.get_dataset_info(config)
  assert (info.num_train, info.num_validation) == (1293, 144)
  for bad in (1.5, 'test'):
    with pytest.raises(UserError, match='data.validation_split'):
      input_pipeline.get_dataset_info(_config(data_dir, validation_split=bad))


def test_run_selects_on_validation_and_tests_the_best_checkpoint_once(tiny_config, tmp_path):
  config = tiny_config('configs/digits_cnn.py:tiny')
  metrics = classify.train_and_evaluate(config, str(tmp_path))
  evals, tests = read_metrics(tmp_path, 'validation'), read_metrics(tmp_path, 'test')
  assert {r['count'] for r in evals} == {287} and [r['count'] for r in tests] == [360]
  best = max(r['accuracy'] for r in evals)
  assert tests[0]['step'] == metrics['test_step']
  assert tests[0]['step'] in [r['step'] for r in evals if r['accuracy'] == best]
  assert metrics['test_accuracy'] == pytest.approx(tests[0]['accuracy'])
  assert np.isclose(metrics['accuracy'], evals[-1]['accuracy'])

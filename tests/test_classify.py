"""train.classify: the step functions, padded evaluation, and whole short runs (with resume)."""

import functools
import glob
import json
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds

import zoo
from configs import common, digits_cnn
from train import classify
from train.core import losses, optim, parallel
from train.core import run as run_lib
from train.core.errors import UserError
from train.core.state import create_train_state, init_on_mesh
from train.data import pipeline as input_pipeline

RECIPE = 'configs/digits_cnn.py:tiny'


def _tiny_state(mesh, num_classes=10, shape=(8, 8, 1)):
  model = zoo.create_model('cnn', num_classes=num_classes, features=(4, 8), hidden=16,
                           dropout_rate=0.0)
  tx = optim.make_optimizer(
      common.optim(learning_rate=1e-2, schedule='constant'), 100, 10)
  init = functools.partial(create_train_state, model, tx, input_shape=shape)
  return init_on_mesh(init, jax.random.key(0), parallel.replicated(mesh))[0]


def _batch(mesh, n=8, seed=0):
  rng = np.random.default_rng(seed)
  batch = {'image': rng.random((n, 8, 8, 1), np.float32),
           'label': rng.integers(0, 10, n).astype(np.int32)}
  return parallel.shard_batch(batch, mesh)


def test_train_step_is_traced_once_and_lowers_the_loss():
  mesh = parallel.make_mesh()
  state = _tiny_state(mesh)
  step = jax.jit(functools.partial(chex.assert_max_traces(classify.train_step, n=1),
                                   label_smoothing=0.1), donate_argnums=0)
  batch = _batch(mesh)
  losses = []
  for _ in range(30):
    state, metrics = step(state, batch, jax.random.key(1))
    losses.append(float(metrics['loss']))
  assert int(state.step) == 30
  assert losses[-1] < 0.5 * losses[0]
  chex.assert_trees_all_equal_shapes_and_dtypes(
      state.params, _tiny_state(mesh).params)


def test_eval_counts_each_example_once_with_padding():
  mesh = parallel.make_mesh()
  state = _tiny_state(mesh)
  batch = jax.device_get(_batch(mesh, n=8))
  mask = np.array([1, 1, 1, 1, 1, 0, 0, 0], bool)
  padded = {'image': batch['image'], 'label': batch['label'], 'mask': mask}
  task = classify.ClassifyTask(digits_cnn.get_config())
  eval_fn = jax.jit(lambda state, batch, rng: classify.eval_step(state, batch))
  got, images = run_lib.evaluate_split(task, eval_fn, state, [padded],
                                       parallel.JitParallelism(mesh), jax.random.key(0))
  np.testing.assert_array_equal(images, batch['image'][:5])
  logits = state.apply_fn({'params': state.params, 'batch_stats': state.batch_stats},
                          jnp.asarray(batch['image'][:5]), train=False)
  expected_loss = float(losses.cross_entropy(logits, batch['label'][:5], 0.0).mean())
  assert got['count'] == 5
  np.testing.assert_allclose(got['loss'], expected_loss, rtol=1e-5)
  np.testing.assert_allclose(
      got['accuracy'], np.mean(np.argmax(logits, -1) == batch['label'][:5]), rtol=1e-6)


def _records(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl'), encoding='utf-8') as f:
    return [json.loads(line) for line in f]


def test_a_short_run_writes_metrics_events_checkpoints_and_a_trace(tiny_config, tmp_path,
                                                                  capsys):
  workdir = str(tmp_path / 'run')
  config = tiny_config(RECIPE, profile_steps=(3, 4))
  final = classify.train_and_evaluate(config, workdir)
  assert glob.glob(os.path.join(workdir, 'profile/plugins/profile/*/*.xplane.pb'))
  info = input_pipeline.get_dataset_info(config.data)
  assert final['count'] == info.num_validation and final['test_count'] == info.num_eval
  records = _records(workdir)
  evals = [r for r in records if r['split'] == 'validation']
  assert [r['step'] for r in evals] == [2, 4]
  for record in records:
    assert {'step', 'split', 'loss', 'accuracy'} <= record.keys()
  assert 'top5_accuracy' in evals[-1]
  assert os.listdir(os.path.join(workdir, 'tensorboard'))
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) >= ['2', '4']
  out = capsys.readouterr().out
  assert 'steps/s' in out and 'ETA' in out and 'Final eval on 287 held_out examples' in out
  assert 'Test on 360 test examples with the best held_out accuracy checkpoint' in out


def test_an_interrupted_run_resumes_to_the_same_result(tiny_config, tmp_path, monkeypatch,
                                                       capsys):
  config = tiny_config(RECIPE)
  straight = classify.train_and_evaluate(config, str(tmp_path / 'straight'))

  calls = {'n': 0}
  real_shard = parallel.shard_batch

  def shard_then_die(batch, mesh):
    calls['n'] += 1
    if calls['n'] == 7:  # step 4: past the checkpoint at step 2 (after its 3 eval batches)
      raise KeyboardInterrupt
    return real_shard(batch, mesh)

  monkeypatch.setattr(parallel, 'shard_batch', shard_then_die)
  with pytest.raises(KeyboardInterrupt):
    classify.train_and_evaluate(config, str(tmp_path / 'resumed'))
  monkeypatch.setattr(parallel, 'shard_batch', real_shard)
  capsys.readouterr()
  resumed = classify.train_and_evaluate(config, str(tmp_path / 'resumed'))
  assert 'Resuming from the checkpoint at step 2' in capsys.readouterr().out
  for name in ('loss', 'accuracy'):
    np.testing.assert_allclose(resumed[name], straight[name], rtol=1e-5)


def test_a_named_tfds_dataset_trains_under_mock_data(tiny_config, tmp_path):
  config = tiny_config(RECIPE)
  config.data.dataset = 'mnist'
  config.data.normalization = 'none'
  # 64 mock examples in 8 shards: a held-out fifth could empty a shard.
  config.data.validation_split = None
  with tfds.testing.mock_data(num_examples=64):
    final = classify.train_and_evaluate(config, str(tmp_path / 'mnist'))
  assert final['count'] == 64
  assert np.isfinite(final['loss'])


def test_unknown_model_is_a_user_error(tiny_config, tmp_path):
  with pytest.raises(UserError, match="config.model='resnet5'"):
    classify.train_and_evaluate(tiny_config(RECIPE, model='resnet5'), str(tmp_path / 'w'))


def test_batch_size_must_split_over_devices(tiny_config, tmp_path):
  with pytest.raises(UserError, match='batch_size=30 must be a multiple'):
    classify.train_and_evaluate(tiny_config(RECIPE, batch_size=30), str(tmp_path / 'w'))

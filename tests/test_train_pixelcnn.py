"""train.pixelcnn: quantization, the independent baseline, the steps, and whole short runs."""

import functools
import json
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

import zoo
from configs import cifar10_pixelcnn, common, digits_pixelcnn, mnist_pixelcnn
from train import pixelcnn as trainer
from train.core import build, optim, parallel
from train.core.errors import UserError
from train.core.state import create_train_state, init_on_mesh
from train.data import pipeline as input_pipeline
from train.metrics import likelihood
from zoo import pixelcnn

RECIPE = 'configs/digits_pixelcnn.py:tiny'


def _tiny_state(mesh, model_name='pixelcnn_tiny', shape=(8, 8, 1)):
  tx = optim.make_optimizer(
      common.optim(learning_rate=1e-2, schedule='constant'), 100, 10)
  init = functools.partial(create_train_state, zoo.create_model(model_name), tx,
                           input_shape=shape)
  return init_on_mesh(init, jax.random.key(0), parallel.replicated(mesh))[0]


def _records(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl'), encoding='utf-8') as f:
    return [json.loads(line) for line in f]


def test_quantize_binarizes_at_the_threshold_and_keeps_8_bit_values():
  images = jnp.array([0.0, 0.3, 0.5, 0.51, 1.0])
  np.testing.assert_array_equal(likelihood.quantize(images, 2, 0.5), [0, 0, 0, 1, 1])
  np.testing.assert_array_equal(likelihood.quantize(images, 2, 0.25), [0, 1, 1, 1, 1])
  levels = jnp.arange(256)
  np.testing.assert_array_equal(likelihood.quantize(levels / 255, 256, 0.5), levels)


def _hand_made_batch():
  """Three 1x2 training images (1,0), (1,0), (0,0) and one padding image (1,1) to be ignored."""
  image = np.array([[0.9, 0.2], [0.7, 0.0], [0.1, 0.4], [1.0, 1.0]], np.float32)
  return {'image': image.reshape(4, 1, 2, 1), 'mask': np.array([1, 1, 1, 0], bool)}


def test_independent_baseline_on_a_hand_made_example():
  mesh = parallel.make_mesh()
  log_probs, n = likelihood.fit_independent_baseline([_hand_made_batch()], mesh, num_levels=2,
                                                  threshold=0.5)
  assert n == 3
  chex.assert_shape(log_probs, (1, 2, 1, 2))
  # Add-one smoothing: pixel 0 is 1 in 2 of 3 images, p(1) = 3/5; pixel 1 never, p(1) = 1/5.
  np.testing.assert_allclose(np.exp(log_probs).reshape(2, 2), [[0.4, 0.6], [0.8, 0.2]],
                             rtol=1e-6)
  test = jnp.array([[1, 1], [0, 0], [1, 0]]).reshape(3, 1, 2, 1)
  np.testing.assert_allclose(
      likelihood.independent_nll(log_probs, test),
      [-np.log(0.6) - np.log(0.2), -np.log(0.4) - np.log(0.8), -np.log(0.6) - np.log(0.8)],
      rtol=1e-6)


def test_eval_step_sums_model_and_baseline_nll_over_real_images_only():
  mesh = parallel.make_mesh()
  state = _tiny_state(mesh)
  rng = np.random.default_rng(0)
  batch = {'image': rng.random((8, 8, 8, 1), np.float32), 'mask': np.arange(8) < 5}
  log_probs = jnp.log(jnp.full((8, 8, 1, 2), 0.5))  # a fair coin: 64 ln 2 nats per image
  sums = jax.jit(functools.partial(trainer.eval_step, num_levels=2, threshold=0.5))(
      state, parallel.shard_batch(batch, mesh), log_probs)
  x = likelihood.quantize(jnp.asarray(batch['image'][:5]), 2, 0.5)
  logits = state.apply_fn({'params': state.params}, pixelcnn.to_input(x, 2), train=False)
  np.testing.assert_allclose(sums['nll'], -pixelcnn.log_likelihood(logits, x).sum(), rtol=1e-5)
  np.testing.assert_allclose(sums['baseline_nll'], 5 * 64 * np.log(2), rtol=1e-6)
  assert float(sums['count']) == 5


def test_train_step_is_traced_once_and_lowers_the_nll():
  mesh = parallel.make_mesh()
  state = _tiny_state(mesh)
  step = jax.jit(functools.partial(chex.assert_max_traces(trainer.train_step, n=1),
                                   num_levels=2, threshold=0.5), donate_argnums=0)
  rng = np.random.default_rng(0)
  batch = parallel.shard_batch({'image': rng.random((8, 8, 8, 1), np.float32)}, mesh)
  losses = []
  for _ in range(20):
    state, metrics = step(state, batch, jax.random.key(0))
    losses.append(float(metrics['loss']))
  assert int(state.step) == 20
  assert losses[-1] < 0.8 * losses[0]
  np.testing.assert_allclose(metrics['bits_per_dim'], losses[-1] / (64 * np.log(2)), rtol=1e-5)


def _split_levels(config, split):
  data = config.data.copy_and_resolve_references()
  data.eval_split = split
  batches = list(input_pipeline.make_eval_iterator(data, global_batch_size=512))
  images = np.concatenate([b['image'][b['mask']] for b in batches])
  return (images > config.binarize_threshold).astype(int)


def test_a_short_run_on_digits_writes_metrics_grids_and_checkpoints(tiny_config, tiny_run):
  workdir, final, out = tiny_run(trainer, RECIPE)
  evals = [r for r in _records(workdir) if r['split'] == 'eval']
  assert [r['step'] for r in evals] == [2, 4]
  for record in evals:
    assert {'nll', 'bits_per_dim', 'baseline_nll', 'baseline_bits_per_dim',
            'samples_per_second', 'count'} <= record.keys()
  assert final['count'] == 360 and final['samples_per_second'] > 0
  np.testing.assert_allclose(final['bits_per_dim'], final['nll'] / (64 * np.log(2)), rtol=1e-6)
  # The baseline is fitted on the training split and scored on the test split.
  config = tiny_config(RECIPE)  # the run's
  train, test = _split_levels(config, 'train'), _split_levels(config, 'test')
  p = (train.sum(0) + 1) / (len(train) + 2)
  expected = -np.mean(np.sum(np.log(np.where(test == 1, p, 1 - p)), axis=(1, 2, 3)))
  np.testing.assert_allclose(final['baseline_nll'], expected, rtol=1e-5)
  # 8 samples in a 3x3 grid and 4 (original | completion) pairs in a 2x2 grid, 8x enlarged.
  samples = np.asarray(Image.open(os.path.join(workdir, 'images', 'samples_0000004.png')))
  assert samples.shape == (3 * 65 + 1, 3 * 65 + 1)
  completions = Image.open(os.path.join(workdir, 'images', 'completions_0000004.png'))
  assert completions.size == (2 * (17 * 8 + 1) + 1, 2 * 65 + 1)
  assert os.listdir(os.path.join(workdir, 'tensorboard'))
  assert {'2', '4'} <= set(os.listdir(os.path.join(workdir, 'checkpoints')))
  assert 'Final eval on 360 test examples at step 4' in out and 'samples/s' in out


def test_a_named_tfds_dataset_trains_under_mock_data_with_256_levels(tiny_config, tmp_path):
  config = tiny_config(RECIPE, num_levels=256, num_steps=2, eval_every_epochs=1.0,
                       checkpoint_every_epochs=1.0)
  config.model_kwargs = {'features': 12}  # gated colour layers: a multiple of 3 channels
  config.data.dataset = 'cifar10'
  config.batch_size = 16
  config.eval_batch_size = 16
  with tfds.testing.mock_data(num_examples=32):
    final = trainer.train_and_evaluate(config, str(tmp_path / 'cifar10'))
  assert final['count'] == 32
  for name in ('nll', 'bits_per_dim', 'baseline_nll', 'samples_per_second'):
    assert np.isfinite(final[name])
  samples = np.asarray(Image.open(os.path.join(tmp_path, 'cifar10', 'images',
                                               'samples_0000002.png')))
  assert samples.shape[-1] == 3


@pytest.mark.parametrize('recipe,image_shape,output_shape', [
    (digits_pixelcnn, (8, 8, 1), (8, 8, 1)),
    (mnist_pixelcnn, (28, 28, 1), (28, 28, 1)),
    (cifar10_pixelcnn, (32, 32, 3), (32, 32, 3, 256)),
])
def test_recipes_build_their_models(recipe, image_shape, output_shape):
  config = recipe.get_config()
  trainer.check_config(config)
  model = build.pixelcnn_model(config, image_shape[-1])
  x = jnp.zeros((1, *image_shape))
  logits = jax.eval_shape(lambda: model.apply(model.init(jax.random.key(0), x, train=False), x,
                                              train=False))
  chex.assert_shape(logits, (1, *output_shape))


@pytest.mark.parametrize('field,value,message', [
    ('model', 'cnn', "config.model='cnn'"),
    ('num_levels', 1, 'config.num_levels=1'),
    ('binarize_threshold', 1.5, 'config.binarize_threshold=1.5'),
    ('num_samples', 6, 'num_samples=6 must be a multiple'),
])
def test_bad_fields_are_user_errors(tiny_config, tmp_path, field, value, message):
  with pytest.raises(UserError, match=message):
    trainer.train_and_evaluate(tiny_config(RECIPE, **{field: value}), str(tmp_path / 'w'))


def test_normalized_images_are_a_user_error(tiny_config, tmp_path):
  config = tiny_config(RECIPE)
  config.data.normalization = 'featurewise'
  with pytest.raises(UserError, match='normalization=none'):
    trainer.train_and_evaluate(config, str(tmp_path / 'w'))

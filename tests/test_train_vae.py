"""train.vae and train.anomaly: the steps, the evaluation, and whole short runs."""

import csv
import functools
import json
import math
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image
from sklearn import metrics as sk_metrics

from configs import common
from train import anomaly
from train import vae as vae_train
from train.core import build, optim, parallel
from train.core import config as config_lib
from train.core import run as run_lib
from train.core.errors import UserError
from train.core.state import create_train_state, init_on_mesh
from train.data import pipeline as input_pipeline
from train.metrics import vae_grids
from zoo import vae

TINY = dict(latent_dim=3, features=(4, 8))


RECIPE = 'configs/digits_vae.py:tiny'


def _tiny_state(mesh, model):
  tx = optim.make_optimizer(common.optim(name='adam', learning_rate=1e-2,
                                                       schedule='constant'), 100, 10)
  init = functools.partial(create_train_state, model, tx, input_shape=model.image_shape)
  return init_on_mesh(init, jax.random.key(0), parallel.replicated(mesh))[0]


def _digits_like(n=8, seed=0):
  """Images on the 17 levels k / 16, as the logistic digits model scores them."""
  return np.random.default_rng(seed).integers(0, 17, (n, 8, 8, 1)).astype(np.float32) / 16


def _records(workdir, split):
  with open(os.path.join(workdir, 'metrics.jsonl'), encoding='utf-8') as f:
    return [r for r in map(json.loads, f) if r['split'] == split]


def test_prepare_images():
  images = jnp.full((4, 16, 16, 1), 0.3)
  key = jax.random.key(0)
  bernoulli = vae.VAE(**TINY, image_shape=(16, 16, 1))
  dynamic = vae_train.prepare_images(images, key, model=bernoulli, binarize='dynamic')
  assert set(np.unique(dynamic)) == {0.0, 1.0}
  assert abs(float(dynamic.mean()) - 0.3) < 0.05
  other = vae_train.prepare_images(images, jax.random.key(1), model=bernoulli, binarize='dynamic')
  assert not np.array_equal(dynamic, other)
  threshold = vae_train.prepare_images(jnp.array([0.2, 0.5, 0.7]), key, model=bernoulli,
                                       binarize='threshold')
  np.testing.assert_array_equal(threshold, [0, 0, 1])
  logistic = vae.VAE(**TINY, likelihood='logistic', num_bins=17)
  digits = np.round(np.arange(17) * 255 / 16) / 255  # as the digits pipeline stores them
  snapped = vae_train.prepare_images(jnp.asarray(digits), key, model=logistic, binarize='none')
  np.testing.assert_allclose(snapped, np.arange(17) / 16, atol=1e-7)


def test_train_step_is_traced_once_and_lowers_the_loss():
  mesh = parallel.make_mesh()
  model = vae.VAE(**TINY, image_shape=(8, 8, 1), likelihood='logistic', num_bins=17)
  state = _tiny_state(mesh, model)
  step = jax.jit(functools.partial(chex.assert_max_traces(vae_train.train_step, n=1),
                                   model=model, beta=1.0, binarize='none'), donate_argnums=0)
  batch = parallel.shard_batch({'image': _digits_like()}, mesh)
  losses = []
  for _ in range(40):
    state, metrics = step(state, batch, jax.random.key(1))
    losses.append(float(metrics['loss']))
  assert int(state.step) == 40
  assert losses[-1] < 0.8 * losses[0]
  np.testing.assert_allclose(metrics['neg_elbo'], metrics['reconstruction'] + metrics['kl'],
                             rtol=1e-5)


def test_eval_counts_each_example_once_with_padding():
  mesh = parallel.make_mesh()
  model = vae.VAE(**TINY, image_shape=(8, 8, 1), likelihood='logistic', num_bins=17)
  state = _tiny_state(mesh, model)
  images = _digits_like()
  mask = np.array([1, 1, 1, 1, 1, 0, 0, 0], bool)
  padded = {'image': images, 'label': np.zeros(8, np.int32), 'mask': mask}
  eval_fn = jax.jit(functools.partial(vae_train.eval_step, model=model, binarize='none',
                                      iwae_k=200, iwae_chunk_size=50))
  key = jax.random.key(3)
  task = vae_train.VaeTask(config_lib.load_config(RECIPE))
  task.info = input_pipeline.DatasetInfo(10, (8, 8, 1), 0, 0, ())
  got, first = run_lib.evaluate_split(task, eval_fn, state, [padded],
                                      parallel.JitParallelism(mesh), key)
  assert got['count'] == 5
  np.testing.assert_array_equal(first, images[:5])
  # The same sample of the bound on the five real images alone (the rng is per batch).
  _, sample_rng, _ = jax.random.split(jax.random.fold_in(key, 0), 3)
  neg_elbo, _, kl = jax.jit(functools.partial(vae_train.negative_elbo, model=model))(
      state.params, jnp.asarray(images), sample_rng)
  np.testing.assert_allclose(got['neg_elbo'], neg_elbo[:5].mean(), rtol=1e-5)
  np.testing.assert_allclose(got['kl'], kl[:5].mean(), rtol=1e-5)
  np.testing.assert_allclose(got['bits_per_dim'], got['neg_elbo'] / (64 * math.log(2)),
                             rtol=1e-6)
  # The importance-weighted bound is tighter than the ELBO (on average, with k = 200).
  assert got['iwae_nll'] < got['neg_elbo']
  np.testing.assert_allclose(got['iwae_bits_per_dim'], got['iwae_nll'] / (64 * math.log(2)),
                             rtol=1e-6)


def test_grids_lay_out_the_pictures():
  model = vae.VAE(**TINY, image_shape=(8, 8, 1), likelihood='logistic', num_bins=17)
  x = jnp.asarray(_digits_like(n=5))
  params = model.init({'params': jax.random.key(0), 'sample': jax.random.key(0)}, x,
                      train=False)['params']
  grids = jax.jit(functools.partial(vae_train.grids, model=model, binarize='none'))(
      params, x, jax.random.key(1))
  assert grids['samples'].shape == (vae_grids.NUM_SAMPLES, 8, 8, 1)
  recon = grids['reconstructions']
  assert recon.shape == (10, 8, 8, 1)
  np.testing.assert_array_equal(recon[0::2], x)  # inputs, each beside its reconstruction
  np.testing.assert_allclose(recon[1::2], model.apply({'params': params}, x,
                                                      method='reconstruct'), rtol=1e-6)
  rows = grids['interpolations'].reshape(2, vae_grids.NUM_STEPS + 2, 8, 8, 1)
  np.testing.assert_array_equal(rows[:, 0], x[0:4:2])  # a, ..., b for pairs (0, 1), (2, 3)
  np.testing.assert_array_equal(rows[:, -1], x[1:4:2])
  # The interpolation starts and ends at the reconstructions of a and b.
  np.testing.assert_allclose(rows[:, 1], recon[1:8:4], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(rows[:, -2], recon[3:8:4], rtol=1e-5, atol=1e-6)
  for grid in grids.values():
    assert 0 <= float(grid.min()) and float(grid.max()) <= 1


def test_a_short_run_writes_metrics_and_grids(tiny_run):
  workdir, final, _ = tiny_run(vae_train, RECIPE)
  evals = _records(workdir, 'eval')
  assert [r['step'] for r in evals] == [2, 4]
  assert 'iwae_nll' not in evals[0]  # the importance-weighted bound is for the final eval
  assert final['count'] == 360 and final['iwae_k'] == 20
  assert final['iwae_nll'] < final['neg_elbo']
  assert evals[-1]['neg_elbo'] < evals[0]['neg_elbo']
  for record in _records(workdir, 'train'):
    assert {'loss', 'neg_elbo', 'reconstruction', 'kl', 'grad_norm'} <= record.keys()
  grid_sizes = {'samples': (8, 8), 'reconstructions': (8, 8), 'interpolations': (10, 16)}
  for name, (columns, rows) in grid_sizes.items():
    with Image.open(os.path.join(workdir, 'images', f'{name}_0000004.png')) as image:
      # 8x8 digits shown 8 times larger, one pixel between cells.
      assert image.size == (columns * 65 + 1, rows * 65 + 1)
  assert os.listdir(os.path.join(workdir, 'tensorboard'))
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == ['2', '4']


def test_anomaly_scoring_after_training_on_a_subset_of_classes(tiny_config, tmp_path, capsys):
  config = tiny_config('configs/digits_vae.py:anomaly+tiny', iwae_k=0)
  workdir = str(tmp_path / 'anomaly')
  with pytest.raises(UserError, match='no checkpoint'):
    anomaly.score_dataset(config, workdir)
  trained = vae_train.train_and_evaluate(config, workdir)
  assert trained['count'] == 324  # the test digits 0-8 only
  summary = anomaly.score_dataset(config, workdir)
  assert 'AUROC' in capsys.readouterr().out
  with open(os.path.join(workdir, 'anomaly', 'neg_elbo_test.csv'), encoding='utf-8') as f:
    rows = list(csv.DictReader(f))
  labels = np.array([int(r['label']) for r in rows])
  scores = np.array([float(r['score']) for r in rows])
  assert len(rows) == summary['count'] == 360  # every test digit, nines included
  assert np.sum(labels == 9) == 36
  assert summary['auroc'] == pytest.approx(sk_metrics.roc_auc_score(labels == 9, scores),
                                           abs=1e-4)
  assert summary['mean_score_anomalous'] == pytest.approx(scores[labels == 9].mean(), rel=1e-4)
  assert [r['step'] for r in _records(workdir, 'anomaly_neg_elbo')] == [4]
  assert os.path.exists(os.path.join(workdir, 'images', 'anomaly_neg_elbo_test_0000004.png'))


def test_anomaly_scores_match_their_definitions():
  model = vae.VAE(**TINY, image_shape=(8, 8, 1), likelihood='logistic', num_bins=17)
  x = jnp.asarray(_digits_like())
  params = model.init({'params': jax.random.key(0), 'sample': jax.random.key(0)}, x,
                      train=False)['params']
  key = jax.random.key(2)
  score = lambda name, n: jax.jit(functools.partial(
      anomaly.anomaly_scores, model=model, score=name, num_samples=n))(params, x, key)
  errors = score('reconstruction_error', 1)
  reconstructions = model.apply({'params': params}, x, method='reconstruct')
  np.testing.assert_allclose(errors, np.square(reconstructions - x).sum(axis=(1, 2, 3)),
                             rtol=1e-5)
  scores = score('neg_elbo', 3)
  neg_elbo = jax.jit(functools.partial(vae_train.negative_elbo, model=model))
  singles = [neg_elbo(params, x, k)[0] for k in jax.random.split(key, 3)]
  np.testing.assert_allclose(scores, np.mean(singles, axis=0), rtol=1e-5)


def test_the_mnist_recipe_trains_under_mock_data(tmp_path):
  config = config_lib.load_config('configs/mnist_vae.py')
  config.data.data_dir = str(tmp_path)
  config.update(dict(batch_size=16, eval_batch_size=32, num_epochs=1.0, eval_every_epochs=1.0,
                     checkpoint_every_epochs=1.0, iwae_k=2))
  with tfds.testing.mock_data(num_examples=48):
    final = vae_train.train_and_evaluate(config, str(tmp_path / 'mnist'))
  assert final['count'] == 48
  assert np.isfinite(final['neg_elbo']) and np.isfinite(final['iwae_nll'])
  assert final['bits_per_dim'] == pytest.approx(final['neg_elbo'] / (784 * math.log(2)))


def test_the_cifar10_recipe_builds_its_model():
  config = config_lib.load_config('configs/cifar10_vae.py')
  model = build.vae_model(config, (32, 32, 3))
  x = jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32)
  variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), x)
  outputs, mean, _ = jax.eval_shape(
      lambda v, x: model.apply(v, x, train=True, rngs={'sample': jax.random.key(0)}),
      variables, x)
  assert outputs.shape == (2, 32, 32, 6) and mean.shape == (2, 128)  # 256-level logistic


@pytest.mark.parametrize('changes, message', [
    (dict(binarize='none', likelihood='bernoulli'), "config.binarize='none' with likelihood"),
    (dict(binarize='dynamic'), "config.binarize='dynamic' with likelihood 'logistic'"),
    (dict(features=(4, 4, 4, 4)), r'divisible by 2\*\*len\(config.model_kwargs.features\) = 16'),
    (dict(normalization='featurewise'), "config.data.normalization='featurewise'"),
])
def test_config_errors_name_the_field(tiny_config, tmp_path, changes, message):
  config = tiny_config(RECIPE)
  for name, value in changes.items():
    if name in config.model_kwargs:
      config.model_kwargs[name] = value
    elif name in config.data:
      config.data[name] = value
    else:
      config[name] = value
  with pytest.raises(UserError, match=message):
    vae_train.train_and_evaluate(config, str(tmp_path / 'bad'))

"""train.gan and train.gan_eval: losses, the compiled step, sampling, the feature network's
input, the failure monitors, a whole short run on the offline digits, a step on mocked MNIST."""

import functools
import json
import os

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds
from conftest import assert_same_run, checkpoint_params, read_metrics, train_task

import zoo
from configs import digits_dcgan
from train import classify, gan, gan_eval
from train.core import build, losses, parallel
from train.core.config import apply_overrides, load_config
from train.core.errors import UserError
from train.core.task import Length
from train.data import pipeline as input_pipeline
from train.metrics import feature_nets, gan_evaluation, gan_metrics

CLASSIFIER_CONFIG = 'configs/digits_cnn.py'


# A small digits_cnn on 8x8 digits (about 85% accurate).
CLASSIFIER_OVERRIDES = (
    'data.image_size=(8, 8)', "model_kwargs={'features': (8, 16), 'hidden': 32}",
    'optim.warmup_epochs=0.0', 'num_epochs=8.0', 'eval_every_epochs=8.0',
    'checkpoint_every_epochs=8.0', 'log_every_steps=1000')


def _train_classifier(overrides, workdir):
  """A digits_cnn run with `overrides`, as `python -m train.classify` would make it."""
  config = load_config(CLASSIFIER_CONFIG)
  apply_overrides(config, [o.split('=', 1) for o in overrides])
  classify.train_and_evaluate(config, workdir)


@pytest.fixture(scope='session')
def classifier(tmp_path_factory, data_dir):
  """(data_dir, classifier workdir, overrides) of a digits classifier trained for the module."""
  root = tmp_path_factory.mktemp('classifier')
  workdir = str(root / 'run')
  overrides = (f'data.data_dir={data_dir}', *CLASSIFIER_OVERRIDES)
  _train_classifier(overrides, workdir)
  return data_dir, workdir, overrides


def _config(classifier, **changes):
  data_dir, workdir, overrides = classifier
  config = digits_dcgan.get_config()
  config.data.data_dir = data_dir
  config.data.image_size = (8, 8)
  config.generator.kwargs = ml_collections.ConfigDict(dict(width=4, latent_dim=8))
  config.discriminator.kwargs.width = 4
  config.batch_size = 32
  config.num_epochs = 1.0
  config.eval_every_epochs = 0.5
  config.checkpoint_every_epochs = 0.5
  config.log_every_steps = 11
  config.eval.classifier_overrides = overrides
  config.eval.classifier_workdir = workdir
  config.eval.num_samples = 72
  config.eval.batch_size = 32
  config.eval.num_splits = 4
  config.eval.num_grid = 16
  config.eval.grid_size = ()  # as generated
  for name, value in changes.items():
    config[name] = value
  return config


def _state(mesh, g_lr=2e-4, d_lr=2e-4, image_shape=(8, 8, 1)):
  config = digits_dcgan.get_config()
  config.generator.kwargs = ml_collections.ConfigDict(dict(width=8, latent_dim=8))
  config.discriminator.kwargs.width = 8
  config.generator.optim.learning_rate = g_lr
  config.discriminator.optim.learning_rate = d_lr
  task = gan.GanTask(config)
  task.build_networks(input_pipeline.DatasetInfo(10, image_shape, 0, 0, ()), Length(10, 10))
  # Replicated on the mesh as `run` does it, so the step's output state matches its input.
  init = jax.jit(task.init, out_shardings=parallel.replicated(mesh))
  return task.generator, init(jax.random.key(0))


def _real_batch(mesh, n=16, seed=0):
  """Bright squares on black, in [0, 1]: something to tell from the generator's output."""
  images = np.zeros((n, 8, 8, 1), np.float32)
  offsets = np.random.default_rng(seed).integers(0, 4, (n, 2))
  for image, (i, j) in zip(images, offsets):
    image[i:i + 4, j:j + 4] = 1.0
  return parallel.shard_batch({'image': images}, mesh)


def test_losses_at_an_undecided_discriminator_and_their_gradients():
  zero = jnp.zeros(4)
  np.testing.assert_allclose(losses.discriminator_loss(zero, zero, 'non_saturating'), 2 * np.log(2),
                             rtol=1e-6)
  np.testing.assert_allclose(losses.generator_loss(zero, 'non_saturating'), np.log(2), rtol=1e-6)
  np.testing.assert_allclose(losses.discriminator_loss(zero, zero, 'hinge'), 2.0)
  np.testing.assert_allclose(losses.generator_loss(zero, 'hinge'), 0.0)
  # A confident discriminator (fake logit -10): the minimax loss saturates, the default does not.
  confident = jnp.full(4, -10.0)
  slope = lambda kind: float(jax.grad(lambda x: losses.generator_loss(x, kind))(confident).sum())
  assert abs(slope('minimax')) < 1e-3 < 0.99 < abs(slope('non_saturating'))
  assert slope('non_saturating') < 0 and slope('minimax') < 0 and slope('hinge') < 0


def test_train_step_is_traced_once_and_updates_both_networks():
  mesh = parallel.make_mesh()
  generator, state = _state(mesh)
  before = jax.device_get(state)
  step = jax.jit(functools.partial(chex.assert_max_traces(gan.train_step, n=1),
                                   loss='non_saturating', latent_dim=generator.latent_dim),
                 donate_argnums=0)
  for _ in range(3):
    state, metrics = step(state, _real_batch(mesh), jax.random.key(1))
  assert int(state.step) == int(state.discriminator.step) == 3
  assert set(metrics) == {'d_loss', 'g_loss', 'd_real_accuracy', 'd_fake_accuracy', 'd_real',
                          'd_fake', 'd_grad_norm', 'g_grad_norm'}
  chex.assert_tree_all_finite(metrics)
  for name in ('generator', 'discriminator'):
    old, new = getattr(before, name), getattr(state, name)
    chex.assert_trees_all_equal_shapes_and_dtypes(old.params, new.params)
    assert not np.allclose(jax.tree.leaves(old.params)[0], jax.tree.leaves(new.params)[0])
    assert not all(np.allclose(a, b) for a, b in
                   zip(jax.tree.leaves(old.batch_stats), jax.tree.leaves(new.batch_stats)))


@pytest.mark.parametrize('learner', ['discriminator', 'generator'])
def test_each_network_alone_lowers_its_own_loss(learner):
  """With the other network's learning rate at 0, each update descends its own loss."""
  mesh = parallel.make_mesh()
  rates = dict(g_lr=1e-2, d_lr=0.0) if learner == 'generator' else dict(g_lr=0.0, d_lr=1e-2)
  generator, state = _state(mesh, **rates)
  step = jax.jit(functools.partial(gan.train_step, loss='non_saturating',
                                   latent_dim=generator.latent_dim))
  losses = []
  for _ in range(15):
    state, metrics = step(state, _real_batch(mesh), jax.random.key(2))
    losses.append(float(metrics['g_loss' if learner == 'generator' else 'd_loss']))
  assert losses[-1] < 0.8 * losses[0]


def test_sampler_gives_fixed_images_of_the_data_shape_and_range(classifier):
  mesh = parallel.make_mesh()
  generator, state = _state(mesh)
  sampler = gan_evaluation.Sampler(_config(classifier, seed=3), mesh, generator.latent_dim)
  grid = sampler.grid(state.generator)
  chex.assert_shape(grid, (16, 8, 8, 1))
  assert grid.min() >= 0 and grid.max() <= 1 and grid.std() > 0
  np.testing.assert_array_equal(grid, sampler.grid(state.generator))
  config = _config(classifier, seed=3)
  config.eval.grid_size = (16, 16)  # shown bilinearly upsampled: the same images, smoother
  shown = gan_evaluation.Sampler(config, mesh, generator.latent_dim).grid(state.generator)
  chex.assert_shape(shown, (16, 16, 16, 1))
  assert shown.min() >= 0 and shown.max() <= 1 and abs(shown.mean() - grid.mean()) < 0.02
  batches = list(sampler.batches(state.generator))
  assert len(batches) == 3  # 72 samples in batches of 32
  images = np.concatenate([np.asarray(images) for images, _ in batches])
  masks = np.concatenate([np.asarray(mask) for _, mask in batches])
  chex.assert_shape(images, (96, 8, 8, 1))
  assert masks.sum() == 72 and masks[:72].all()
  assert np.abs(images).max() <= 1 and len(np.unique(images[:72].reshape(72, -1), axis=0)) == 72


def test_the_feature_network_sees_what_the_classifier_was_trained_on(classifier):
  """GAN-scale images through `FeatureNet` give the features of the classifier's own inputs."""
  data_dir, workdir, overrides = classifier
  mesh = parallel.make_mesh()
  net = feature_nets.classifier_net(CLASSIFIER_CONFIG, overrides, workdir, mesh)
  gan_data = _config(classifier).data
  classifier_config = load_config(CLASSIFIER_CONFIG)
  apply_overrides(classifier_config, [o.split('=', 1) for o in overrides])
  assert classifier_config.data.normalization == 'featurewise'
  raw = next(input_pipeline.make_eval_iterator(gan_data, global_batch_size=32))['image']
  seen = next(input_pipeline.make_eval_iterator(classifier_config.data,
                                                global_batch_size=32))['image']
  features, logits = jax.jit(net.apply)(net.variables, feature_nets.to_signed(jnp.asarray(raw)))
  model = build.classifier(classifier_config, 10)
  expected = zoo.extract_features(model, net.variables, jnp.asarray(seen))['pooled']
  np.testing.assert_allclose(features, expected, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(logits, model.apply(net.variables, jnp.asarray(seen), train=False),
                             rtol=1e-4, atol=1e-4)


def test_a_missing_classifier_says_which_command_trains_it(tmp_path):
  with pytest.raises(UserError, match=(
      r"classifier_workdir='.*nowhere' holds no classifier checkpoint; train the feature "
      r"network first: python -m train.classify --config configs/digits_cnn.py --workdir "
      r".*nowhere --config.num_epochs=1.0 '--config.data.image_size=\(8, 8\)'")):
    feature_nets.classifier_net(CLASSIFIER_CONFIG, ('num_epochs=1.0', 'data.image_size=(8, 8)'),
                                str(tmp_path / 'nowhere'), parallel.make_mesh())


def test_a_classifier_config_that_does_not_build_the_run_says_which_fields_to_set(classifier):
  _, workdir, overrides = classifier
  wider = (*overrides, "model_kwargs={'features': (16, 16), 'hidden': 32}")
  with pytest.raises(UserError, match=(
      r"holds a run of another model or dataset \(params/.* shape .*model_kwargs.*\): set "
      r"config.eval.classifier_config and classifier_overrides to the config that run was "
      r"trained with \(its config.json\)")):
    feature_nets.classifier_net(CLASSIFIER_CONFIG, wider, workdir, parallel.make_mesh())


def test_collapsed_samples_fire_the_mode_collapse_monitors(classifier):
  mesh = parallel.make_mesh()
  config = _config(classifier)
  scorer = gan_evaluation.make_scorer(config, mesh)
  assert scorer.reference.count == 1437 and scorer.held_out.count == 360
  assert scorer.floor['fid'] > 0 and scorer.floor['feature_spread'] > 0.8
  # A "generator" that always draws the same real image, with a little noise.
  image = next(input_pipeline.make_eval_iterator(config.data, global_batch_size=32))['image'][0]
  noise = np.random.default_rng(0).normal(scale=0.01, size=(64, 8, 8, 1))
  collapsed = feature_nets.to_signed(jnp.asarray(np.clip(image + noise, 0, 1), jnp.float32))
  scores = scorer.scores(scorer.summarize_generated([(collapsed, jnp.ones(64, bool))]))
  assert scores['classes_covered'] == 1 and scores['feature_spread'] < 0.1
  assert scores['fid'] > 10 * scorer.floor['fid']
  assert scores['inception_score'] < 1.5 < scorer.floor['inception_score']
  monitor = gan_metrics.FailureMonitor(config.monitor, scorer.floor)
  monitor.observe({'d_loss': 1.0, 'g_loss': 1.0, 'g_grad_norm': 1.0})
  _, warnings = monitor.check(scores)
  assert len(warnings) == 2 and all(w.startswith('mode collapse') for w in warnings)
  _, warnings = monitor.check(scorer.floor)
  assert warnings == []


def test_gradient_and_loss_monitors():
  config = digits_dcgan.get_config().monitor
  healthy = {'classes_covered': 10.0, 'feature_spread': 1.0}
  monitor = gan_metrics.FailureMonitor(config, healthy)
  for d_loss, norm in [(1.0, 5.0), (1.1, 8.0), (0.9, 6.0)]:
    monitor.observe({'d_loss': d_loss, 'g_loss': 1.0, 'g_grad_norm': norm})
  values, warnings = monitor.check(healthy)
  assert warnings == [] and values['g_grad_norm_ratio'] == 0.75
  np.testing.assert_allclose(values['d_loss_oscillation'], (0.1 + 0.2) / 2 / 1.0)
  monitor.observe({'d_loss': 0.001, 'g_loss': 9.0, 'g_grad_norm': 0.01})
  values, warnings = monitor.check(healthy)
  assert values['g_grad_norm_ratio'] == 0.01 / 8
  assert [w.split(':')[0] for w in warnings] == ['vanishing gradients', 'instability']


def _records(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl'), encoding='utf-8') as f:
    return [json.loads(line) for line in f]


def test_a_short_run_writes_grids_scores_and_checkpoints_that_gan_eval_reproduces(
    classifier, tmp_path, capsys):
  config = _config(classifier)
  workdir = str(tmp_path / 'gan')
  final = gan.train_and_evaluate(config, workdir)
  records = _records(workdir)
  evals = [r for r in records if r['split'] == 'eval']
  assert [r['step'] for r in evals] == [22, 44]  # 1437 // 32 = 44 steps per epoch
  for record in evals:
    assert {'fid', 'fid_real', 'inception_score', 'inception_score_real', 'classes_covered',
            'classes_covered_real', 'feature_spread', 'g_grad_norm_ratio',
            'd_loss_oscillation'} <= record.keys()
  train = [r for r in records if r['split'] == 'train']
  assert {'d_loss', 'g_loss', 'd_real_accuracy', 'd_fake_accuracy', 'g_grad_norm',
          'd_grad_norm'} <= train[0].keys()
  assert sorted(os.listdir(os.path.join(workdir, 'images'))) == [
      'real_0000000.png', 'samples_0000022.png', 'samples_0000044.png']
  assert os.listdir(os.path.join(workdir, 'tensorboard'))
  out = capsys.readouterr().out
  assert 'FID of 72 generated images (8-bit) against the 1437 real train images' in out
  assert 'the 360 real test images' in out and 'bilinear resize 8x8 -> 8x8' not in out
  assert 'at step 44: FID' in out

  # The same fixed noise: scoring the last checkpoint again gives the same figures.
  config.eval.checkpoint = 'latest'
  scored = gan_eval.evaluate_checkpoint(config, workdir)
  assert scored['step'] == 44
  for name in ('fid', 'inception_score', 'classes_covered', 'fid_real'):
    np.testing.assert_allclose(scored[name], final[name], rtol=1e-4)
  with open(os.path.join(workdir, 'gan_eval_44.json'), encoding='utf-8') as f:
    assert json.load(f)['protocol'] == scored['protocol']
  assert os.path.isfile(os.path.join(workdir, 'images', 'gan_eval_44.png'))
  config.eval.checkpoint = '7'
  with pytest.raises(UserError, match="config.eval.checkpoint='7'"):
    gan_eval.evaluate_checkpoint(config, workdir)


def test_devices_jit_or_pmap_gradient_accumulation_and_bfloat16(classifier, tmp_path,
                                                                monkeypatch):
  """As tests/test_scale_out.py does for the other tasks: a run on 4 devices under jit is the
  reference for 1 device and for pmap; both networks use BatchNorm, which sees each
  micro-batch's statistics, so accumulation is checked for float32 parameters and finite losses."""
  short = lambda **changes: _config(classifier, num_steps=4, log_every_steps=1, **changes)
  train_task(gan, short(), tmp_path / 'four')
  train_task(gan, short(), tmp_path / 'one', monkeypatch, devices=1)
  assert_same_run(tmp_path / 'four', tmp_path / 'one', 'd_loss', 'g_loss')
  train_task(gan, short(parallelism='pmap'), tmp_path / 'pmap')
  assert_same_run(tmp_path / 'four', tmp_path / 'pmap', 'd_loss', 'g_loss')

  train_task(gan, short(grad_accum_steps=2, dtype='bfloat16'), tmp_path / 'both')
  train_losses = [[r[name] for r in read_metrics(tmp_path / 'both', 'train')]
                  for name in ('d_loss', 'g_loss')]
  assert all(train_losses) and np.all(np.isfinite(train_losses))
  _, params = checkpoint_params(tmp_path / 'both')
  assert {x.dtype for x in jax.tree.leaves(params)} == {np.dtype(np.float32)}


def test_gan_eval_without_a_run_is_a_user_error(classifier, tmp_path):
  with pytest.raises(UserError, match='no checkpoint in .*: train first'):
    gan_eval.evaluate_checkpoint(_config(classifier), str(tmp_path / 'empty'))


def test_a_training_step_on_a_named_tfds_dataset_under_mock_data(tmp_path):
  """MNIST (mocked): networks built for its 28x28 images, one step on a batch of the pipeline."""
  config = digits_dcgan.get_config()
  config.data.dataset, config.data.data_dir = 'mnist', str(tmp_path / 'tfds')
  config.data.image_size = ()  # the dataset's own size
  config.generator.kwargs = ml_collections.ConfigDict(dict(width=4, latent_dim=8))
  config.discriminator.kwargs.width = 4
  mesh = parallel.make_mesh()
  with tfds.testing.mock_data(num_examples=32):
    info = input_pipeline.get_dataset_info(config.data)
    batch = next(input_pipeline.make_train_iterator(config.data, seed=0, global_batch_size=16))
  assert info.image_shape == (28, 28, 1)
  assert batch['image'].min() >= 0 and batch['image'].max() <= 1
  task = gan.GanTask(config)
  task.build_networks(info, Length(1, 1))
  state = task.init(jax.random.key(0))
  state, metrics = jax.jit(functools.partial(gan.train_step, loss='hinge', latent_dim=8))(
      state, parallel.shard_batch(batch, mesh), jax.random.key(0))
  assert int(state.step) == 1
  chex.assert_tree_all_finite(metrics)
  images, _ = gan_evaluation.sample(state.generator, jax.random.key(1), 4, batch_size=4,
                                    latent_dim=8)
  chex.assert_shape(images, (4, 28, 28, 1))


def test_bad_configs_are_user_errors(classifier, tmp_path):
  config = _config(classifier)
  config.data.normalization = 'featurewise'
  with pytest.raises(UserError, match="data.normalization='featurewise'.*normalization=none"):
    gan.train_and_evaluate(config, str(tmp_path / 'a'))
  with pytest.raises(UserError, match="config.loss='wasserstein'"):
    gan.train_and_evaluate(_config(classifier, loss='wasserstein'), str(tmp_path / 'b'))
  config = _config(classifier)
  config.eval.feature_net = 'inception'
  with pytest.raises(UserError, match='config.eval.inception_weights is empty'):
    gan.train_and_evaluate(config, str(tmp_path / 'c'))

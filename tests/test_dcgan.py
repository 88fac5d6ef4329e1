"""Tests for zoo.dcgan: geometry, output ranges, initialization and BatchNorm placement."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import zoo
from zoo import dcgan

KEY = jax.random.key(0)
LATENT = 8


@pytest.mark.parametrize('image_size, stages', [(8, 2), (16, 2), (28, 2), (32, 3), (64, 4)])
def test_num_stages(image_size, stages):
  assert dcgan.num_stages(image_size) == stages


def test_num_stages_rejects_sizes_not_divisible_by_four():
  with pytest.raises(ValueError, match='divisible by 4'):
    dcgan.num_stages(10)


@pytest.mark.parametrize('image_size, decoder', [
    (8, 'transpose'), (16, 'transpose'), (28, 'transpose'), (32, 'transpose'), (64, 'transpose'),
    (28, 'resize')])
def test_generator_and_discriminator_shapes(image_size, decoder):
  g = dcgan.Generator(image_size=image_size, channels=3, width=4, latent_dim=LATENT,
                      decoder=decoder)
  d = dcgan.Discriminator(image_size=image_size, width=4)

  @jax.jit
  def run(z):
    g_vars = g.init(KEY, z, train=False)
    # A large output kernel saturates the tanh: the range must still be [-1, 1].
    g_vars['params']['decoder']['output']['kernel'] *= 1e3
    images, _ = g.apply(g_vars, z, train=True, mutable=['batch_stats'])
    d_vars = d.init(KEY, images, train=False)
    logits, _ = d.apply(d_vars, images, train=True, mutable=['batch_stats'])
    return images, logits, d.apply(d_vars, images, train=False)

  images, logits, eval_logits = run(jax.random.normal(KEY, (3, LATENT)))
  chex.assert_shape(images, (3, image_size, image_size, 3))
  assert (jnp.abs(images) <= 1).all() and (jnp.abs(images) > 0.99).any()
  chex.assert_shape([logits, eval_logits], (3,))
  chex.assert_tree_all_finite((images, logits, eval_logits))


def test_generator_architecture_64():
  """Project to 4x4x(8 width), then four stride-2 transposed convolutions (Radford et al.)."""
  g = dcgan.Generator(image_size=64, width=8, latent_dim=LATENT)
  variables = jax.eval_shape(lambda: g.init(KEY, jnp.zeros((1, LATENT)), train=False))
  params = variables['params']
  assert params['project']['kernel'].shape == (LATENT, 4 * 4 * 64)
  decoder = params['decoder']
  assert [decoder[n]['kernel'].shape[-1] for n in ('stage0', 'stage1', 'stage2', 'output')] == [
      32, 16, 8, 3]
  # BatchNorm after the projection and every hidden stage, not after the output layer.
  assert set(variables['batch_stats']) == {'project_bn', 'decoder'}
  assert set(variables['batch_stats']['decoder']) == {'bn0', 'bn1', 'bn2'}


def _kernels_and_scales(variables):
  flat = {'/'.join(k.key for k in path): np.asarray(v) for path, v in
          jax.tree_util.tree_leaves_with_path(variables['params'])}
  pick = lambda name: np.concatenate([v.ravel() for k, v in flat.items() if k.endswith(name)])
  return pick('kernel'), pick('scale'), pick('bias')


@pytest.mark.parametrize('module, x', [
    (dcgan.Generator(image_size=32, width=16, latent_dim=LATENT), jnp.zeros((1, LATENT))),
    (dcgan.Discriminator(image_size=32, width=16), jnp.zeros((1, 32, 32, 3))),
])
def test_initialization(module, x):
  """Kernels N(0, 0.02), BatchNorm scales N(1, 0.02), biases 0 (the reference code)."""
  kernels, scales, biases = _kernels_and_scales(
      jax.jit(lambda x: module.init(KEY, x, train=False))(x))
  assert kernels.size > 10_000
  np.testing.assert_allclose(kernels.std(), 0.02, rtol=0.05)
  np.testing.assert_allclose(kernels.mean(), 0.0, atol=2e-3)
  assert scales.size > 50
  np.testing.assert_allclose(scales.mean(), 1.0, atol=0.01)
  np.testing.assert_allclose(scales.std(), 0.02, rtol=0.25)
  assert (biases == 0).all()


def test_discriminator_first_layer_has_no_batchnorm():
  d = dcgan.Discriminator(image_size=64, width=4)
  variables = jax.eval_shape(lambda: d.init(KEY, jnp.zeros((1, 64, 64, 3)), train=False))
  encoder = variables['params']['encoder']
  assert set(variables['batch_stats']['encoder']) == {'bn1', 'bn2', 'bn3'}
  assert 'bias' in encoder['stage0']  # no BatchNorm to absorb it
  assert all('bias' not in encoder[f'stage{i}'] for i in (1, 2, 3))
  assert [encoder[f'stage{i}']['kernel'].shape[-1] for i in range(4)] == [4, 8, 16, 32]
  assert variables['params']['logit']['kernel'].shape == (4 * 4 * 32, 1)


def test_bn_axis_name_is_passed_through():
  """Under vmap with the named axis, BatchNorm statistics span both shards."""
  d = dcgan.Discriminator(image_size=8, width=4)
  x = jax.random.normal(KEY, (2, 3, 8, 8, 1))
  variables = jax.jit(lambda x: d.init(KEY, x, train=False))(x[0])
  train = lambda module, x: module.apply(variables, x, train=True, mutable=['batch_stats'])[0]
  whole = jax.jit(train, static_argnums=0)(d, x.reshape(6, 8, 8, 1))
  sharded = dcgan.Discriminator(image_size=8, width=4, bn_axis_name='shards')
  per_shard = jax.jit(jax.vmap(lambda x: train(sharded, x), axis_name='shards'))(x)
  np.testing.assert_allclose(per_shard.reshape(6), whole, rtol=1e-4, atol=1e-5)


def test_rejects_mismatched_inputs():
  with pytest.raises(ValueError, match='expected noise'):
    dcgan.Generator(image_size=8, latent_dim=LATENT).init(KEY, jnp.zeros((1, 5)), train=False)
  with pytest.raises(ValueError, match='expected images'):
    dcgan.Discriminator(image_size=8).init(KEY, jnp.zeros((1, 16, 16, 1)), train=False)


def test_registered_pair():
  g = zoo.create_model('dcgan_generator', image_size=28, channels=1, width=4, latent_dim=LATENT)
  d = zoo.create_model('dcgan_discriminator', image_size=28, width=4)
  z = jax.ShapeDtypeStruct((2, LATENT), jnp.float32)
  images = jax.eval_shape(lambda z: g.init_with_output(KEY, z, train=False)[0], z)
  assert images.shape == (2, 28, 28, 1)
  logits = jax.eval_shape(lambda x: d.init_with_output(KEY, x, train=False)[0], images)
  assert logits.shape == (2,)

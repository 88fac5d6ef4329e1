"""Masked convolutions and PixelCNNs: exact causality, the blind spot, likelihood and sampling."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import zoo
from zoo import pixelcnn
from zoo.masked_conv import MaskedConv


def _init(module, x, seed=0):
  """Random variables, every weight and bias non-zero so that a zero derivative is structural.

  LeCun-normal kernels and N(0, 0.1^2) biases, drawn with numpy: nothing to compile.
  """
  kwargs = {} if isinstance(module, MaskedConv) else {'train': False}
  shapes = jax.eval_shape(lambda: module.init(jax.random.key(0), x, **kwargs))
  rng = np.random.default_rng(seed)
  return jax.tree.map(
      lambda s: jnp.asarray(rng.standard_normal(s.shape, np.float32) *
                            (np.prod(s.shape[:-1]) ** -0.5 if len(s.shape) > 1 else 0.1)),
      shapes)


def _dependence(fn, x, out_channels):
  """dep[p, c, p', c']: whether output channel c at position p has a non-zero derivative with
  respect to input channel c' at position p' (positions in raster order), for some example of
  the batch `x` (levels reduced). Several examples keep a ReLU that happens to be off at one
  input from hiding a dependence."""
  n, h, w, c = x.shape
  # Examples are independent, so the Jacobian of the batch sum holds each example's Jacobian.
  jac = jax.jit(jax.jacfwd(lambda x: fn(x).sum(0)))(x)
  return np.asarray((jnp.abs(jac).reshape(h * w, out_channels, -1, n, h * w, c) > 0).any((2, 3)))


def _groups(channels, num_groups):
  return np.arange(channels) * num_groups // channels


def _causal(hw, out_groups, in_groups, strict):
  """Allowed dependence: every earlier position; at the same position earlier groups only
  (strict, mask 'A') or also the same group (mask 'B')."""
  p_out, p_in = np.arange(hw)[:, None, None, None], np.arange(hw)[None, None, :, None]
  g_out, g_in = out_groups[None, :, None, None], in_groups[None, None, None, :]
  same_pixel = g_in < g_out if strict else g_in <= g_out
  return (p_in < p_out) | ((p_in == p_out) & same_pixel)


def _offsets(h, w):
  """(row, column) of input minus output for every (output position, input position) pair."""
  i, j = np.divmod(np.arange(h * w), w)
  return (i[None, :] - i[:, None])[:, None, :, None], (j[None, :] - j[:, None])[:, None, :, None]


@pytest.mark.parametrize('mask_type', ['A', 'B'])
@pytest.mark.parametrize('in_channels,features,num_groups', [(2, 4, 1), (3, 6, 3)])
def test_masked_conv_sees_exactly_the_causal_part_of_its_kernel(mask_type, in_channels, features,
                                                                 num_groups):
  h, w, kernel = 5, 6, (3, 5)
  conv = MaskedConv(features, kernel, mask_type, num_groups)
  x = jax.random.uniform(jax.random.key(2), (2, h, w, in_channels))
  variables = _init(conv, x)
  dep = _dependence(lambda x: conv.apply(variables, x), x, features)
  di, dj = _offsets(h, w)
  in_kernel = (abs(di) <= kernel[0] // 2) & (abs(dj) <= kernel[1] // 2)
  expected = in_kernel & _causal(h * w, _groups(features, num_groups),
                                 _groups(in_channels, num_groups), strict=mask_type == 'A')
  np.testing.assert_array_equal(dep, expected)


def _model_dependence(model, h, w, seed=0):
  x = jax.random.uniform(jax.random.key(seed + 2), (4, h, w, model.num_channels))
  variables = _init(model, x[:1], seed)
  return _dependence(lambda x: model.apply(variables, x, train=False), x, model.num_channels)


@pytest.mark.parametrize('gated', [False, True])
@pytest.mark.parametrize('num_channels,num_levels', [(1, 2), (3, 4)])
def test_pixelcnn_is_causal(gated, num_channels, num_levels):
  h, w = 6, 6
  model = pixelcnn.PixelCNN(num_channels=num_channels, num_levels=num_levels, features=24,
                            num_layers=2, gated=gated)
  dep = _model_dependence(model, h, w)
  channels = np.arange(num_channels)
  causal = _causal(h * w, channels, channels, strict=True)
  assert not (dep & ~causal).any()
  if gated:  # three layers already reach every earlier pixel of 6x6, and no blind spot
    np.testing.assert_array_equal(dep, causal)
  p = 2 * w + 3  # pixel (2, 3) sees its left and upper neighbours, all channels
  assert dep[p, :, p - 1].all() and dep[p, :, p - w].all()
  if num_channels == 3:  # R sees nothing of its own pixel, G sees R, B sees R and G
    np.testing.assert_array_equal(dep[p, :, p], np.tril(np.ones((3, 3), bool), -1))


def test_plain_pixelcnn_has_a_blind_spot_the_gated_one_does_not():
  # 8x8 with a 7x7 first layer and four 3x3 layers: the receptive field reaches every earlier
  # pixel except, for the plain network, the wedge up and to the right: on the row r above the
  # current pixel it only reaches r + 2 columns to the right (the 3x3 mask 'B' widens it by one
  # column per row, from the 7x7 layer's 3 on the row above).
  h, w = 8, 8
  causal = _causal(h * w, np.zeros(1), np.zeros(1), strict=True)
  di, dj = _offsets(h, w)
  plain = _model_dependence(pixelcnn.PixelCNN(features=16, num_layers=4), h, w)
  np.testing.assert_array_equal(plain, causal & ((di == 0) | (dj <= -di + 2)))
  gated = _model_dependence(pixelcnn.PixelCNN(features=16, num_layers=4, gated=True), h, w)
  np.testing.assert_array_equal(gated, causal)
  p = 4 * w  # pixel (4, 0): blind to (3, 4..7) in the plain network, not in the gated one
  assert not plain[p, 0, 3 * w + 4:4 * w].any() and gated[p, 0, 3 * w + 4:4 * w].all()


def _output(model, x):
  """Shape and dtype of the model's output, from tracing alone."""
  return jax.eval_shape(lambda: model.apply(model.init(jax.random.key(0), x, train=False), x,
                                            train=False))


def test_registered_models_and_output_shapes():
  assert {'pixelcnn', 'pixelcnn_gated', 'pixelcnn_tiny',
          'pixelcnn_gated_tiny'} <= set(zoo.list_models('pixelcnn*'))
  assert zoo.model_info('pixelcnn').input_shape == (28, 28, 1)
  logits = _output(zoo.create_model('pixelcnn_gated'), jnp.zeros((2, 28, 28, 1)))
  chex.assert_shape(logits, (2, 28, 28, 1))
  model = zoo.create_model('pixelcnn', num_channels=3, num_levels=256, features=96,
                           dtype=jnp.bfloat16)
  logits = _output(model, jnp.zeros((2, 32, 32, 3)))
  chex.assert_shape(logits, (2, 32, 32, 3, 256))
  assert logits.dtype == jnp.float32  # every model's outputs are float32, whatever it computes in


def test_log_likelihood_is_the_sum_of_per_pixel_terms():
  rng = np.random.default_rng(0)
  b, h, w, c, levels = 2, 3, 4, 3, 5
  logits = rng.normal(size=(b, h, w, c)).astype(np.float32)
  x = rng.integers(0, 2, size=(b, h, w, c))
  expected = [sum(np.log(1 / (1 + np.exp(-logits[n][k])) if x[n][k] else
                         1 - 1 / (1 + np.exp(-logits[n][k])))
                  for k in np.ndindex(h, w, c)) for n in range(b)]
  ll = pixelcnn.log_likelihood(jnp.asarray(logits), jnp.asarray(x))
  chex.assert_shape(ll, (b,))
  np.testing.assert_allclose(ll, expected, rtol=1e-5)

  logits = rng.normal(size=(b, h, w, c, levels)).astype(np.float32)
  x = rng.integers(0, levels, size=(b, h, w, c))
  expected = [sum(logits[n][k][x[n][k]] - np.log(np.exp(logits[n][k]).sum())
                  for k in np.ndindex(h, w, c)) for n in range(b)]
  ll = pixelcnn.log_likelihood(jnp.asarray(logits), jnp.asarray(x))
  chex.assert_shape(ll, (b,))
  np.testing.assert_allclose(ll, expected, rtol=1e-5)


@pytest.fixture(scope='module')
def binary_model():
  model = zoo.create_model('pixelcnn_gated_tiny')
  return model, _init(model, jnp.zeros((1, 8, 8, 1)))


def test_sampling_is_deterministic_given_the_key(binary_model):
  model, variables = binary_model
  shape = (4, 8, 8, 1)
  a = pixelcnn.sample(model, variables, jax.random.key(1), shape)
  b = pixelcnn.sample(model, variables, jax.random.key(1), shape)
  c = pixelcnn.sample(model, variables, jax.random.key(2), shape)
  chex.assert_shape(a, shape)
  chex.assert_type(a, jnp.int32)
  chex.assert_trees_all_equal(a, b)
  assert (a != c).any()
  assert set(np.unique(a)) <= {0, 1}


def test_conditional_sampling_keeps_the_given_pixels(binary_model):
  model, variables = binary_model
  shape = (4, 8, 8, 1)
  image = jax.random.bernoulli(jax.random.key(3), 0.5, shape).astype(jnp.int32)
  top_half = jnp.arange(8)[:, None, None] < 4  # broadcast over batch, columns and channels
  done = pixelcnn.sample(model, variables, jax.random.key(4), shape, given=image,
                         given_mask=top_half)
  chex.assert_trees_all_equal(done[:, :4], image[:, :4])
  scattered = jax.random.bernoulli(jax.random.key(5), 0.5, shape)  # differs across the batch
  done = pixelcnn.sample(model, variables, jax.random.key(4), shape, given=image,
                         given_mask=scattered)
  np.testing.assert_array_equal(np.asarray(done)[scattered], np.asarray(image)[scattered])
  assert set(np.unique(done)) <= {0, 1}


def test_sampling_follows_the_model_in_raster_and_colour_order():
  # At a tiny temperature sampling is the greedy decode, computed here one apply at a time.
  shape, levels = (2, 3, 3, 3), 7
  model = pixelcnn.PixelCNN(num_channels=3, num_levels=levels, features=12, num_layers=1)
  variables = _init(model, jnp.zeros(shape))
  samples = pixelcnn.sample(model, variables, jax.random.key(0), shape, temperature=1e-8)
  assert 0 <= samples.min() and samples.max() < levels
  apply = jax.jit(lambda x: model.apply(variables, pixelcnn.to_input(x, levels), train=False))
  x = jnp.zeros(shape, jnp.int32)
  for i, j, c in np.ndindex(shape[1:]):
    x = x.at[:, i, j, c].set(apply(x)[:, i, j, c].argmax(-1))
  chex.assert_trees_all_equal(samples, x)

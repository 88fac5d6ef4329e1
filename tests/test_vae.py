"""Tests for zoo.vae: the module's methods, the likelihoods, the KL and the bounds."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import zoo
from zoo import vae

KEY = jax.random.key(0)
SMALL = dict(image_shape=(8, 8, 1), features=(4, 8), latent_dim=3)


def _init(model, batch=4, seed=0):
  x = jax.random.bernoulli(jax.random.key(seed), 0.3, (batch, *model.image_shape))
  x = x.astype(jnp.float32)
  variables = jax.jit(lambda x: model.init({'params': KEY, 'sample': KEY}, x, train=False))(x)
  return variables, x


@pytest.mark.parametrize('decoder', ['transpose', 'resize'])
@pytest.mark.parametrize('likelihood, num_params', [('bernoulli', 1), ('logistic', 2)])
@pytest.mark.parametrize('image_shape', [(8, 8, 1), (16, 12, 3)])
def test_method_shapes(decoder, likelihood, num_params, image_shape):
  model = vae.VAE(**{**SMALL, 'image_shape': image_shape}, decoder=decoder,
                  likelihood=likelihood)
  x = jax.ShapeDtypeStruct((2, *image_shape), jnp.float32)
  rngs = {'params': KEY, 'sample': KEY}
  variables = jax.eval_shape(lambda x: model.init(rngs, x, train=False), x)
  apply = lambda method, *args, **kw: jax.eval_shape(
      functools.partial(model.apply, method=method, rngs={'sample': KEY}, **kw), variables, *args)
  h, w, c = image_shape
  params, mean, logvar = apply(None, x, train=True)
  assert params.shape == (2, h, w, c * num_params)
  assert mean.shape == logvar.shape == (2, 3)
  assert [a.shape for a in apply('encode', x)] == [(2, 3), (2, 3)]
  assert apply('decode', jax.ShapeDtypeStruct((5, 3), jnp.float32)).shape == (
      5, h, w, c * num_params)
  sample = jax.eval_shape(lambda v: model.apply(v, 5, method='sample', rngs={'sample': KEY}),
                          variables)
  assert sample.shape == (5, h, w, c)
  assert apply('reconstruct', x).shape == (2, h, w, c)


@pytest.mark.parametrize('image_size', [8, 16, 28])
def test_registered_default_sizes(image_size):
  model = zoo.create_model('vae', image_shape=(image_size, image_size, 1))
  assert zoo.model_info('vae').input_shape == (28, 28, 1)
  x = jax.ShapeDtypeStruct((2, image_size, image_size, 1), jnp.float32)
  out = jax.eval_shape(lambda x: model.init_with_output(
      {'params': KEY, 'sample': KEY}, x, train=False)[0][0], x)
  assert out.shape == x.shape


def test_rejects_bad_image_shapes():
  init = lambda model, shape: jax.eval_shape(
      lambda: model.init({'params': KEY, 'sample': KEY}, jnp.zeros(shape), train=False))
  with pytest.raises(ValueError, match='divisible'):
    init(vae.VAE(**{**SMALL, 'image_shape': (10, 8, 1)}), (1, 10, 8, 1))
  with pytest.raises(ValueError, match='expected images'):
    init(vae.VAE(**SMALL), (1, 16, 16, 1))


def test_kl_matches_monte_carlo():
  mean = jnp.array([[0.0, 0.0], [1.5, -0.5], [-2.0, 0.3]])
  logvar = jnp.array([[0.0, 0.0], [-1.0, 0.5], [1.2, -2.0]])
  closed = np.asarray(vae.kl_divergence(mean, logvar))
  std = np.exp(0.5 * np.asarray(logvar))
  z = np.asarray(mean) + std * np.random.default_rng(0).standard_normal((200_000, 3, 2))
  log_ratio = (stats.norm.logpdf(z, np.asarray(mean), std) - stats.norm.logpdf(z)).sum(-1)
  standard_error = log_ratio.std(0) / np.sqrt(len(z))
  np.testing.assert_allclose(closed[0], 0.0, atol=1e-7)
  np.testing.assert_array_less(np.abs(log_ratio.mean(0) - closed), 5 * standard_error + 1e-6)


def test_gradients_reach_mean_and_logvar_through_the_sample():
  model = vae.VAE(**SMALL)
  variables, x = _init(model)

  def reconstruction(params):  # beta = 0: logvar enters only through z
    out, mean, logvar = model.apply({'params': params}, x, train=True, rngs={'sample': KEY})
    return vae.elbo(out, x, mean, logvar, beta=0.0)[0].mean()

  grads = jax.jit(jax.grad(reconstruction))(variables['params'])
  for head in ('to_mean', 'to_logvar'):
    for leaf in jax.tree.leaves(grads[head]):
      assert jnp.abs(leaf).max() > 0, head


def test_elbo_terms():
  model = vae.VAE(**SMALL)
  variables, x = _init(model)
  out, mean, logvar = model.apply(variables, x, train=True, rngs={'sample': KEY})
  neg_elbo, reconstruction, kl = vae.elbo(out, x, mean, logvar, beta=0.25)
  chex.assert_shape([neg_elbo, reconstruction, kl], (4,))
  np.testing.assert_allclose(neg_elbo, reconstruction + 0.25 * kl, rtol=1e-6)
  np.testing.assert_allclose(reconstruction, -vae.bernoulli_log_prob(out, x), rtol=1e-6)
  assert (kl >= 0).all() and (reconstruction >= 0).all()


def test_elbo_below_importance_weighted_bound_below_zero():
  model = vae.VAE(**SMALL)
  variables, x = _init(model)
  # Widen the posterior and make the decoder depend strongly on z, so the bounds differ.
  params = dict(variables['params'])
  params['to_logvar'] = {**params['to_logvar'], 'bias': params['to_logvar']['bias'] + 1.0}
  params['from_latent'] = {**params['from_latent'],
                           'kernel': 10 * params['from_latent']['kernel']}
  variables = {'params': params}
  k = 1000
  log_w = vae.importance_log_weights(model, variables, x, KEY, k)
  chex.assert_shape(log_w, (k, 4))
  iwae = vae.importance_weighted_log_likelihood(model, variables, x, KEY, k)
  chex.assert_shape(iwae, (4,))
  # IWAE with k = 1 estimates the ELBO: check the mean of the weights (a k-sample estimate of
  # the ELBO with a Monte-Carlo KL) against the analytic-KL ELBO, averaged over as many draws.
  def neg_elbo(rng):
    out, mean, logvar = model.apply(variables, x, train=True, rngs={'sample': rng})
    return vae.elbo(out, x, mean, logvar)[0]
  elbo = -jax.vmap(neg_elbo)(jax.random.split(jax.random.key(1), k))
  standard_error = np.hypot(log_w.std(0), elbo.std(0)) / np.sqrt(k)
  np.testing.assert_array_less(np.abs(log_w.mean(0) - elbo.mean(0)), 5 * standard_error)
  assert (elbo.mean(0) + 5 * standard_error < iwae).all()
  assert (iwae < 0).all()
  np.testing.assert_allclose(
      vae.importance_weighted_log_likelihood(model, variables, x, KEY, 1),
      vae.importance_log_weights(model, variables, x, KEY, 1)[0], rtol=1e-6)


def test_importance_weights_do_not_depend_on_chunk_size():
  model = vae.VAE(**SMALL, likelihood='logistic')
  variables, x = _init(model)
  a = vae.importance_log_weights(model, variables, x, KEY, 10, chunk_size=3)
  b = vae.importance_log_weights(model, variables, x, KEY, 10, chunk_size=10)
  np.testing.assert_allclose(a, b, rtol=1e-5)


@pytest.mark.parametrize('decoder', ['transpose', 'resize'])
def test_sample_deterministic_given_key(decoder):
  model = vae.VAE(**SMALL, decoder=decoder)
  variables, x = _init(model)
  sample = jax.jit(lambda rng: model.apply(variables, 6, method='sample', rngs={'sample': rng}))
  a, b, c = sample(jax.random.key(1)), sample(jax.random.key(1)), sample(jax.random.key(2))
  chex.assert_shape(a, (6, 8, 8, 1))
  chex.assert_trees_all_equal(a, b)
  assert not np.allclose(a, c)
  assert ((a >= 0) & (a <= 1)).all()
  recon = model.apply(variables, x, method='reconstruct')  # no RNG needed
  chex.assert_trees_all_equal(recon, model.apply(variables, x, method='reconstruct'))


def test_bernoulli_probabilities_sum_to_one():
  logits = jnp.array([-30.0, -2.0, 0.0, 0.7, 30.0]).reshape(5, 1, 1, 1)
  p1 = jnp.exp(vae.bernoulli_log_prob(logits, jnp.ones_like(logits)))
  p0 = jnp.exp(vae.bernoulli_log_prob(logits, jnp.zeros_like(logits)))
  np.testing.assert_allclose(p0 + p1, 1.0, rtol=1e-6)
  np.testing.assert_allclose(p1, jax.nn.sigmoid(logits).ravel(), rtol=1e-6)


@pytest.mark.parametrize('num_bins', [256, 17])
@pytest.mark.parametrize('loc, log_scale', [
    (0.5, -3.0), (0.0, -7.0), (1.0, -10.0), (-0.3, 0.5), (1.4, -2.0), (0.123, 3.0), (0.7, -5.5)])
def test_discretized_logistic_is_a_distribution(num_bins, loc, log_scale):
  x = jnp.arange(num_bins, dtype=jnp.float32).reshape(-1, 1, 1, 1) / (num_bins - 1)
  params = jnp.broadcast_to(jnp.array([loc, log_scale]), (num_bins, 1, 1, 2))
  log_p = np.asarray(vae.discretized_logistic_log_prob(params, x, num_bins), np.float64)
  assert np.isfinite(log_p).all() and (log_p <= 0).all()
  np.testing.assert_allclose(np.exp(log_p).sum(), 1.0, rtol=1e-5)
  # Each level's mass is the logistic's mass within half a bin (the end levels add the tails).
  scale = np.exp(max(log_scale, -7.0))
  edges = (np.arange(num_bins + 1) - 0.5) / (num_bins - 1)
  edges[0], edges[-1] = -np.inf, np.inf
  # Differences of the upper tail above the location, of the CDF below: no cancellation.
  lo, hi = edges[:-1], edges[1:]
  dist = stats.logistic(loc, scale)
  expected = np.where(lo > loc, dist.sf(lo) - dist.sf(hi), dist.cdf(hi) - dist.cdf(lo))
  big = expected > 1e-300
  np.testing.assert_allclose(log_p[big], np.log(expected[big]), rtol=1e-4, atol=1e-5)


def test_discretized_logistic_sums_pixels_and_splits_channels():
  params = jax.random.normal(KEY, (3, 4, 4, 6))
  x = jnp.round(jax.random.uniform(KEY, (3, 4, 4, 3)) * 255) / 255
  # Channels [0, 3) are the locations and [3, 6) the log-scales of the 3 image channels.
  loc, log_scale = params[..., :3], params[..., 3:]
  one_pixel = jnp.stack([loc.ravel(), log_scale.ravel()], -1).reshape(-1, 1, 1, 2)
  per_pixel = vae.discretized_logistic_log_prob(one_pixel, x.reshape(-1, 1, 1, 1))
  np.testing.assert_allclose(vae.discretized_logistic_log_prob(params, x),
                             per_pixel.reshape(3, -1).sum(1), rtol=1e-5)
  with pytest.raises(ValueError, match='likelihood'):
    vae.log_likelihood(params, x, 'gaussian')

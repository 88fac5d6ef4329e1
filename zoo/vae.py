"""A convolutional variational autoencoder (Kingma & Welling 2014, "Auto-Encoding Variational
Bayes"), its likelihoods, and the bounds it is trained and evaluated with.

Images are NHWC floats in [0, 1]. Two likelihoods p(x|z), independent per subpixel:

- 'bernoulli', for binarized images (pixels in {0, 1}): the decoder outputs C logits.
- 'logistic', for 8-bit images given as k / 255: a discretized logistic (Kingma et al. 2016,
  "Improved Variational Inference with Inverse Autoregressive Flow"; Salimans et al. 2017,
  "PixelCNN++"), a proper distribution over the 256 values, so its log-likelihood in nats is
  comparable across models. The decoder outputs 2C channels: C locations (on the [0, 1] scale),
  then C log-scales. `num_bins` other than 256 serves images with fewer levels (k / (num_bins-1)).

Image sizes: the encoder has one stride-2 convolution per entry of `features`, so height and
width must be divisible by 2**len(features). With the default two stages, 28 -> 14 -> 7,
16 -> 8 -> 4 and 8 -> 4 -> 2; the decoder projects z to that smallest map and mirrors the encoder.

Randomness: the reparameterization noise (`__call__`) and prior samples (`sample`) come from the
RNG stream 'sample', e.g. `model.apply(variables, x, train=True, rngs={'sample': key})`.
"""

import functools
import math
from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.typing import Dtype

from zoo.decoders import ConvEncoder, get_decoder
from zoo.registry import register_model

# Decoder output channels per image channel, for each likelihood.
_NUM_PARAMS = {'bernoulli': 1, 'logistic': 2}
# PixelCNN++'s floor on the logistic log-scale: a bin of width 1/255 already holds nearly all
# the mass at this scale, and a lower floor only lets the loss diverge on constant pixels.
_MIN_LOG_SCALE = -7.0


def _per_example_sum(x: jax.Array) -> jax.Array:
  return x.reshape(x.shape[0], -1).sum(axis=1)


def _float32(x: jax.Array) -> jax.Array:
  # Likelihoods and divergences are summed over many terms: never in half precision.
  return jnp.asarray(x, jnp.promote_types(jnp.asarray(x).dtype, jnp.float32))


def bernoulli_log_prob(logits: jax.Array, x: jax.Array) -> jax.Array:
  """log p(x) in nats per example, pixels x in {0, 1}; shapes (B, H, W, C) -> (B,)."""
  logits = _float32(logits)
  return _per_example_sum(x * jax.nn.log_sigmoid(logits) + (1 - x) * jax.nn.log_sigmoid(-logits))


def discretized_logistic_log_prob(params: jax.Array, x: jax.Array,
                                  num_bins: int = 256) -> jax.Array:
  """log P(x) in nats per example under a logistic discretized to `num_bins` levels.

  `params` (B, H, W, 2C) holds locations then log-scales; x (B, H, W, C) takes the values
  k / (num_bins - 1). Each level owns the logistic's mass within half a bin of it; the lowest
  and highest levels also own the tails, so the probabilities of all levels sum to one.
  """
  loc, log_scale = jnp.split(_float32(params), 2, axis=-1)
  inv_scale = jnp.exp(-jnp.maximum(log_scale, _MIN_LOG_SCALE))
  half_bin = 0.5 / (num_bins - 1)
  upper = (x - loc + half_bin) * inv_scale
  lower = (x - loc - half_bin) * inv_scale
  # sigmoid(a) - sigmoid(b) = sigmoid(a) sigmoid(-b) (1 - exp(b - a)): no cancellation, for any
  # scale, unlike PixelCNN++'s difference of CDFs with a density fallback.
  log_mass = (jax.nn.log_sigmoid(upper) + jax.nn.log_sigmoid(-lower)
              + jnp.log(-jnp.expm1(lower - upper)))
  log_mass = jnp.where(x < half_bin, jax.nn.log_sigmoid(upper), log_mass)  # lowest level
  log_mass = jnp.where(x > 1 - half_bin, jax.nn.log_sigmoid(-lower), log_mass)  # highest level
  return _per_example_sum(log_mass)


def log_likelihood(params: jax.Array, x: jax.Array, likelihood: str = 'bernoulli',
                   num_bins: int = 256) -> jax.Array:
  """log p(x|z) in nats per example, for the likelihood named 'bernoulli' or 'logistic'."""
  if likelihood == 'bernoulli':
    return bernoulli_log_prob(params, x)
  if likelihood == 'logistic':
    return discretized_logistic_log_prob(params, x, num_bins)
  raise ValueError(f"likelihood must be one of {sorted(_NUM_PARAMS)}, got {likelihood!r}")


def mean_image(params: jax.Array, likelihood: str = 'bernoulli') -> jax.Array:
  """The image to show for likelihood parameters, in [0, 1]: the Bernoulli mean, or the
  logistic location clipped to [0, 1] (its median, up to the discretization)."""
  if likelihood == 'bernoulli':
    return jax.nn.sigmoid(params)
  if likelihood == 'logistic':
    return jnp.clip(jnp.split(params, 2, axis=-1)[0], 0, 1)
  raise ValueError(f"likelihood must be one of {sorted(_NUM_PARAMS)}, got {likelihood!r}")


def kl_divergence(mean: jax.Array, logvar: jax.Array) -> jax.Array:
  """KL(N(mean, exp(logvar)) || N(0, I)) in nats per example, in closed form; (B, D) -> (B,)."""
  mean, logvar = _float32(mean), _float32(logvar)
  return 0.5 * _per_example_sum(jnp.exp(logvar) + mean**2 - 1 - logvar)


def elbo(params: jax.Array, x: jax.Array, mean: jax.Array, logvar: jax.Array, *,
         likelihood: str = 'bernoulli', num_bins: int = 256,
         beta: float = 1.0) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Per-example (neg_elbo, reconstruction, kl) in nats from one posterior sample's `params`.

  reconstruction = -log p(x|z), kl = KL(q(z|x) || p(z)) in closed form, and
  neg_elbo = reconstruction + beta * kl: the negative ELBO for beta = 1, the beta-VAE loss
  otherwise (Higgins et al. 2017).
  """
  reconstruction = -log_likelihood(params, x, likelihood, num_bins)
  kl = kl_divergence(mean, logvar)
  return reconstruction + beta * kl, reconstruction, kl


class VAE(nn.Module):
  """Strided-convolution encoder -> diagonal Gaussian q(z|x) -> z -> dense -> decoder -> p(x|z).

  Attributes:
    latent_dim: dimension of z.
    features: channels of the encoder stages (the decoder uses them in reverse).
    image_shape: (H, W, C) of the images; H and W divisible by 2**len(features).
    likelihood: 'bernoulli' or 'logistic' (see the module docstring).
    num_bins: levels of the 'logistic' likelihood.
    decoder: 'transpose' or 'resize' (see `zoo.decoders.DECODERS`).
    activation: after every hidden layer.

  No BatchNorm: it would couple the examples of a batch, and the per-example bounds below
  (ELBO, importance-weighted) assume p(x|z) depends on x's own z only. `train` is accepted for
  the shared interface and changes nothing.
  """
  latent_dim: int = 16
  features: Sequence[int] = (32, 64)
  image_shape: tuple[int, int, int] = (28, 28, 1)
  likelihood: str = 'bernoulli'
  num_bins: int = 256
  decoder: str = 'transpose'
  activation: Callable[[jax.Array], jax.Array] = nn.relu
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32

  def setup(self):
    h, w, c = self.image_shape
    factor = 2 ** len(self.features)
    if h % factor or w % factor:
      raise ValueError(f'image_shape {tuple(self.image_shape)}: height and width must be '
                       f'divisible by 2**len(features) = {factor}')
    if self.likelihood not in _NUM_PARAMS:
      raise ValueError(f'likelihood must be one of {sorted(_NUM_PARAMS)}, '
                       f'got {self.likelihood!r}')
    self._bottom_shape = (h // factor, w // factor, self.features[-1])
    dense = functools.partial(nn.Dense, dtype=self.dtype, param_dtype=self.param_dtype)
    self.conv_encoder = ConvEncoder(self.features, activation=self.activation, dtype=self.dtype,
                                    param_dtype=self.param_dtype)
    self.to_mean = dense(self.latent_dim)
    self.to_logvar = dense(self.latent_dim)
    self.from_latent = dense(math.prod(self._bottom_shape))
    self.conv_decoder = get_decoder(self.decoder)(
        features=tuple(reversed(self.features))[1:], out_channels=c * _NUM_PARAMS[self.likelihood],
        use_batchnorm=False, activation=self.activation, dtype=self.dtype,
        param_dtype=self.param_dtype)

  def encode(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Images (B, H, W, C) -> mean and log-variance of q(z|x), each (B, latent_dim)."""
    if x.shape[1:] != tuple(self.image_shape):
      raise ValueError(f'expected images of shape (B, {", ".join(map(str, self.image_shape))}), '
                       f'got {x.shape}')
    h = self.conv_encoder(x, train=False)
    h = h.reshape(h.shape[0], -1)
    return self.to_mean(h), self.to_logvar(h)

  def decode(self, z: jax.Array) -> jax.Array:
    """Latents (B, latent_dim) -> parameters of p(x|z), (B, H, W, C * params per pixel)."""
    h = self.activation(self.from_latent(z))
    return self.conv_decoder(h.reshape(z.shape[0], *self._bottom_shape), train=False)

  def sample(self, num: int) -> jax.Array:
    """`num` images (num, H, W, C) in [0, 1]: `mean_image` of p(x|z) for z from the prior."""
    z = jax.random.normal(self.make_rng('sample'), (num, self.latent_dim), self.param_dtype)
    return mean_image(self.decode(z), self.likelihood)

  def reconstruct(self, x: jax.Array) -> jax.Array:
    """`mean_image` of p(x|z) at the posterior mean z; deterministic (no RNG)."""
    mean, _ = self.encode(x)
    return mean_image(self.decode(mean), self.likelihood)

  def __call__(self, x: jax.Array, *, train: bool) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(params of p(x|z), mean, logvar) with z = mean + sigma * eps, eps ~ N(0, I) from the
    'sample' stream: the reparameterization trick, so gradients reach mean and logvar."""
    mean, logvar = self.encode(x)
    eps = jax.random.normal(self.make_rng('sample'), mean.shape, mean.dtype)
    z = mean + jnp.exp(0.5 * logvar) * eps
    return self.decode(z), mean, logvar


@functools.partial(jax.jit, static_argnames=('model', 'k', 'chunk_size'))
def importance_log_weights(model: VAE, variables, x: jax.Array, rng: jax.Array, k: int, *,
                           chunk_size: int = 64) -> jax.Array:
  """log p(x, z_i) - log q(z_i|x) for z_1..z_k ~ q(z|x), shape (k, B), in nats.

  The samples are decoded `chunk_size` at a time (`jax.lax.map`), so memory is that of
  `chunk_size` decoder batches whatever k. Compiled once per (model, k, chunk_size, shapes):
  the model is a static argument, so give sequence fields as tuples (hashable).
  """
  mean, logvar = (_float32(a) for a in model.apply(variables, x, method=VAE.encode))
  std = jnp.exp(0.5 * logvar)
  std_normal_log_prob = lambda e: _per_example_sum(-0.5 * e**2 - 0.5 * math.log(2 * math.pi))

  def log_weight(eps):  # (B, D) -> (B,)
    z = mean + std * eps
    params = model.apply(variables, z, method=VAE.decode)
    log_px = log_likelihood(params, x, model.likelihood, model.num_bins)
    # log q(z|x) = log N(eps; 0, I) - sum(log std), by the change of variables z = mean + std*eps.
    log_qz = std_normal_log_prob(eps) - _per_example_sum(0.5 * logvar)
    return log_px + std_normal_log_prob(z) - log_qz

  eps = jax.random.normal(rng, (k, *mean.shape), mean.dtype)
  return jax.lax.map(log_weight, eps, batch_size=chunk_size)


def importance_weighted_log_likelihood(model: VAE, variables, x: jax.Array, rng: jax.Array,
                                       k: int, *, chunk_size: int = 64) -> jax.Array:
  """The importance-weighted bound on log p(x) (Burda et al. 2016, "Importance Weighted
  Autoencoders") with k samples, per example (B,), in nats: log (1/k) sum_i w_i.

  k = 1 is an unbiased estimate of the ELBO; the bound tightens towards log p(x) as k grows
  (k = 1000 or 5000 is the usual reported estimate).
  """
  log_w = importance_log_weights(model, variables, x, rng, k, chunk_size=chunk_size)
  return jax.nn.logsumexp(log_w, axis=0) - math.log(k)


@register_model(kind='autoencoder', input_shape=(28, 28, 1),
                description='convolutional VAE, images in [0, 1]; set image_shape for other sizes')
def vae(**overrides) -> VAE:
  return VAE(**overrides)

"""Variational autoencoder: `python -m train.vae --config configs/<recipe>.py --workdir DIR`.

Trains `zoo.vae.VAE` on the negative ELBO (`config.beta` weighs its KL term) data-parallel over
every device. Each evaluation covers the whole eval split, one posterior sample per image with
a fixed seed, and reports in nats per image `neg_elbo` = `reconstruction` (-log p(x|z)) + `kl`
(KL(q(z|x) || p(z))), and `bits_per_dim` = neg_elbo / (H W C ln 2); the final evaluation adds
the importance-weighted bound with `config.iwae_k` samples (Burda et al. 2016) as `iwae_nll`
(an estimate of -log p(x) from above) and `iwae_bits_per_dim`. Every evaluation writes PNG and
TensorBoard grids: samples from the prior, reconstructions beside their inputs, and latent
interpolations between pairs of test images (each row: image a, decodings of the posterior
means from a to b, image b). `DIR/metrics.jsonl` holds the numbers, `DIR/checkpoints` the
Orbax checkpoints; running the same command again resumes. Score images for anomalies with the
trained model: `python -m train.anomaly` (same flags).
"""

import functools
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from train.core import build, cli
from train.core import step as step_lib
from train.core.errors import UserError
from train.core.run import run
from train.core.state import TrainState, create_train_state
from train.core.task import Batch, Metrics, StepContext, Task, count_params
from train.core.writer import MetricWriter
from zoo import vae

# The `config.binarize` values each likelihood accepts.
BINARIZE = {'bernoulli': ('dynamic', 'threshold'), 'logistic': ('none',)}
# The grids: prior samples, test images reconstructed (and paired for interpolations), and
# interpolation steps between a and b.
NUM_SAMPLES, NUM_SHOWN, NUM_STEPS = 64, 32, 8


def prepare_images(images: jax.Array, rng: jax.Array, *, model: vae.VAE,
                   binarize: str) -> jax.Array:
  """Images in [0, 1] as the likelihood scores them (see `config.binarize`)."""
  if binarize == 'dynamic':
    return jax.random.bernoulli(rng, images).astype(images.dtype)
  if binarize == 'threshold':
    return (images > 0.5).astype(images.dtype)
  if model.likelihood == 'logistic':
    levels = model.num_bins - 1
    return jnp.round(images * levels) / levels
  return images


def negative_elbo(params, x: jax.Array, rng: jax.Array, *, model: vae.VAE,
                  beta: float = 1.0) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Per-image (loss, reconstruction, kl) in nats from one posterior sample drawn with `rng`."""
  outputs, mean, logvar = model.apply({'params': params}, x, train=True, rngs={'sample': rng})
  return vae.elbo(outputs, x, mean, logvar, likelihood=model.likelihood,
                  num_bins=model.num_bins, beta=beta)


def per_example(fn, keys: jax.Array, x: jax.Array):
  """`fn(x_i[None], key_i)` for every example i, stacked: each example draws from its own key
  (`step.example_keys`), so the draws do not depend on how the batch is split over devices."""
  return jax.vmap(lambda xi, key: jax.tree.map(lambda y: y[0], fn(xi[None], key)))(x, keys)


def train_step(state: TrainState, batch: Batch, rng: jax.Array, *, model: vae.VAE, beta: float,
               binarize: str, ctx: StepContext = StepContext()) -> tuple[TrainState, Metrics]:
  """One optimizer step on the batch's mean loss; each image draws its binarization and its
  posterior sample from its own key, derived from `rng`."""
  def grad_fn(params, micro_batch, rng, carry):
    images = micro_batch['image']
    data_keys, sample_keys = (step_lib.example_keys(key, len(images), ctx)
                              for key in jax.random.split(rng))
    x = per_example(functools.partial(prepare_images, model=model, binarize=binarize),
                    data_keys, images)

    def loss_fn(params):
      loss, reconstruction, kl = per_example(
          functools.partial(negative_elbo, params, model=model, beta=beta), sample_keys, x)
      return loss.mean(), (reconstruction.mean(), kl.mean())

    (loss, (reconstruction, kl)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    metrics = {'loss': loss, 'neg_elbo': reconstruction + kl, 'reconstruction': reconstruction,
               'kl': kl}
    return grads, metrics, carry

  grads, metrics, _ = step_lib.accumulate_gradients(grad_fn, state.params, batch, rng, ctx)
  state = state.apply_gradients(grads=grads)
  return state, metrics | {'grad_norm': optax.tree.norm(grads)}


def eval_step(state: TrainState, batch: Batch, rng: jax.Array, *, model: vae.VAE, binarize: str,
              iwae_k: int = 0, iwae_chunk_size: int = 50) -> Metrics:
  """Sums over the real (mask=1) examples of the bound's terms and, if `iwae_k`, of the
  importance-weighted log-likelihood. `rng` fixes the batch's binarization and samples."""
  data_rng, sample_rng, iwae_rng = jax.random.split(rng, 3)
  x = prepare_images(batch['image'], data_rng, model=model, binarize=binarize)
  mask = batch['mask'].astype(jnp.float32)
  neg_elbo, reconstruction, kl = negative_elbo(state.params, x, sample_rng, model=model)
  sums = {'neg_elbo': neg_elbo, 'reconstruction': reconstruction, 'kl': kl}
  if iwae_k:
    sums['iwae_nll'] = -vae.importance_weighted_log_likelihood(
        model, {'params': state.params}, x, iwae_rng, iwae_k, chunk_size=iwae_chunk_size)
  return {name: jnp.sum(value * mask) for name, value in sums.items()} | {'count': jnp.sum(mask)}


def visualize(params, images: jax.Array, rng: jax.Array, *, model: vae.VAE,
              binarize: str) -> dict[str, jax.Array]:
  """The grids' images in [0, 1]: 'samples' from the prior, 'reconstructions' (input,
  reconstruction, ... pairs), 'interpolations' (rows of a, NUM_STEPS decodings, b)."""
  data_rng, sample_rng = jax.random.split(rng)
  x = prepare_images(images, data_rng, model=model, binarize=binarize)
  apply = functools.partial(model.apply, {'params': params})
  samples = apply(NUM_SAMPLES, method='sample', rngs={'sample': sample_rng})
  reconstructions = apply(x, method='reconstruct')
  pairs = x[:len(x) // 2 * 2]
  mean, _ = apply(pairs, method='encode')  # z of a and b: the posterior means
  t = jnp.linspace(0.0, 1.0, NUM_STEPS)[None, :, None]
  z = (1 - t) * mean[0::2, None] + t * mean[1::2, None]  # (pairs, NUM_STEPS, latent_dim)
  decoded = vae.mean_image(apply(z.reshape(-1, z.shape[-1]), method='decode'), model.likelihood)
  rows = jnp.concatenate([pairs[0::2, None], decoded.reshape(*z.shape[:2], *x.shape[1:]),
                          pairs[1::2, None]], axis=1)
  flat = lambda a: a.reshape(-1, *x.shape[1:])
  return {'samples': samples,
          'reconstructions': flat(jnp.stack([x, reconstructions], axis=1)),
          'interpolations': flat(rows)}


def build_model(config: ml_collections.ConfigDict, image_shape: tuple[int, int, int]) -> vae.VAE:
  """The VAE of `config.model_kwargs` for images of `image_shape`; checks `config.binarize`."""
  kwargs = config.model_kwargs.to_dict()
  kwargs['features'] = tuple(kwargs['features'])  # hashable: the model is a static argument
  model = build.create_model('vae', 'config.model_kwargs', image_shape=tuple(image_shape),
                             dtype=jnp.dtype(config.dtype), **kwargs)
  if model.likelihood not in BINARIZE:
    raise UserError(f'config.model_kwargs.likelihood={model.likelihood!r}: use one of '
                    f'{sorted(BINARIZE)}')
  if config.binarize not in BINARIZE[model.likelihood]:
    raise UserError(f'config.binarize={config.binarize!r} with likelihood '
                    f'{model.likelihood!r}: use one of {BINARIZE[model.likelihood]}')
  factor = 2 ** len(model.features)
  if image_shape[0] % factor or image_shape[1] % factor:
    raise UserError(f'images of {image_shape[:2]} (config.data.image_size) must be divisible by '
                    f'2**len(config.model_kwargs.features) = {factor}')
  if config.data.normalization != 'none':
    raise UserError(f"config.data.normalization={config.data.normalization!r}: the VAE's "
                    "likelihoods need images in [0, 1]; set it to 'none'")
  return model


class VaeTask(Task):
  """The negative ELBO; the best checkpoint has the lowest eval neg_elbo."""
  name = 'vae'
  best_metric = 'neg_elbo'
  best_mode = 'min'

  def build(self, info, length, ctx) -> None:
    super().build(info, length, ctx)
    self.model = build_model(self.config, info.image_shape)
    self.tx, self.schedule = build.optimizer(self.config.optim, length)
    self.show_fn = jax.jit(functools.partial(visualize, model=self.model,
                                             binarize=self.config.binarize))

  def init(self, rng: jax.Array) -> TrainState:
    return create_train_state(self.model, self.tx, rng, self.model.image_shape)

  def describe(self, state: TrainState) -> str:
    return f'vae: {count_params(state):,} parameters, {self.model.likelihood} likelihood'

  def train_step(self, state, batch, rng):
    return train_step(state, batch, rng, model=self.model, beta=self.config.beta,
                      binarize=self.config.binarize, ctx=self.ctx)

  def eval_step(self, state, batch, rng, *, final=False):
    return eval_step(state, batch, step_lib.device_key(rng, self.ctx), model=self.model,
                     binarize=self.config.binarize, iwae_k=self.config.iwae_k if final else 0,
                     iwae_chunk_size=self.config.iwae_chunk_size)

  def summarize(self, totals) -> dict[str, float]:
    metrics = super().summarize(totals)
    nats_to_bits_per_dim = 1 / (math.prod(self.info.image_shape) * math.log(2))
    metrics['bits_per_dim'] = metrics['neg_elbo'] * nats_to_bits_per_dim
    if 'iwae_nll' in metrics:
      metrics['iwae_bits_per_dim'] = metrics['iwae_nll'] * nats_to_bits_per_dim
      metrics['iwae_k'] = float(self.config.iwae_k)
    return metrics

  def after_eval(self, state, step: int, images: np.ndarray, rng: jax.Array,
                 writer: MetricWriter) -> dict[str, float]:
    grids = self.show_fn(state.params, jnp.asarray(images[:NUM_SHOWN]), rng)
    scale = max(1, 64 // self.info.image_shape[0])  # small images, such as 8x8 digits, enlarged
    for name, columns in (('samples', 8), ('reconstructions', 8),
                          ('interpolations', NUM_STEPS + 2)):
      writer.write_images(step, name, np.asarray(grids[name]), scale=scale, columns=columns)
    return {}


def train_and_evaluate(config, workdir: str, **kwargs) -> dict[str, float]:
  """Trains and evaluates as `config` says; returns the final eval metrics (see `run`)."""
  return run(VaeTask(config), config, workdir, **kwargs)


main = functools.partial(cli.run, train_and_evaluate, description=__doc__)

if __name__ == '__main__':
  main()

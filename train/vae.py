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

import jax
import jax.numpy as jnp
import optax

from train.core import build, cli, validate
from train.core import step as step_lib
from train.core.errors import UserError
from train.core.state import TrainState, create_train_state
from train.core.task import Batch, Metrics, StepContext, Task, count_params
from train.metrics import vae_grids
from train.metrics.likelihood import bits_per_dim
from zoo import vae

# The `config.binarize` values each likelihood accepts.
BINARIZE = {'bernoulli': ('dynamic', 'threshold'), 'logistic': ('none',)}


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


def train_step(state: TrainState, batch: Batch, rng: jax.Array, *, model: vae.VAE, beta: float,
               binarize: str, ctx: StepContext = StepContext()) -> tuple[TrainState, Metrics]:
  """One optimizer step on the batch's mean loss; each image draws its binarization and its
  posterior sample from its own key, derived from `rng`."""
  def grad_fn(params, micro_batch, rng, carry):
    images = micro_batch['image']
    data_keys, sample_keys = (step_lib.example_keys(key, len(images), ctx)
                              for key in jax.random.split(rng))
    x = step_lib.per_example(functools.partial(prepare_images, model=model, binarize=binarize),
                             data_keys, images)

    def loss_fn(params):
      loss, reconstruction, kl = step_lib.per_example(
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


def grids(params, images: jax.Array, rng: jax.Array, *, model: vae.VAE,
          binarize: str) -> dict[str, jax.Array]:
  """`vae_grids.visualize` of test images prepared as the likelihood scores them."""
  data_rng, sample_rng = jax.random.split(rng)
  x = prepare_images(images, data_rng, model=model, binarize=binarize)
  return vae_grids.visualize(params, x, sample_rng, model=model)


class VaeTask(Task):
  """The negative ELBO; the best checkpoint has the lowest eval neg_elbo."""
  name = 'vae'
  best_metric = 'neg_elbo'
  best_mode = 'min'
  final_eval_differs = True  # adds the importance-weighted bound

  def build(self, info, length, ctx) -> None:
    super().build(info, length, ctx)
    config = self.config
    self.model = build.vae_model(config, info.image_shape)
    likelihood = self.model.likelihood
    if likelihood not in BINARIZE:
      raise UserError(f'config.model_kwargs.likelihood={likelihood!r}: use one of '
                      f'{sorted(BINARIZE)}')
    if config.binarize not in BINARIZE[likelihood]:
      raise UserError(f'config.binarize={config.binarize!r} with likelihood {likelihood!r}: '
                      f'use one of {BINARIZE[likelihood]}')
    validate.require_unit_images(config, "the VAE's likelihoods need images in [0, 1]")
    self.tx, self.schedule = build.optimizer(config.optim, length)
    self.grids_fn = jax.jit(functools.partial(grids, model=self.model, binarize=config.binarize))

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
    shape = self.info.image_shape
    metrics['bits_per_dim'] = bits_per_dim(metrics['neg_elbo'], shape)
    if 'iwae_nll' in metrics:
      metrics['iwae_bits_per_dim'] = bits_per_dim(metrics['iwae_nll'], shape)
      metrics['iwae_k'] = float(self.config.iwae_k)
    return metrics

  def after_eval(self, state, step, images, rng, writer) -> dict[str, float]:
    shown = jnp.asarray(images[:vae_grids.NUM_SHOWN])
    vae_grids.write_grids(writer, step, self.grids_fn(state.params, shown, rng))
    return {}


train_and_evaluate = cli.trainer(VaeTask)
main = functools.partial(cli.run, train_and_evaluate, description=__doc__)

if __name__ == '__main__':
  main()

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
from typing import Any, Iterable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

import zoo
from train import cli, input_pipeline, loop, optim, parallel
from train.checkpoint import Checkpointer
from train.errors import UserError
from train.metric_writer import MetricWriter
from train.progress import format_metrics
from train.state import TrainState, create_train_state, init_on_mesh
from zoo import vae

# The `config.binarize` values each likelihood accepts.
BINARIZE = {'bernoulli': ('dynamic', 'threshold'), 'logistic': ('none',)}
# The grids: prior samples, test images reconstructed (and paired for interpolations), and
# interpolation steps between a and b.
NUM_SAMPLES, NUM_SHOWN, NUM_STEPS = 64, 32, 8
# Independent random streams, each a key derived from `config.seed`.
STREAMS = ('train', 'eval', 'images', 'anomaly')


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


def train_step(state: TrainState, batch: dict[str, jax.Array], rng: jax.Array, *,
               model: vae.VAE, beta: float, binarize: str
               ) -> tuple[TrainState, dict[str, jax.Array]]:
  """One optimizer step on the batch's mean loss; `rng` is folded with the step."""
  data_rng, sample_rng = jax.random.split(jax.random.fold_in(rng, state.step))
  x = prepare_images(batch['image'], data_rng, model=model, binarize=binarize)

  def loss_fn(params):
    loss, reconstruction, kl = negative_elbo(params, x, sample_rng, model=model, beta=beta)
    return loss.mean(), (reconstruction.mean(), kl.mean())

  (loss, (reconstruction, kl)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  state = state.apply_gradients(grads=grads)
  return state, {
      'loss': loss,
      'neg_elbo': reconstruction + kl,
      'reconstruction': reconstruction,
      'kl': kl,
      'grad_norm': optax.tree.norm(grads),
  }


def eval_step(state: TrainState, batch: dict[str, jax.Array], rng: jax.Array, *,
              model: vae.VAE, binarize: str, iwae_k: int = 0,
              iwae_chunk_size: int = 50) -> dict[str, jax.Array]:
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


def evaluate(eval_fn, state: TrainState, batches: Iterable[dict[str, np.ndarray]],
             mesh: jax.sharding.Mesh, rng: jax.Array) -> tuple[dict[str, float], np.ndarray]:
  """Mean eval metrics over the eval split (padding excluded), in nats per image and bits per
  dimension, and this process's first eval images. Batch i draws from `rng` folded with i."""
  totals, first_images = None, None
  for i, batch in enumerate(batches):
    if first_images is None:
      first_images = batch['image'][batch['mask']]
      nats_to_bits_per_dim = 1 / (math.prod(batch['image'].shape[1:]) * math.log(2))
    sums = eval_fn(state, parallel.shard_batch(batch, mesh), jax.random.fold_in(rng, i))
    totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
  totals = parallel.to_host(totals)
  count = totals.pop('count')
  metrics = {name: float(total / count) for name, total in totals.items()}
  metrics['bits_per_dim'] = metrics['neg_elbo'] * nats_to_bits_per_dim
  if 'iwae_nll' in metrics:
    metrics['iwae_bits_per_dim'] = metrics['iwae_nll'] * nats_to_bits_per_dim
  return metrics | {'count': int(count)}, first_images


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
  try:
    model = zoo.create_model('vae', image_shape=tuple(image_shape),
                             dtype=jnp.dtype(config.dtype), **kwargs)
  except (ValueError, TypeError) as e:
    raise UserError(f'config.model_kwargs: {e}') from None
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


def init_state(config: ml_collections.ConfigDict, model: vae.VAE, mesh: jax.sharding.Mesh,
               total_steps: int, steps_per_epoch: int) -> tuple[TrainState, TrainState]:
  """The replicated initial state of `model` and its abstract twin (to restore into)."""
  tx = optim.make_optimizer(config.optim, total_steps, steps_per_epoch)
  init = functools.partial(create_train_state, model, tx, input_shape=model.image_shape)
  return init_on_mesh(init, jax.random.key(config.seed), parallel.replicated(mesh))


def make_checkpointer(config: ml_collections.ConfigDict, workdir: str) -> Checkpointer:
  return Checkpointer(workdir, keep=config.keep_checkpoints, best_metric='neg_elbo',
                      best_mode='min')


def stream_rng(config: ml_collections.ConfigDict, name: str) -> jax.Array:
  """The key of the random stream `name` (one of `STREAMS`), from `config.seed`."""
  return jax.random.fold_in(jax.random.key(config.seed), 1 + STREAMS.index(name))


def make_eval_fn(config: ml_collections.ConfigDict, model: vae.VAE, *, iwae_k: int):
  return jax.jit(functools.partial(eval_step, model=model, binarize=config.binarize,
                                   iwae_k=iwae_k, iwae_chunk_size=config.iwae_chunk_size))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains and evaluates as `config` says; returns the final eval metrics."""
  for field in ('batch_size', 'eval_batch_size'):
    parallel.check_batch_size(config[field], field)
  mesh = parallel.make_mesh()
  info = input_pipeline.get_dataset_info(config.data)
  model = build_model(config, info.image_shape)
  steps_per_epoch = max(1, info.num_train // config.batch_size)
  cadence = loop.Cadence.from_epochs(config, steps_per_epoch)
  state, abstract_state = init_state(config, model, mesh, cadence.total_steps, steps_per_epoch)
  checkpointer = make_checkpointer(config, workdir)
  state = loop.restore_latest(checkpointer, state, abstract_state)
  start_step = int(state.step)
  loop.say(f'vae: {loop.count_params(state.params):,} parameters, {model.likelihood} '
           f'likelihood; {info.num_train} training and {info.num_eval} eval examples of '
           f'{config.data.dataset} {info.image_shape}; {cadence.total_steps} steps of '
           f'{config.batch_size} on {jax.device_count()} device(s)')

  eval_fn, final_eval_fn = (make_eval_fn(config, model, iwae_k=k) for k in (0, config.iwae_k))
  show_fn = jax.jit(functools.partial(visualize, model=model, binarize=config.binarize))
  writer = MetricWriter(workdir)
  scale = max(1, 64 // info.image_shape[0])  # small images, such as 8x8 digits, enlarged

  def run_eval(state, step):
    metrics, first_images = evaluate(
        final_eval_fn if step >= cadence.total_steps else eval_fn, state,
        input_pipeline.make_eval_iterator(config.data, global_batch_size=config.eval_batch_size),
        mesh, stream_rng(config, 'eval'))
    if 'iwae_nll' in metrics:
      metrics['iwae_k'] = float(config.iwae_k)
    grids = show_fn(state.params, jnp.asarray(first_images[:NUM_SHOWN]),
                    stream_rng(config, 'images'))
    for name, columns in (('samples', 8), ('reconstructions', 8),
                          ('interpolations', NUM_STEPS + 2)):
      writer.write_images(step, name, np.asarray(grids[name]), scale=scale, columns=columns)
    return metrics

  state, eval_metrics = loop.train_loop(
      state, start_step=start_step, cadence=cadence,
      train_fn=jax.jit(functools.partial(train_step, model=model, beta=config.beta,
                                         binarize=config.binarize), donate_argnums=0),
      batches=input_pipeline.make_train_iterator(
          config.data, seed=config.seed, global_batch_size=config.batch_size,
          start_step=start_step),
      mesh=mesh, rng=stream_rng(config, 'train'), evaluate=run_eval, checkpointer=checkpointer,
      writer=writer,
      learning_rate=optim.learning_rate_schedule(config.optim, cadence.total_steps,
                                                 steps_per_epoch))
  loop.say(f'Final eval on {eval_metrics["count"]} {config.data.eval_split} examples at step '
           f'{int(state.step)}: ' + format_metrics(eval_metrics))
  checkpointer.close()
  writer.close()
  return eval_metrics


def main() -> None:
  cli.run(train_and_evaluate, description=__doc__)


if __name__ == '__main__':
  main()

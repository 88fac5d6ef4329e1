"""DCGAN training: `python -m train.gan --config configs/<recipe>.py --workdir DIR`.

Trains a generator and a discriminator, each with its own optimizer, both updated in one
compiled step (the discriminator first, then the generator against the updated discriminator,
as the DCGAN reference code does). Every evaluation writes a grid of samples from a fixed noise
batch (`DIR/images/samples_STEP.png` and TensorBoard, beside `real_0000000.png`); the FID and
Inception Score of `config.eval.num_samples` samples, with the feature network of `config.eval`,
beside those of the real held-out images (the floor); class coverage and feature spread; and a
warning when a failure monitor fires (`train.gan_metrics.FailureMonitor`). The training metrics
logged every `log_every_steps` hold both losses, the discriminator's accuracy on real and
generated images, and both gradient norms. Checkpoints keep the latest and the best by FID;
running the same command again resumes. `python -m train.gan_eval` scores a checkpoint.
"""

import functools
from typing import Any, Iterator

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

import zoo
from train import cli, input_pipeline, loop, optim, parallel
from train.checkpoint import Checkpointer
from train.errors import UserError
from train.feature_nets import make_feature_net, to_signed, to_unit
from train.gan_metrics import FailureMonitor, Scorer
from train.metric_writer import MetricWriter
from train.progress import format_metrics
from train.state import TrainState, create_train_state, init_on_mesh

LOSSES = ('non_saturating', 'hinge', 'minimax')


def discriminator_loss(real_logits: jax.Array, fake_logits: jax.Array, kind: str) -> jax.Array:
  """The discriminator's loss: real images should score high, generated ones low."""
  if kind == 'hinge':
    return jnp.mean(jax.nn.relu(1 - real_logits)) + jnp.mean(jax.nn.relu(1 + fake_logits))
  # Binary cross-entropy: -log D(x) - log(1 - D(G(z))), with D = sigmoid(logit).
  return jnp.mean(jax.nn.softplus(-real_logits)) + jnp.mean(jax.nn.softplus(fake_logits))


def generator_loss(fake_logits: jax.Array, kind: str) -> jax.Array:
  """The generator's loss on the discriminator's logits for its images.

  'non_saturating': -log D(G(z)) (Goodfellow et al. 2014, the practical choice: strong
  gradients while the discriminator wins); 'minimax': log(1 - D(G(z))), whose gradients vanish
  when the discriminator is confident; 'hinge': -D(G(z)) on the raw logit.
  """
  if kind == 'hinge':
    return -jnp.mean(fake_logits)
  if kind == 'minimax':
    return -jnp.mean(jax.nn.softplus(fake_logits))
  return jnp.mean(jax.nn.softplus(-fake_logits))


@flax.struct.dataclass
class GanState:
  """The two networks' train states; the generator's step counts the training steps."""
  generator: TrainState
  discriminator: TrainState

  @property
  def step(self) -> jax.Array:
    return self.generator.step


def _variables(state: TrainState, params=None) -> dict[str, Any]:
  return {'params': state.params if params is None else params,
          'batch_stats': state.batch_stats}


def train_step(state: GanState, batch: dict[str, jax.Array], rng: jax.Array, *, loss: str,
               latent_dim: int) -> tuple[GanState, dict[str, jax.Array]]:
  """One discriminator and one generator update on a batch of real images in [0, 1].

  The generator runs once: the discriminator learns from its images (as constants), then the
  generator's gradient flows back through the updated discriminator into the same images.
  Both networks are in training mode (BatchNorm on batch statistics; the discriminator sees the
  real and the generated images as separate batches, as in the reference code).
  """
  g, d = state.generator, state.discriminator
  real = to_signed(batch['image'])
  z = jax.random.normal(jax.random.fold_in(rng, g.step), (real.shape[0], latent_dim))

  def generate(params):
    return g.apply_fn(_variables(g, params), z, train=True, mutable=['batch_stats'])

  fake, generator_vjp, g_updates = jax.vjp(generate, g.params, has_aux=True)

  def d_loss_fn(params):
    real_logits, updates = d.apply_fn(_variables(d, params), real, train=True,
                                      mutable=['batch_stats'])
    fake_logits, updates = d.apply_fn({'params': params, **updates}, jax.lax.stop_gradient(fake),
                                      train=True, mutable=['batch_stats'])
    return discriminator_loss(real_logits, fake_logits, loss), (real_logits, fake_logits,
                                                                updates['batch_stats'])

  (d_loss, (real_logits, fake_logits, d_stats)), d_grads = jax.value_and_grad(
      d_loss_fn, has_aux=True)(d.params)
  d = d.apply_gradients(grads=d_grads, batch_stats=d_stats)

  def g_loss_fn(images):
    # The discriminator's statistics from this pass are dropped: it learns in its own update.
    logits, _ = d.apply_fn(_variables(d), images, train=True, mutable=['batch_stats'])
    return generator_loss(logits, loss)

  g_loss, image_grads = jax.value_and_grad(g_loss_fn)(fake)
  (g_grads,) = generator_vjp(image_grads)
  g = g.apply_gradients(grads=g_grads, batch_stats=g_updates['batch_stats'])
  metrics = {
      'd_loss': d_loss,
      'g_loss': g_loss,
      'd_real_accuracy': jnp.mean(real_logits > 0),
      'd_fake_accuracy': jnp.mean(fake_logits < 0),
      'd_real': jnp.mean(jax.nn.sigmoid(real_logits)),  # D(x)
      'd_fake': jnp.mean(jax.nn.sigmoid(fake_logits)),  # D(G(z)), before the update
      'd_grad_norm': optax.tree.norm(d_grads),
      'g_grad_norm': optax.tree.norm(g_grads),
  }
  return GanState(generator=g, discriminator=d), metrics


def sample(generator: TrainState, rng: jax.Array, count: jax.Array, *, batch_size: int,
           latent_dim: int) -> tuple[jax.Array, jax.Array]:
  """`batch_size` images in [-1, 1] from N(0, 1) noise (BatchNorm on its running averages),
  and a mask that keeps the first `count` of them."""
  z = jax.random.normal(rng, (batch_size, latent_dim))
  images = generator.apply_fn(_variables(generator), z, train=False)
  return images, jnp.arange(batch_size) < count


def for_display(images: np.ndarray, size: tuple[int, ...]) -> np.ndarray:
  """Images in [0, 1], resized bilinearly to `size` (height, width) unless it is ()."""
  if not size:
    return images
  return np.asarray(jax.image.resize(images, (len(images), *size, images.shape[-1]), 'bilinear'))


def real_grid(config: ml_collections.ConfigDict) -> np.ndarray:
  """The first `eval.num_grid` real eval images, in [0, 1], shown as the samples are."""
  batch = next(input_pipeline.make_eval_iterator(config.data,
                                                 global_batch_size=config.eval.batch_size))
  return for_display(batch['image'][batch['mask']][:config.eval.num_grid],
                     tuple(config.eval.grid_size))


class Sampler:
  """Generated images for evaluations, from fixed noise so that evaluations compare."""

  def __init__(self, config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh,
               latent_dim: int):
    self.num_samples, self.batch_size = config.eval.num_samples, config.eval.batch_size
    self._grid_size = tuple(config.eval.grid_size)
    self._grid_key, self._score_key = jax.random.split(
        jax.random.fold_in(jax.random.key(config.seed), 1))
    self._grid = jax.jit(functools.partial(sample, batch_size=config.eval.num_grid,
                                           latent_dim=latent_dim))
    self._batch = jax.jit(functools.partial(sample, batch_size=self.batch_size,
                                            latent_dim=latent_dim),
                          out_shardings=parallel.batch_sharded(mesh))

  def grid(self, generator: TrainState) -> np.ndarray:
    """The grid's images, in [0, 1], from the same noise at every evaluation."""
    images, _ = self._grid(generator, self._grid_key, 0)
    return for_display(np.asarray(jax.device_get(to_unit(images))), self._grid_size)

  def batches(self, generator: TrainState) -> Iterator[tuple[jax.Array, jax.Array]]:
    """`num_samples` images in batches, as (images, mask); the last batch is padded."""
    for i, start in enumerate(range(0, self.num_samples, self.batch_size)):
      yield self._batch(generator, jax.random.fold_in(self._score_key, i),
                        self.num_samples - start)


def build_models(config: ml_collections.ConfigDict, image_shape: tuple[int, int, int]):
  """The generator and discriminator `config` names, for square images of `image_shape`."""
  height, width, channels = image_shape
  if height != width:
    raise UserError(f'the GAN needs square images, got {height}x{width}: set '
                    '--config.data.image_size')
  dtype = jnp.dtype(config.dtype)
  try:
    generator = zoo.create_model(config.generator.model, image_size=height, channels=channels,
                                 dtype=dtype, **config.generator.kwargs.to_dict())
    discriminator = zoo.create_model(config.discriminator.model, image_size=height, dtype=dtype,
                                     **config.discriminator.kwargs.to_dict())
  except (ValueError, TypeError) as e:
    raise UserError(f'config.generator / config.discriminator: {e}') from None
  return generator, discriminator


def create_state(generator, discriminator, g_tx: optax.GradientTransformation,
                 d_tx: optax.GradientTransformation, rng: jax.Array,
                 image_shape: tuple[int, int, int]) -> GanState:
  g_rng, d_rng = jax.random.split(rng)
  return GanState(
      generator=create_train_state(generator, g_tx, g_rng, (generator.latent_dim,)),
      discriminator=create_train_state(discriminator, d_tx, d_rng, image_shape))


def init_state(config: ml_collections.ConfigDict, image_shape: tuple[int, int, int],
               mesh: jax.sharding.Mesh, total_steps: int, steps_per_epoch: int):
  """(generator model, GAN state replicated on `mesh`, its abstract twin for restoring)."""
  if config.loss not in LOSSES:
    raise UserError(f'config.loss={config.loss!r}: use one of {LOSSES}')
  generator, discriminator = build_models(config, image_shape)
  g_tx, d_tx = (optim.make_optimizer(config[name].optim, total_steps, steps_per_epoch)
                for name in ('generator', 'discriminator'))
  init = functools.partial(create_state, generator, discriminator, g_tx, d_tx,
                           image_shape=image_shape)
  try:
    state, abstract = init_on_mesh(init, jax.random.key(config.seed), parallel.replicated(mesh))
  except ValueError as e:  # e.g. an image size the architecture cannot reach
    raise UserError(f'config.data.image_size={tuple(config.data.image_size)}: {e}') from None
  return generator, state, abstract


def check_data_config(config: ml_collections.ConfigDict) -> input_pipeline.DatasetInfo:
  if config.data.normalization != 'none':
    raise UserError(f'config.data.normalization={config.data.normalization!r}: the GAN maps '
                    "[0, 1] images to [-1, 1] itself; set it to 'none'")
  return input_pipeline.get_dataset_info(config.data)


def make_scorer(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh) -> Scorer:
  """The feature network of `config.eval` and the real images' statistics."""
  parallel.check_batch_size(config.eval.batch_size, 'eval.batch_size')
  return Scorer(make_feature_net(config.eval, mesh), config.data, mesh=mesh,
                batch_size=config.eval.batch_size, num_splits=config.eval.num_splits,
                min_class_share=config.eval.min_class_share)


def score(scorer: Scorer, sampler: Sampler, generator: TrainState) -> dict[str, float]:
  """The generator's scores, then the real held-out images' (`*_real`, the floor)."""
  scores = scorer.scores(scorer.summarize_generated(sampler.batches(generator)))
  return scores | {f'{name}_real': value for name, value in scorer.floor.items()}


def summary_line(metrics: dict[str, float]) -> str:
  """The headline scores, generated beside real."""
  return (f'FID {metrics["fid"]:.2f} (real held-out images: {metrics["fid_real"]:.2f}) | '
          f'IS {metrics["inception_score"]:.2f} ± {metrics["inception_score_std"]:.2f} (real: '
          f'{metrics["inception_score_real"]:.2f}) | classes covered '
          f'{metrics["classes_covered"]:.0f} (real: {metrics["classes_covered_real"]:.0f}) | '
          f'feature spread {metrics["feature_spread"]:.2f}')


class _MonitoredWriter(MetricWriter):
  """The run's MetricWriter, which also hands each logged training mean to the monitor."""

  def __init__(self, workdir: str, monitor: FailureMonitor):
    super().__init__(workdir)
    self.monitor = monitor

  def write_scalars(self, step: int, split: str, metrics) -> None:
    if split == 'train':
      self.monitor.observe(metrics)
    super().write_scalars(step, split, metrics)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains and evaluates as `config` says; returns the final eval metrics."""
  parallel.check_batch_size(config.batch_size, 'batch_size')
  mesh = parallel.make_mesh()
  info = check_data_config(config)
  steps_per_epoch = max(1, info.num_train // config.batch_size)
  cadence = loop.Cadence.from_epochs(config, steps_per_epoch)
  generator, state, abstract_state = init_state(config, info.image_shape, mesh,
                                                cadence.total_steps, steps_per_epoch)
  checkpointer = Checkpointer(workdir, keep=config.keep_checkpoints, best_metric='fid',
                              best_mode='min')
  state = loop.restore_latest(checkpointer, state, abstract_state)
  start_step = int(state.step)
  loop.say(f'{config.generator.model}: {loop.count_params(state.generator.params):,} and '
           f'{config.discriminator.model}: {loop.count_params(state.discriminator.params):,} '
           f'parameters; {info.num_train} training images of {config.data.dataset} '
           f'{info.image_shape}; {config.loss} loss; {cadence.total_steps} steps of '
           f'{config.batch_size} on {jax.device_count()} device(s)')
  scorer = make_scorer(config, mesh)
  sampler = Sampler(config, mesh, generator.latent_dim)
  loop.say('Scores: ' + scorer.protocol(sampler.num_samples, info.image_shape))
  loop.say('Real held-out images: ' + format_metrics(scorer.floor))
  monitor = FailureMonitor(config.monitor, scorer.floor)
  writer = _MonitoredWriter(workdir, monitor)
  if start_step == 0:  # the real images, shown as the samples will be, to compare with
    writer.write_images(0, 'real', real_grid(config), scale=config.eval.grid_scale)

  def evaluate(state: GanState, step: int) -> dict[str, float]:
    writer.write_images(step, 'samples', sampler.grid(state.generator),
                        scale=config.eval.grid_scale)
    metrics = score(scorer, sampler, state.generator)
    values, warnings = monitor.check(metrics)
    for warning in warnings:
      loop.say(f'WARNING at step {step}: {warning}')
    return metrics | values

  state, eval_metrics = loop.train_loop(
      state, start_step=start_step, cadence=cadence,
      train_fn=jax.jit(functools.partial(train_step, loss=config.loss,
                                         latent_dim=generator.latent_dim), donate_argnums=0),
      batches=input_pipeline.make_train_iterator(
          config.data, seed=config.seed, global_batch_size=config.batch_size,
          start_step=start_step),
      mesh=mesh, rng=jax.random.fold_in(jax.random.key(config.seed), 2), evaluate=evaluate,
      checkpointer=checkpointer, writer=writer)
  loop.say(f'Final eval at step {checkpointer.latest_step()}: {summary_line(eval_metrics)} '
           f'(best FID checkpoint: step {checkpointer.best_step()})')
  checkpointer.close()
  writer.close()
  return eval_metrics


def main() -> None:
  cli.run(train_and_evaluate, description=__doc__)


if __name__ == '__main__':
  main()

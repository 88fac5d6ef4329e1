"""DCGAN training: `python -m train.gan --config configs/<recipe>.py --workdir DIR`.

Trains a generator and a discriminator, each with its own optimizer, both updated in one
compiled step (the discriminator first, then the generator against the updated discriminator,
as the DCGAN reference code does). Every evaluation writes a grid of samples from a fixed noise
batch (`DIR/images/samples_STEP.png` and TensorBoard, beside `real_0000000.png`); the FID and
Inception Score of `config.eval.num_samples` samples, with the feature network of `config.eval`,
beside those of the real held-out images (the floor); class coverage and feature spread; and a
warning when a failure monitor fires (`train.metrics.gan_metrics.FailureMonitor`). The
training metrics logged every `log_every_steps` hold both losses, the discriminator's accuracy
on real and generated images, and both gradient norms. Checkpoints keep the latest and the best
by FID; running the same command again resumes. `python -m train.gan_eval` scores a checkpoint.
"""

import functools
import os
from typing import Any, Iterator

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from train.core import build, cli, loop, optim, parallel
from train.core import step as step_lib
from train.core.errors import UserError
from train.core.progress import format_metrics
from train.core.run import Streams, run
from train.core.state import TrainState, create_train_state
from train.core.task import Batch, Metrics, StepContext, Task, count_params
from train.data import pipeline as input_pipeline
from train.metrics.feature_nets import make_feature_net, to_signed, to_unit
from train.metrics.gan_metrics import FailureMonitor, Scorer

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


def train_step(state: GanState, batch: Batch, rng: jax.Array, *, loss: str, latent_dim: int,
               ctx: StepContext = StepContext()) -> tuple[GanState, Metrics]:
  """One discriminator and one generator update on a batch of real images in [0, 1].

  The discriminator learns from the generator's images (as constants); then the generator's
  gradient flows through the updated discriminator into the same images (the same noise, drawn
  per example from `rng`). Both networks are in training mode (BatchNorm on batch statistics;
  the discriminator sees the real and the generated images as separate batches, as in the
  reference code). With gradient accumulation each update averages over the micro-batches.
  """
  g, d = state.generator, state.discriminator

  def generate(params, batch_stats, n, rng):
    z = jax.vmap(lambda key: jax.random.normal(key, (latent_dim,)))(
        step_lib.example_keys(rng, n, ctx))
    return g.apply_fn({'params': params, 'batch_stats': batch_stats}, z, train=True,
                      mutable=['batch_stats'])

  def d_grad_fn(params, micro_batch, rng, batch_stats):
    real = to_signed(micro_batch['image'])
    fake, _ = generate(g.params, g.batch_stats, len(real), rng)

    def loss_fn(params):
      real_logits, updates = d.apply_fn({'params': params, 'batch_stats': batch_stats}, real,
                                        train=True, mutable=['batch_stats'])
      fake_logits, updates = d.apply_fn({'params': params, **updates},
                                        jax.lax.stop_gradient(fake), train=True,
                                        mutable=['batch_stats'])
      return discriminator_loss(real_logits, fake_logits, loss), (real_logits, fake_logits,
                                                                  updates['batch_stats'])

    (d_loss, (real_logits, fake_logits, batch_stats)), grads = jax.value_and_grad(
        loss_fn, has_aux=True)(params)
    metrics = {
        'd_loss': d_loss,
        'd_real_accuracy': jnp.mean(real_logits > 0),
        'd_fake_accuracy': jnp.mean(fake_logits < 0),
        'd_real': jnp.mean(jax.nn.sigmoid(real_logits)),  # D(x)
        'd_fake': jnp.mean(jax.nn.sigmoid(fake_logits)),  # D(G(z)), before the update
    }
    return grads, metrics, batch_stats

  def g_grad_fn(params, micro_batch, rng, batch_stats):
    def loss_fn(params):
      fake, updates = generate(params, batch_stats, len(micro_batch['image']), rng)
      # The discriminator's statistics from this pass are dropped: it learns in its own update.
      logits, _ = d.apply_fn({'params': d.params, 'batch_stats': d.batch_stats}, fake,
                             train=True, mutable=['batch_stats'])
      return generator_loss(logits, loss), updates['batch_stats']

    (g_loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    return grads, {'g_loss': g_loss}, batch_stats

  d_grads, d_metrics, d_stats = step_lib.accumulate_gradients(
      d_grad_fn, d.params, batch, rng, ctx, d.batch_stats)
  d = d.apply_gradients(grads=d_grads, batch_stats=d_stats)
  g_grads, g_metrics, g_stats = step_lib.accumulate_gradients(
      g_grad_fn, g.params, batch, rng, ctx, g.batch_stats)
  g = g.apply_gradients(grads=g_grads, batch_stats=g_stats)
  return GanState(generator=g, discriminator=d), d_metrics | g_metrics | {
      'd_grad_norm': optax.tree.norm(d_grads), 'g_grad_norm': optax.tree.norm(g_grads)}


def eval_step(state: GanState, batch: Batch) -> Metrics:
  """Sums over the real (mask=1) held-out images of the discriminator's D(x) and of its
  accuracy on them (against the train images' figures: a sign of overfitting)."""
  d = state.discriminator
  logits = d.apply_fn({'params': d.params, 'batch_stats': d.batch_stats},
                      to_signed(batch['image']), train=False).reshape(-1)
  mask = batch['mask'].astype(jnp.float32)
  return {'d_real_heldout': jnp.sum(jax.nn.sigmoid(logits.astype(jnp.float32)) * mask),
          'd_real_accuracy_heldout': jnp.sum((logits > 0) * mask), 'count': jnp.sum(mask)}


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
    self._grid_key, self._score_key = jax.random.split(Streams.from_seed(config.seed).images)
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


def build_models(config: ml_collections.ConfigDict, image_shape: tuple[int, int, int],
                 bn_axis_name: str | None = None):
  """The generator and discriminator `config` names, for square images of `image_shape`;
  `bn_axis_name` (the pmap path) makes BatchNorm average its statistics over that axis."""
  height, width, channels = image_shape
  if height != width:
    raise UserError(f'the GAN needs square images, got {height}x{width}: set '
                    '--config.data.image_size')
  common = dict(dtype=jnp.dtype(config.dtype), bn_axis_name=bn_axis_name)
  generator = build.create_model(config.generator.model, 'config.generator',
                                 image_size=height, channels=channels, **common,
                                 **config.generator.kwargs.to_dict())
  discriminator = build.create_model(config.discriminator.model, 'config.discriminator',
                                     image_size=height, **common,
                                     **config.discriminator.kwargs.to_dict())
  return generator, discriminator


def create_state(generator, discriminator, g_tx: optax.GradientTransformation,
                 d_tx: optax.GradientTransformation, rng: jax.Array,
                 image_shape: tuple[int, int, int]) -> GanState:
  g_rng, d_rng = jax.random.split(rng)
  return GanState(
      generator=create_train_state(generator, g_tx, g_rng, (generator.latent_dim,)),
      discriminator=create_train_state(discriminator, d_tx, d_rng, image_shape))


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


class GanTask(Task):
  """Two networks, two optimizers; the best checkpoint has the lowest FID."""
  name = 'gan'
  best_metric = 'fid'
  best_mode = 'min'

  def build_networks(self, info, length, ctx: StepContext = StepContext()) -> None:
    """Models and optimizers alone (no scorer): what a training step needs."""
    super().build(info, length, ctx)
    config = self.config
    if config.loss not in LOSSES:
      raise UserError(f'config.loss={config.loss!r}: use one of {LOSSES}')
    if config.data.normalization != 'none':
      raise UserError(f'config.data.normalization={config.data.normalization!r}: the GAN maps '
                      "[0, 1] images to [-1, 1] itself; set it to 'none'")
    self.generator, self.discriminator = build_models(config, info.image_shape, ctx.axis_name)
    self.g_tx, self.d_tx = (optim.make_optimizer(config[name].optim, length.total_steps,
                                                 length.steps_per_epoch)
                            for name in ('generator', 'discriminator'))

  def build(self, info, length, ctx) -> None:
    self.build_networks(info, length, ctx)
    config, mesh = self.config, parallel.make_mesh()
    self.scorer = make_scorer(config, mesh)
    self.sampler = Sampler(config, mesh, self.generator.latent_dim)
    loop.say('Scores: ' + self.scorer.protocol(self.sampler.num_samples, info.image_shape))
    loop.say('Real held-out images: ' + format_metrics(self.scorer.floor))
    self.monitor = FailureMonitor(config.monitor, self.scorer.floor)

  def init(self, rng: jax.Array) -> GanState:
    try:
      return create_state(self.generator, self.discriminator, self.g_tx, self.d_tx, rng,
                          self.info.image_shape)
    except ValueError as e:  # e.g. an image size the architecture cannot reach
      raise UserError(f'config.data.image_size={tuple(self.config.data.image_size)}: {e}'
                      ) from None

  def describe(self, state: GanState) -> str:
    config = self.config
    return (f'{config.generator.model}: {count_params(state.generator):,} and '
            f'{config.discriminator.model}: {count_params(state.discriminator):,} parameters; '
            f'{config.loss} loss')

  def train_step(self, state, batch, rng):
    return train_step(state, batch, rng, loss=self.config.loss,
                      latent_dim=self.generator.latent_dim, ctx=self.ctx)

  def after_log(self, step: int, means: dict[str, float]) -> None:
    self.monitor.observe(means)

  def eval_step(self, state, batch, rng, *, final=False):
    del rng, final  # deterministic
    return eval_step(state, batch)

  def after_eval(self, state, step, images, rng, writer) -> dict[str, float]:
    config = self.config
    if not os.path.exists(os.path.join(writer.workdir, 'images', 'real_0000000.png')):
      # The real images, shown as the samples are, to compare with.
      writer.write_images(0, 'real', real_grid(config), scale=config.eval.grid_scale)
    writer.write_images(step, 'samples', self.sampler.grid(state.generator),
                        scale=config.eval.grid_scale)
    metrics = score(self.scorer, self.sampler, state.generator)
    values, warnings = self.monitor.check(metrics)
    for warning in warnings:
      loop.say(f'WARNING at step {step}: {warning}')
    return metrics | values

  def final_report(self, metrics) -> str:
    return summary_line(metrics)


def train_and_evaluate(config, workdir: str, **kwargs) -> dict[str, float]:
  """Trains and evaluates as `config` says; returns the final eval metrics (see `run`)."""
  return run(GanTask(config), config, workdir, **kwargs)


main = functools.partial(cli.run, train_and_evaluate, description=__doc__)

if __name__ == '__main__':
  main()

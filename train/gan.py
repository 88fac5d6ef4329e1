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

import flax
import jax
import jax.numpy as jnp
import optax

from train.core import build, cli, loop, optim, parallel, validate
from train.core import step as step_lib
from train.core.errors import UserError
from train.core.losses import GAN_LOSSES, discriminator_loss, generator_loss
from train.core.progress import format_metrics
from train.core.state import TrainState, create_train_state
from train.core.task import Batch, Metrics, StepContext, Task, count_params
from train.metrics.feature_nets import to_signed
from train.metrics.gan_evaluation import GanEvaluator, summary_line


@flax.struct.dataclass
class GanState:
  """The two networks' train states; the generator's step counts the training steps."""
  generator: TrainState
  discriminator: TrainState

  @property
  def step(self) -> jax.Array:
    return self.generator.step


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


class GanTask(Task):
  """Two networks, two optimizers; the best checkpoint has the lowest FID."""
  name = 'gan'
  best_metric = 'fid'
  best_mode = 'min'
  after_eval_metrics = ('fid', 'inception_score', 'inception_score_std', 'classes_covered',
                        'feature_spread')

  def build_networks(self, info, length, ctx: StepContext = StepContext()) -> None:
    """Models and optimizers alone (no evaluator): what a training step needs."""
    super().build(info, length, ctx)
    config = self.config
    if config.loss not in GAN_LOSSES:
      raise UserError(f'config.loss={config.loss!r}: use one of {GAN_LOSSES}')
    validate.require_unit_images(config, 'the GAN maps [0, 1] images to [-1, 1] itself')
    self.generator, self.discriminator = build.gan_models(config, info.image_shape,
                                                          ctx.axis_name)
    self.g_tx, self.d_tx = (optim.make_optimizer(config[name].optim, length.total_steps,
                                                 length.steps_per_epoch)
                            for name in ('generator', 'discriminator'))

  def build(self, info, length, ctx) -> None:
    self.build_networks(info, length, ctx)
    self.evaluator = GanEvaluator(self.config, parallel.make_mesh(), self.generator.latent_dim,
                                  info.image_shape)
    loop.say('Scores: ' + self.evaluator.protocol)
    loop.say('Real held-out images: ' + format_metrics(self.evaluator.scorer.floor))

  def init(self, rng: jax.Array) -> GanState:
    g_rng, d_rng = jax.random.split(rng)
    try:
      return GanState(
          generator=create_train_state(self.generator, self.g_tx, g_rng,
                                       (self.generator.latent_dim,)),
          discriminator=create_train_state(self.discriminator, self.d_tx, d_rng,
                                           self.info.image_shape))
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
    self.evaluator.monitor.observe(means)

  def eval_step(self, state, batch, rng, *, final=False):
    del rng, final  # deterministic
    return eval_step(state, batch)

  def after_eval(self, state, step, images, rng, writer) -> dict[str, float]:
    return self.evaluator(state.generator, step, writer)

  def final_report(self, metrics) -> str:
    return summary_line(metrics)


train_and_evaluate = cli.trainer(GanTask)
main = functools.partial(cli.run, train_and_evaluate, description=__doc__)

if __name__ == '__main__':
  main()

"""PixelCNN training: `python -m train.pixelcnn --config configs/<recipe>.py --workdir DIR`.

Trains a `zoo` PixelCNN by maximum likelihood on quantized images: binarized at
`config.binarize_threshold` when `config.num_levels == 2`, else rounded to `num_levels` values per
channel. Each evaluation reports, on the whole eval split, the exact negative log-likelihood in
nats per image and bits per dimension beside that of an independent per-pixel categorical
(Bernoulli when binarized) fitted once on the training split; draws `config.num_samples` images
pixel by pixel and channel by channel in one compiled loop (samples/s, compile excluded);
completes the bottom half of test images given their top half; and writes both grids to
`DIR/images/*.png` and TensorBoard. Running the command again on a finished workdir restores the
last checkpoint and evaluates (and samples) again.
"""

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from train.core import build, cli, loop, parallel, validate
from train.core import step as step_lib
from train.core.errors import UserError
from train.core.state import TrainState, create_train_state
from train.core.task import Batch, Metrics, StepContext, Task, count_params
from train.data import pipeline as input_pipeline
from train.metrics import pixelcnn_sampling
from train.metrics.likelihood import (
  bits_per_dim,
  fit_independent_baseline,
  independent_nll,
  quantize,
)
from zoo import pixelcnn


def _nll(state: TrainState, x_int: jax.Array, num_levels: int) -> jax.Array:
  """-log p(x) in nats per image under the model, (batch,)."""
  logits = state.apply_fn({'params': state.params}, pixelcnn.to_input(x_int, num_levels),
                          train=False)
  return -pixelcnn.log_likelihood(logits, x_int)


def train_step(state: TrainState, batch: Batch, rng: jax.Array, *, num_levels: int,
               threshold: float, ctx: StepContext = StepContext()) -> tuple[TrainState, Metrics]:
  """One optimizer step on the mean NLL (nats per image) of a batch."""
  def grad_fn(params, micro_batch, rng, carry):
    del rng  # a PixelCNN has no dropout or other randomness in training
    x = quantize(micro_batch['image'], num_levels, threshold)
    loss, grads = jax.value_and_grad(
        lambda params: _nll(state.replace(params=params), x, num_levels).mean())(params)
    return grads, {'loss': loss, 'bits_per_dim': bits_per_dim(loss, x.shape[1:])}, carry

  grads, metrics, _ = step_lib.accumulate_gradients(grad_fn, state.params, batch, rng, ctx)
  state = state.apply_gradients(grads=grads)
  return state, metrics | {'grad_norm': optax.tree.norm(grads),
                           'param_norm': optax.tree.norm(state.params)}


def eval_step(state: TrainState, batch: Batch, baseline_log_probs: jax.Array, *,
              num_levels: int, threshold: float) -> Metrics:
  """Sums of the model's and the baseline's NLL over the real (mask=1) images of a padded batch."""
  x = quantize(batch['image'], num_levels, threshold)
  mask = batch['mask'].astype(jnp.float32)
  return {
      'nll': jnp.sum(_nll(state, x, num_levels) * mask),
      'baseline_nll': jnp.sum(independent_nll(baseline_log_probs, x) * mask),
      'count': jnp.sum(mask),
  }


def check_config(config: ml_collections.ConfigDict) -> None:
  """Raises UserError for fields this trainer cannot use, naming the fix."""
  validate.require_unit_images(config, 'a PixelCNN models quantized [0, 1] images')
  if not (isinstance(config.num_levels, int) and 2 <= config.num_levels <= 256):
    raise UserError(f'config.num_levels={config.num_levels!r}: use 2 (binarized) to 256 (8-bit)')
  if config.num_levels == 2 and not 0 < config.binarize_threshold < 1:
    raise UserError(f'config.binarize_threshold={config.binarize_threshold}: use a value in '
                    '(0, 1), the [0, 1] intensity above which a pixel is 1')
  for field in ('num_samples', 'num_completions'):
    parallel.check_batch_size(config[field], field)


class PixelCnnTask(Task):
  """Exact likelihood; the best checkpoint has the lowest eval NLL."""
  name = 'pixelcnn'
  best_metric = 'nll'
  best_mode = 'min'

  def build(self, info, length, ctx) -> None:
    super().build(info, length, ctx)
    config = self.config
    check_config(config)
    self.model = build.pixelcnn_model(config, info.image_shape[-1])
    self.levels = dict(num_levels=config.num_levels, threshold=config.binarize_threshold)
    self.tx, self.schedule = build.optimizer(config.optim, length)
    self.sampler = pixelcnn_sampling.Sampler(self.model, config.sample_temperature)
    self.mesh = parallel.make_mesh()
    self._fit_baseline()

  def init(self, rng: jax.Array) -> TrainState:
    return create_train_state(self.model, self.tx, rng, self.info.image_shape)

  def describe(self, state: TrainState) -> str:
    return (f'{self.config.model}: {count_params(state):,} parameters, '
            f'{self.config.num_levels} levels')

  def _fit_baseline(self) -> None:
    """The independent per-pixel baseline and the images to complete, from the data."""
    config = self.config
    train_split = config.data.copy_and_resolve_references()
    train_split.eval_split = config.data.train_split  # one unaugmented, padded pass
    self.baseline, self.num_fitted = fit_independent_baseline(
        input_pipeline.make_eval_iterator(train_split, global_batch_size=config.eval_batch_size),
        self.mesh, **self.levels)
    loop.say(f'Independent per-pixel baseline fitted on {self.num_fitted} '
             f'{config.data.train_split} images (its test NLL is reported as baseline_nll)')
    completion_batch = next(input_pipeline.make_eval_iterator(
        config.data, global_batch_size=config.num_completions))
    self.test_images = parallel.shard_batch(
        {'x': np.asarray(quantize(completion_batch['image'], **self.levels))}, self.mesh)['x']

  def train_step(self, state, batch, rng):
    return train_step(state, batch, rng, ctx=self.ctx, **self.levels)

  def eval_step(self, state, batch, rng, *, final=False):
    del rng, final  # exact and deterministic
    return eval_step(state, batch, self.baseline, **self.levels)

  def summarize(self, totals) -> dict[str, float]:
    metrics = super().summarize(totals)
    shape = self.info.image_shape
    return metrics | {'bits_per_dim': float(bits_per_dim(metrics['nll'], shape)),
                      'baseline_bits_per_dim': float(bits_per_dim(metrics['baseline_nll'], shape))}

  def after_eval(self, state, step, images, rng, writer) -> dict[str, float]:
    # The same key at every evaluation: the grids change only as the model does.
    return pixelcnn_sampling.write_samples(
        self.sampler, state, rng, self.test_images, num_samples=self.config.num_samples,
        num_levels=self.config.num_levels, mesh=self.mesh, writer=writer, step=step)

  def final_report(self, m) -> str:
    return (f'NLL {m["nll"]:.2f} nats/image ({m["bits_per_dim"]:.4f} bits/dim); independent '
            f'per-pixel baseline fitted on {self.num_fitted} {self.config.data.train_split} '
            f'images: {m["baseline_nll"]:.2f} nats/image ({m["baseline_bits_per_dim"]:.4f} '
            f'bits/dim). Sampling: {m["samples_per_second"]:.2f} samples/s (batch '
            f'{self.config.num_samples}, compiled once in {self.sampler.compile_seconds:.1f} s, '
            'not counted); grids in WORKDIR/images')


train_and_evaluate = cli.trainer(PixelCnnTask)
main = functools.partial(cli.run, train_and_evaluate, description=__doc__)

if __name__ == '__main__':
  main()

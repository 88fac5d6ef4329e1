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
import time
from typing import Any, Iterable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.experimental import multihost_utils

import zoo
from train.core import build, cli, loop, parallel
from train.core import step as step_lib
from train.core.errors import UserError
from train.core.run import run
from train.core.state import TrainState, create_train_state
from train.core.task import Batch, Metrics, StepContext, Task, count_params
from train.core.writer import MetricWriter
from train.data import pipeline as input_pipeline
from zoo import pixelcnn

# Grids are enlarged (nearest) to about this many pixels per image side, so 8x8 stays legible.
_GRID_IMAGE_SIZE = 64


def quantize(images: jax.Array, num_levels: int, threshold: float) -> jax.Array:
  """Images in [0, 1] -> integers in [0, num_levels): `image > threshold` when binary."""
  if num_levels == 2:
    return (images > threshold).astype(jnp.int32)
  return jnp.clip(jnp.round(images * (num_levels - 1)), 0, num_levels - 1).astype(jnp.int32)


def _nll(state: TrainState, x_int: jax.Array, num_levels: int) -> jax.Array:
  """-log p(x) in nats per image under the model, (batch,)."""
  logits = state.apply_fn({'params': state.params}, pixelcnn.to_input(x_int, num_levels),
                          train=False)
  return -pixelcnn.log_likelihood(logits, x_int)


def bits_per_dim(nats_per_image: jax.Array | float, image_shape: tuple[int, ...]) -> Any:
  """Nats per image -> bits per dimension (per channel of each pixel)."""
  return nats_per_image / (np.prod(image_shape) * np.log(2))


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


def independent_nll(log_probs: jax.Array, x_int: jax.Array) -> jax.Array:
  """-log p(x) in nats per image, (batch,), under per-position log-probabilities (H, W, C, L)."""
  flat = x_int.reshape(x_int.shape[0], -1)
  positions = jnp.arange(flat.shape[1])
  return -log_probs.reshape(flat.shape[1], -1)[positions, flat].sum(-1)


def eval_step(state: TrainState, batch: dict[str, jax.Array], baseline_log_probs: jax.Array, *,
              num_levels: int, threshold: float) -> dict[str, jax.Array]:
  """Sums of the model's and the baseline's NLL over the real (mask=1) images of a padded batch."""
  x = quantize(batch['image'], num_levels, threshold)
  mask = batch['mask'].astype(jnp.float32)
  return {
      'nll': jnp.sum(_nll(state, x, num_levels) * mask),
      'baseline_nll': jnp.sum(independent_nll(baseline_log_probs, x) * mask),
      'count': jnp.sum(mask),
  }


def level_counts(batch: dict[str, jax.Array], *, num_levels: int,
                 threshold: float) -> jax.Array:
  """counts[h, w, c, v]: how many real (mask=1) images of the batch have value v at (h, w, c)."""
  x = quantize(batch['image'], num_levels, threshold)
  flat = x.reshape(x.shape[0], -1)
  counts = jnp.zeros((flat.shape[1], num_levels), jnp.float32).at[
      jnp.arange(flat.shape[1]), flat].add(batch['mask'].astype(jnp.float32)[:, None])
  return counts.reshape(*x.shape[1:], num_levels)


def fit_independent_baseline(batches: Iterable[dict[str, np.ndarray]], mesh: jax.sharding.Mesh,
                             *, num_levels: int, threshold: float) -> tuple[jax.Array, int]:
  """Log-probabilities (H, W, C, num_levels) of every value at every position, each position
  independent of the others, and the number of images they were fitted on.

  Add-one (Laplace) smoothing: p(v) = (count(v) + 1) / (n + num_levels), so a value never seen
  in training at a position still has a finite likelihood on the test split.
  """
  count_fn = jax.jit(functools.partial(level_counts, num_levels=num_levels, threshold=threshold))
  counts = None
  for batch in batches:
    batch_counts = count_fn(parallel.shard_batch(batch, mesh))
    counts = batch_counts if counts is None else counts + batch_counts
  n = counts.sum(-1, keepdims=True)
  return jnp.log((counts + 1) / (n + num_levels)), int(n.reshape(-1)[0])


class Sampler:
  """`pixelcnn.sample`, compiled ahead of time on first use so that its timings exclude compiling.

  The images to draw are sharded over the devices like a batch (`given` is a global array).
  """

  def __init__(self, model: pixelcnn.PixelCNN, temperature: float):
    self._model, self._temperature = model, temperature
    self._compiled = {}
    self.compile_seconds = 0.0

  def __call__(self, params, rng: jax.Array, given: jax.Array,
               given_mask: jax.Array) -> tuple[np.ndarray, float]:
    """The images (integers, on the host of every process) and the seconds sampling took."""
    variables = {'params': params}
    kwargs = dict(temperature=self._temperature, given=given, given_mask=given_mask)
    key = (given.shape, given_mask.shape)
    if key not in self._compiled:
      start = time.perf_counter()
      self._compiled[key] = pixelcnn.sample.lower(self._model, variables, rng, given.shape,
                                                  **kwargs).compile()
      self.compile_seconds += time.perf_counter() - start
    start = time.perf_counter()
    images = jax.block_until_ready(self._compiled[key](variables, rng, **kwargs))
    seconds = time.perf_counter() - start
    return np.asarray(multihost_utils.process_allgather(images, tiled=True)), seconds


def to_display(x_int: np.ndarray, num_levels: int) -> np.ndarray:
  """Integer images -> [0, 1] for a grid; binarized ones as dark ink on white, which keeps
  strokes that touch an image's border apart from the grid's white padding."""
  images = x_int.astype(np.float32) / (num_levels - 1)
  return 1 - images if num_levels == 2 else images


def side_by_side(originals: np.ndarray, completions: np.ndarray) -> np.ndarray:
  """(N, H, 2W + 1, C) tiles: each original, a grey column, then its completion."""
  separator = np.full((*originals.shape[:2], 1, originals.shape[-1]), 0.5, np.float32)
  return np.concatenate([originals, separator, completions], axis=2)


def write_samples(sampler: Sampler, state: TrainState, rng: jax.Array,
                  test_images: jax.Array, *, num_samples: int, num_levels: int,
                  mesh: jax.sharding.Mesh, writer: MetricWriter, step: int) -> dict[str, float]:
  """Draws `num_samples` images and completes the bottom halves of `test_images` (integers,
  sharded); writes both grids; returns the sampling speed."""
  _, h, w, c = test_images.shape
  scale = max(1, _GRID_IMAGE_SIZE // max(h, w))
  # Only the batch needs sharding, so that each device draws its share of the images.
  zeros = np.zeros((num_samples // jax.process_count(), h, w, c), np.int32)
  blank = parallel.shard_batch({'x': zeros}, mesh)['x']
  samples, seconds = sampler(state.params, rng, blank, jnp.zeros((1, 1, 1, 1), bool))
  writer.write_images(step, 'samples', to_display(samples, num_levels), scale=scale)
  top_half = (jnp.arange(h) < h // 2)[None, :, None, None]
  completions, _ = sampler(state.params, rng, test_images, top_half)
  originals = np.asarray(multihost_utils.process_allgather(test_images, tiled=True))
  writer.write_images(step, 'completions', side_by_side(to_display(originals, num_levels),
                                                        to_display(completions, num_levels)),
                      scale=scale)
  return {'samples_per_second': num_samples / seconds}


def build_model(config: ml_collections.ConfigDict, num_channels: int) -> pixelcnn.PixelCNN:
  """The `zoo` PixelCNN the config names, for images of `num_channels` and `config.num_levels`."""
  model = build.create_model(config.model, f'config.model={config.model!r}',
                             num_channels=num_channels, num_levels=config.num_levels,
                             dtype=jnp.dtype(config.dtype), **config.model_kwargs.to_dict())
  if not isinstance(model, pixelcnn.PixelCNN):
    raise UserError(f'config.model={config.model!r} is not a PixelCNN; use one of '
                    f'{zoo.list_models("pixelcnn*")}')
  return model


def check_config(config: ml_collections.ConfigDict) -> None:
  """Raises UserError for fields this trainer cannot use, naming the fix."""
  if config.data.normalization != 'none':
    raise UserError(f'data.normalization={config.data.normalization!r}: a PixelCNN models '
                    "quantized [0, 1] images; set --config.data.normalization=none")
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
    self.model = build_model(config, info.image_shape[-1])
    self.levels = dict(num_levels=config.num_levels, threshold=config.binarize_threshold)
    self.tx, self.schedule = build.optimizer(config.optim, length)
    self.sampler = Sampler(self.model, config.sample_temperature)
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
    return write_samples(self.sampler, state, rng, self.test_images,
                         num_samples=self.config.num_samples,
                         num_levels=self.config.num_levels, mesh=self.mesh, writer=writer,
                         step=step)

  def final_report(self, m) -> str:
    return (f'NLL {m["nll"]:.2f} nats/image ({m["bits_per_dim"]:.4f} bits/dim); independent '
            f'per-pixel baseline fitted on {self.num_fitted} {self.config.data.train_split} '
            f'images: {m["baseline_nll"]:.2f} nats/image ({m["baseline_bits_per_dim"]:.4f} '
            f'bits/dim). Sampling: {m["samples_per_second"]:.2f} samples/s (batch '
            f'{self.config.num_samples}, compiled once in {self.sampler.compile_seconds:.1f} s, '
            'not counted); grids in WORKDIR/images')


def train_and_evaluate(config, workdir: str, **kwargs) -> dict[str, float]:
  """Trains and evaluates as `config` says; returns the final eval metrics (see `run`)."""
  return run(PixelCnnTask(config), config, workdir, **kwargs)


main = functools.partial(cli.run, train_and_evaluate, description=__doc__)

if __name__ == '__main__':
  main()

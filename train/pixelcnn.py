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
from train import cli, input_pipeline, loop, optim, parallel
from train.checkpoint import Checkpointer
from train.early_stopping import EarlyStopping
from train.errors import UserError
from train.metric_writer import MetricWriter
from train.state import TrainState, create_train_state, init_on_mesh
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


def train_step(state: TrainState, batch: dict[str, jax.Array], rng: jax.Array, *,
               num_levels: int, threshold: float) -> tuple[TrainState, dict[str, jax.Array]]:
  """One optimizer step on the mean NLL (nats per image) of a batch."""
  del rng  # a PixelCNN has no dropout or other randomness in training
  x = quantize(batch['image'], num_levels, threshold)

  def loss_fn(params):
    return _nll(state.replace(params=params), x, num_levels).mean()

  loss, grads = jax.value_and_grad(loss_fn)(state.params)
  state = state.apply_gradients(grads=grads)
  return state, {
      'loss': loss,
      'bits_per_dim': bits_per_dim(loss, x.shape[1:]),
      'grad_norm': optax.tree.norm(grads),
      'param_norm': optax.tree.norm(state.params),
  }


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


def evaluate(eval_fn, state: TrainState, batches: Iterable[dict[str, np.ndarray]],
             mesh: jax.sharding.Mesh, image_shape: tuple[int, int, int]) -> dict[str, float]:
  """Mean NLL of the model and of the baseline over every eval image, in nats and bits/dim."""
  totals = None
  for batch in batches:
    sums = eval_fn(state, parallel.shard_batch(batch, mesh))
    totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
  totals = parallel.to_host(totals)
  count = totals.pop('count')
  metrics = {name: float(total / count) for name, total in totals.items()}
  return metrics | {
      'bits_per_dim': float(bits_per_dim(metrics['nll'], image_shape)),
      'baseline_bits_per_dim': float(bits_per_dim(metrics['baseline_nll'], image_shape)),
      'count': int(count),
  }


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
  try:
    model = zoo.create_model(config.model, num_channels=num_channels,
                             num_levels=config.num_levels, dtype=jnp.dtype(config.dtype),
                             **config.model_kwargs.to_dict())
  except (ValueError, TypeError) as e:
    raise UserError(f'config.model={config.model!r}: {e}') from None
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
  for field in ('batch_size', 'eval_batch_size', 'num_samples', 'num_completions'):
    parallel.check_batch_size(config[field], field)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains and evaluates as `config` says; returns the final eval metrics."""
  check_config(config)
  mesh = parallel.make_mesh()
  info = input_pipeline.get_dataset_info(config.data)
  model = build_model(config, info.image_shape[-1])
  levels = dict(num_levels=config.num_levels, threshold=config.binarize_threshold)
  steps_per_epoch = max(1, info.num_train // config.batch_size)
  cadence = loop.Cadence.from_epochs(config, steps_per_epoch)
  tx = optim.make_optimizer(config.optim, cadence.total_steps, steps_per_epoch)
  init_rng, sample_rng = jax.random.split(jax.random.key(config.seed))
  state, abstract_state = init_on_mesh(
      functools.partial(create_train_state, model, tx, input_shape=info.image_shape),
      init_rng, parallel.replicated(mesh))
  checkpointer = Checkpointer(workdir, keep=config.keep_checkpoints, best_metric='nll',
                              best_mode='min')
  state = loop.restore_latest(checkpointer, state, abstract_state)
  start_step = int(state.step)
  loop.say(f'{config.model}: {loop.count_params(state.params):,} parameters; '
           f'{info.num_train} training and {info.num_eval} eval images of '
           f'{config.data.dataset} {info.image_shape}, {config.num_levels} levels; '
           f'{cadence.total_steps} steps of {config.batch_size} on {jax.device_count()} '
           'device(s)')

  train_split = config.data.copy_and_resolve_references()
  train_split.eval_split = config.data.train_split  # one unaugmented, padded pass
  baseline, num_fitted = fit_independent_baseline(
      input_pipeline.make_eval_iterator(train_split, global_batch_size=config.eval_batch_size),
      mesh, **levels)
  loop.say(f'Independent per-pixel baseline fitted on {num_fitted} {config.data.train_split} '
           'images (its test NLL is reported as baseline_nll)')
  completion_batch = next(input_pipeline.make_eval_iterator(
      config.data, global_batch_size=config.num_completions))
  test_images = parallel.shard_batch(
      {'x': np.asarray(quantize(completion_batch['image'], **levels))}, mesh)['x']
  eval_fn = jax.jit(functools.partial(eval_step, baseline_log_probs=baseline, **levels))
  sampler = Sampler(model, config.sample_temperature)
  writer = MetricWriter(workdir)

  def run_eval(state, step):
    metrics = evaluate(eval_fn, state, input_pipeline.make_eval_iterator(
        config.data, global_batch_size=config.eval_batch_size), mesh, info.image_shape)
    # The same key at every evaluation: the grids change only as the model does.
    return metrics | write_samples(sampler, state, sample_rng, test_images,
                                   num_samples=config.num_samples,
                                   num_levels=config.num_levels, mesh=mesh, writer=writer,
                                   step=step)

  state, eval_metrics = loop.train_loop(
      state, start_step=start_step, cadence=cadence,
      train_fn=jax.jit(functools.partial(train_step, **levels), donate_argnums=0),
      batches=input_pipeline.make_train_iterator(
          config.data, seed=config.seed, global_batch_size=config.batch_size,
          start_step=start_step),
      mesh=mesh, rng=sample_rng, evaluate=run_eval, checkpointer=checkpointer, writer=writer,
      learning_rate=optim.learning_rate_schedule(config.optim, cadence.total_steps,
                                                 steps_per_epoch),
      stopper=EarlyStopping(**config.early_stopping.to_dict()))
  m = eval_metrics
  loop.say(
      f'Final eval on {m["count"]} {config.data.eval_split} images at step {int(state.step)}: '
      f'NLL {m["nll"]:.2f} nats/image ({m["bits_per_dim"]:.4f} bits/dim); independent '
      f'per-pixel baseline fitted on {num_fitted} {config.data.train_split} images: '
      f'{m["baseline_nll"]:.2f} nats/image ({m["baseline_bits_per_dim"]:.4f} bits/dim). '
      f'Sampling: {m["samples_per_second"]:.2f} samples/s (batch {config.num_samples}, '
      f'compiled once in {sampler.compile_seconds:.1f} s, not counted). Best NLL checkpoint: '
      f'step {checkpointer.best_step()}; grids in {workdir}/images')
  checkpointer.close()
  writer.close()
  return eval_metrics


def main() -> None:
  cli.run(train_and_evaluate, description=__doc__)


if __name__ == '__main__':
  main()

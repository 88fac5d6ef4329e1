"""Super-resolution: `python -m train.upsample --config configs/<recipe>.py --workdir DIR`.

Trains one `zoo` super-resolution network per decoder in `config.decoders` (by default the
transposed-convolution and the resize-convolution decoder) side by side on the same batches,
to recover images from their `sr_data.low_resolution` versions. The loss is the mean absolute
error, as in EDSR (Lim et al. 2017): on the photo patches it gave a higher PSNR, per image and
over the split, than the squared error that PSNR measures. Each evaluation reports on the eval
split, for bicubic interpolation and for each decoder <m>:

- `psnr_<m>`: PSNR in dB of the split taken as one image, 10 log10(1 / MSE) with the MSE over
  every pixel of every image, `scale` pixels shaved from each border; `mean_psnr_<m>` averages
  the images' own PSNRs instead (a blank patch of sky then weighs as much as one of foliage).
- `checkerboard_db_<m>`: the checkerboard score, 10 log10 of the fraction of the outputs'
  energy at the frequencies of period `scale` (`image_metrics.lattice_energy`; energies summed
  over the split), also for the targets (`checkerboard_db_target`) as the natural level.
- `lattice_error_db_<m>`: the energy of the error (output - target) at those frequencies,
  relative to the targets' energy there: 0 dB when the output has nothing there (bicubic),
  above 0 when it adds patterns the targets lack (artifacts), below 0 when it recovers some of
  the targets' finest detail.

It writes `DIR/metrics.jsonl`, TensorBoard events, a PNG grid per evaluation (one row per
example: input, bicubic, each decoder, target) and Orbax checkpoints; running the same command
again resumes.
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
from train import cli, image_metrics, input_pipeline, loop, optim, parallel
from train import sr_data  # also registers the sklearn_photos dataset with TFDS
from train.checkpoint import Checkpointer
from train.errors import UserError
from train.metric_writer import MetricWriter
from train.progress import format_metrics
from train.state import TrainState, create_train_state, init_on_mesh

DECODERS = ('transpose', 'resize')

# One TrainState per decoder, keyed by decoder name.
States = dict[str, TrainState]


def predict(states: States, targets: jax.Array, *, scale: int) -> dict[str, jax.Array]:
  """Every picture of the comparison, each (B, H, W, C) at the targets' size.

  'input' is the low-resolution input enlarged by pixel repetition (to show it as it is),
  then 'bicubic', one entry per decoder, and 'target'.
  """
  small = sr_data.low_resolution(targets, scale)
  pictures = {'input': jnp.repeat(jnp.repeat(small, scale, axis=1), scale, axis=2),
              'bicubic': sr_data.bicubic_upscale(small, scale)}
  for name, state in states.items():
    pictures[name] = state.apply_fn({'params': state.params}, small, train=False)
  return pictures | {'target': targets}


def train_step(states: States, batch: dict[str, jax.Array], rng: jax.Array, *,
               scale: int) -> tuple[States, dict[str, jax.Array]]:
  """One optimizer step of every decoder's network on the same batch (mean absolute error)."""
  del rng  # Nothing random: no dropout, and the degradation is fixed.
  targets = batch['image']
  small = sr_data.low_resolution(targets, scale)
  new_states, metrics = {}, {}
  for name, state in states.items():
    def loss_fn(params, state=state):
      outputs = state.apply_fn({'params': params}, small, train=True)
      return jnp.mean(jnp.abs(outputs.astype(jnp.float32) - targets))

    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    new_states[name] = state.apply_gradients(grads=grads)
    metrics[f'loss_{name}'] = loss
    metrics[f'grad_norm_{name}'] = optax.tree.norm(grads)
  return new_states, metrics


def eval_step(states: States, batch: dict[str, jax.Array], *, scale: int
              ) -> dict[str, jax.Array]:
  """Sums over the real (mask=1) examples of squared errors, PSNRs and lattice energies."""
  targets = batch['image']
  pictures = predict(states, targets, scale=scale)
  mask = batch['mask'].astype(jnp.float32)
  per_image = {}
  for name, images in pictures.items():
    if name == 'input':
      continue
    per_image[f'lattice_energy_{name}'], per_image[f'energy_{name}'] = (
        image_metrics.lattice_energy(images, period=scale))
    if name != 'target':
      per_image[f'squared_error_{name}'] = image_metrics.squared_error(images, targets,
                                                                       shave=scale)
      per_image[f'psnr_{name}'] = image_metrics.psnr(images, targets, shave=scale)
      per_image[f'error_lattice_energy_{name}'] = image_metrics.lattice_energy(
          images - targets, period=scale)[0]
  return {k: jnp.sum(v * mask) for k, v in per_image.items()} | {'count': jnp.sum(mask)}


def summarize(totals: dict[str, float], image_shape: tuple[int, ...],
              scale: int) -> dict[str, float]:
  """The eval metrics from `eval_step`'s sums over the split (see the module docstring)."""
  count = totals['count']
  height, width, channels = image_shape
  values = count * (height - 2 * scale) * (width - 2 * scale) * channels
  decibels = lambda ratio: float(10 * math.log10(max(ratio, 1e-20)))
  metrics = {}
  for name in (n[len('energy_'):] for n in totals if n.startswith('energy_')):
    metrics[f'checkerboard_db_{name}'] = decibels(
        totals[f'lattice_energy_{name}'] / max(totals[f'energy_{name}'], 1e-20))
    if name == 'target':
      continue
    metrics[f'psnr_{name}'] = decibels(values / max(totals[f'squared_error_{name}'], 1e-20))
    metrics[f'mean_psnr_{name}'] = float(totals[f'psnr_{name}'] / count)
    metrics[f'lattice_error_db_{name}'] = decibels(
        totals[f'error_lattice_energy_{name}'] / max(totals['lattice_energy_target'], 1e-20))
  return metrics | {'count': int(count)}


def evaluate(eval_fn, states: States, batches: Iterable[dict[str, np.ndarray]],
             mesh: jax.sharding.Mesh, scale: int) -> tuple[dict[str, float], np.ndarray]:
  """The eval metrics over the split (padding excluded); also this process's first images."""
  totals, first_images = None, None
  for batch in batches:
    if first_images is None:
      first_images = batch['image'][batch['mask']]
      image_shape = batch['image'].shape[1:]
    sums = eval_fn(states, parallel.shard_batch(batch, mesh))
    totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
  return summarize(parallel.to_host(totals), image_shape, scale), first_images


def build_model(config: ml_collections.ConfigDict, decoder: str):
  """The super-resolution network with `decoder`, as `config.model_kwargs` says."""
  try:
    return zoo.create_model(f'sr_{decoder}', scale=config.scale, dtype=jnp.dtype(config.dtype),
                            **config.model_kwargs.to_dict())
  except (ValueError, TypeError) as e:
    raise UserError(f'config.model_kwargs / config.scale={config.scale}: {e}') from None


def _check(config: ml_collections.ConfigDict, image_shape: tuple[int, int, int]) -> None:
  unknown = [d for d in config.decoders if d not in DECODERS]
  if unknown or not config.decoders:
    raise UserError(f'config.decoders={tuple(config.decoders)!r}: give one or more of {DECODERS}')
  if config.data.normalization != 'none':
    raise UserError(f"config.data.normalization={config.data.normalization!r}: super-resolution "
                    "works on images in [0, 1]; set it to 'none'")
  scale = config.scale
  if not (scale >= 2 and scale & (scale - 1) == 0) or image_shape[0] % scale or (
      image_shape[1] % scale):
    raise UserError(f'config.scale={scale}: must be a power of two >= 2 that divides the image '
                    f'size {image_shape[:2]} (config.data.image_size)')


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains and evaluates as `config` says; returns the final eval metrics."""
  for field in ('batch_size', 'eval_batch_size'):
    parallel.check_batch_size(config[field], field)
  mesh = parallel.make_mesh()
  info = input_pipeline.get_dataset_info(config.data)
  _check(config, info.image_shape)
  height, width, channels = info.image_shape
  input_shape = (height // config.scale, width // config.scale, channels)
  models = {name: build_model(config, name) for name in config.decoders}
  steps_per_epoch = max(1, info.num_train // config.batch_size)
  cadence = loop.Cadence.from_epochs(config, steps_per_epoch)
  tx = optim.make_optimizer(config.optim, cadence.total_steps, steps_per_epoch)

  def init(rng):
    return {name: create_train_state(model, tx, jax.random.fold_in(rng, i), input_shape)
            for i, (name, model) in enumerate(models.items())}

  states, abstract_states = init_on_mesh(init, jax.random.key(config.seed),
                                         parallel.replicated(mesh))
  checkpointer = Checkpointer(workdir, keep=config.keep_checkpoints,
                              best_metric=f'psnr_{config.decoders[0]}')
  states = loop.restore_latest(checkpointer, states, abstract_states)
  start_step = int(states[config.decoders[0]].step)
  loop.say(', '.join(f'sr_{name}: {loop.count_params(s.params):,} parameters'
                     for name, s in states.items()) +
           f'; x{config.scale} from {input_shape[:2]} to {(height, width)}; {info.num_train} '
           f'training and {info.num_eval} eval examples of {config.data.dataset}; '
           f'{cadence.total_steps} steps of {config.batch_size} on {jax.device_count()} device(s)')

  eval_fn = jax.jit(functools.partial(eval_step, scale=config.scale))
  show_fn = jax.jit(functools.partial(predict, scale=config.scale))
  writer = MetricWriter(workdir)

  def run_eval(states, step):
    metrics, first_images = evaluate(
        eval_fn, states, input_pipeline.make_eval_iterator(
            config.data, global_batch_size=config.eval_batch_size), mesh, config.scale)
    pictures = show_fn(states, jnp.asarray(first_images[:config.num_shown]))
    # One row per example: input, bicubic, each decoder, target (jit returns keys sorted).
    columns = ('input', 'bicubic', *config.decoders, 'target')
    grid = np.stack([np.asarray(pictures[name]) for name in columns], axis=1)
    writer.write_images(step, 'comparison', grid.reshape(-1, *grid.shape[2:]),
                        scale=max(1, 128 // height), columns=len(columns))
    return metrics

  states, eval_metrics = loop.train_loop(
      states, start_step=start_step, cadence=cadence,
      train_fn=jax.jit(functools.partial(train_step, scale=config.scale), donate_argnums=0),
      batches=input_pipeline.make_train_iterator(
          config.data, seed=config.seed, global_batch_size=config.batch_size,
          start_step=start_step),
      mesh=mesh, rng=jax.random.key(config.seed), evaluate=run_eval,
      checkpointer=checkpointer, writer=writer,
      learning_rate=optim.learning_rate_schedule(config.optim, cadence.total_steps,
                                                 steps_per_epoch))
  loop.say(f'Final eval on {eval_metrics["count"]} {config.data.eval_split} examples at step '
           f'{int(states[config.decoders[0]].step)}: ' + format_metrics(eval_metrics))
  checkpointer.close()
  writer.close()
  return eval_metrics


def main() -> None:
  cli.run(train_and_evaluate, description=__doc__)


if __name__ == '__main__':
  main()

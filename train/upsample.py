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

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from train.core import build, cli, validate
from train.core import images as image_lib
from train.core import step as step_lib
from train.core.errors import UserError
from train.core.state import TrainState, create_train_state
from train.core.task import Batch, Metrics, StepContext, Task, count_params
from train.data import photos as sr_data
from train.metrics import image_metrics

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


def train_step(states: States, batch: Batch, rng: jax.Array, *, scale: int,
               ctx: StepContext = StepContext()) -> tuple[States, Metrics]:
  """One optimizer step of every decoder's network on the same batch (mean absolute error)."""
  new_states, metrics = {}, {}
  for name, state in states.items():
    def grad_fn(params, micro_batch, rng, carry, state=state):
      del rng  # Nothing random: no dropout, and the degradation is fixed.
      targets = micro_batch['image']
      small = sr_data.low_resolution(targets, scale)
      loss, grads = jax.value_and_grad(lambda params: jnp.mean(jnp.abs(
          state.apply_fn({'params': params}, small, train=True).astype(jnp.float32) - targets)))(
              params)
      return grads, {f'loss_{name}': loss}, carry

    grads, losses, _ = step_lib.accumulate_gradients(grad_fn, state.params, batch, rng, ctx)
    new_states[name] = state.apply_gradients(grads=grads)
    metrics |= losses | {f'grad_norm_{name}': optax.tree.norm(grads)}
  return new_states, metrics


def eval_step(states: States, batch: Batch, *, scale: int) -> Metrics:
  """`image_metrics.comparison_sums` of the batch's pictures (see the module docstring)."""
  pictures = predict(states, batch['image'], scale=scale)
  return image_metrics.comparison_sums(pictures, batch['mask'], scale=scale)


def check_config(config: ml_collections.ConfigDict, image_shape: tuple[int, int, int]) -> None:
  """Raises UserError for fields this trainer cannot use, naming the fix."""
  unknown = [d for d in config.decoders if d not in DECODERS]
  if unknown or not config.decoders:
    raise UserError(f'config.decoders={tuple(config.decoders)!r}: give one or more of {DECODERS}')
  validate.require_unit_images(config, 'super-resolution works on images in [0, 1]')
  scale = config.scale
  if not (scale >= 2 and scale & (scale - 1) == 0) or image_shape[0] % scale or (
      image_shape[1] % scale):
    raise UserError(f'config.scale={scale}: must be a power of two >= 2 that divides the image '
                    f'size {image_shape[:2]} (config.data.image_size)')


class UpsampleTask(Task):
  """One network per decoder on the same batches; the best checkpoint has the highest PSNR of
  the first decoder."""
  name = 'upsample'
  best_mode = 'max'

  def __init__(self, config):
    super().__init__(config)
    self.best_metric = f'psnr_{config.decoders[0]}'

  def build(self, info, length, ctx) -> None:
    super().build(info, length, ctx)
    config = self.config
    check_config(config, info.image_shape)
    self.models = {name: build.super_resolution_model(config, name)
                   for name in config.decoders}
    self.tx, self.schedule = build.optimizer(config.optim, length)
    self.show_fn = jax.jit(functools.partial(predict, scale=config.scale))

  def init(self, rng: jax.Array) -> States:
    height, width, channels = self.info.image_shape
    small = (height // self.config.scale, width // self.config.scale, channels)
    return {name: create_train_state(model, self.tx, jax.random.fold_in(rng, i), small)
            for i, (name, model) in enumerate(self.models.items())}

  def describe(self, states: States) -> str:
    height, width, _ = self.info.image_shape
    return (', '.join(f'sr_{name}: {count_params(s):,} parameters' for name, s in states.items())
            + f'; x{self.config.scale} to {(height, width)}')

  def train_step(self, states, batch, rng):
    return train_step(states, batch, rng, scale=self.config.scale, ctx=self.ctx)

  def eval_step(self, states, batch, rng, *, final=False):
    del rng, final  # deterministic
    return eval_step(states, batch, scale=self.config.scale)

  def summarize(self, totals) -> dict[str, float]:
    return image_metrics.comparison_metrics(totals, self.info.image_shape, self.config.scale)

  def after_eval(self, states, step, images, rng, writer) -> dict[str, float]:
    pictures = self.show_fn(states, jnp.asarray(images[:self.config.num_shown]))
    # One row per example: input, bicubic, each decoder, target (jit returns keys sorted).
    columns = ('input', 'bicubic', *self.config.decoders, 'target')
    grid = np.stack([np.asarray(pictures[name]) for name in columns], axis=1)
    writer.write_images(step, 'comparison', grid.reshape(-1, *grid.shape[2:]),
                        scale=image_lib.legible_scale(self.info.image_shape, 128),
                        columns=len(columns))
    return {}


train_and_evaluate = cli.trainer(UpsampleTask)
main = functools.partial(cli.run, train_and_evaluate, description=__doc__)

if __name__ == '__main__':
  main()

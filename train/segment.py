"""Semantic segmentation: `python -m train.segment --config configs/<recipe>.py --workdir DIR`.

Trains a zoo segmentation model (`unet`, `fcn_resnet18`, …: per-pixel logits) with the per-pixel
cross entropy over labeled pixels (`data.ignore_label` counts nowhere), on the data of
train/segment_data.py. Each evaluation reports, over every pixel of the whole eval split:

- `mean_iou`, `iou_<class>` (TP / (TP + FP + FN) from the split's confusion matrix) and
  `pixel_accuracy`; `loss`, the mean cross entropy per labeled pixel;
- `checkerboard_db`: 10 log10 of the fraction of the predicted class-probability maps' energy
  at the period-2 frequencies (`image_metrics.lattice_energy`, energies summed over the split),
  where stride-2 upsampling leaves its artifacts; `checkerboard_db_truth` is the same for the
  one-hot ground truth, the natural level.

It writes `DIR/metrics.jsonl`, TensorBoard events, a PNG grid per evaluation (one row per
example: image, ground truth, prediction) and Orbax checkpoints; the best is the one with the
highest mean IoU. Running the same command again resumes. `python -m train.predict --workdir DIR
IMAGES --output OUT` writes the best checkpoint's masks and colour overlays.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax

from train.core import build, cli, optim
from train.core import step as step_lib
from train.core.errors import UserError
from train.core.run import run
from train.core.state import create_train_state
from train.core.task import Task
from train.data import segmentation as segment_data
from train.metrics import image_metrics
from train.metrics import segmentation as segment_metrics


def colorize(labels: np.ndarray, num_classes: int) -> np.ndarray:
  """Labels (..., H, W) -> RGB in [0, 1] (..., H, W, 3): class 0 black, the others spread over
  the hue circle; ignored or out-of-range pixels white."""
  hues = np.arange(1, num_classes) / max(num_classes - 1, 1)
  colors = np.stack([0.5 + 0.5 * np.cos(2 * np.pi * (hues + k / 3)) for k in range(3)], -1)
  palette = np.concatenate([np.zeros((1, 3)), colors, np.ones((1, 3))]).astype(np.float32)
  return palette[np.where((labels >= 0) & (labels < num_classes), labels, num_classes)]


class SegmentTask(Task):
  name = 'segment'
  best_metric = 'mean_iou'
  best_mode = 'max'
  pipeline = segment_data

  def build(self, info, length, ctx) -> None:
    super().build(info, length, ctx)
    config = self.config
    self.model = build.create_model(
        config.model, f'config.model={config.model!r} / config.model_kwargs',
        num_classes=info.num_classes, dtype=jnp.dtype(config.dtype),
        **config.model_kwargs.to_dict())
    weights = tuple(config.class_weights)
    if weights and (len(weights) != info.num_classes or min(weights) < 0 or max(weights) <= 0):
      raise UserError(f'config.class_weights={weights!r}: expected () or {info.num_classes} '
                      f'weights >= 0, not all 0, one per class ({", ".join(info.class_names)}).')
    self.class_weights = weights
    if hasattr(self.model, 'bn_axis_name'):
      self.model = self.model.clone(bn_axis_name=ctx.axis_name)
    self.schedule = optim.learning_rate_schedule(config.optim, length.total_steps,
                                                 length.steps_per_epoch)
    self.tx = optim.make_optimizer(config.optim, length.total_steps, length.steps_per_epoch)
    self.predict_fn = jax.jit(self.predict)

  def init(self, rng):
    return create_train_state(self.model, self.tx, rng, self.info.image_shape)

  def learning_rate(self, step):
    return self.schedule(step)

  def predict(self, state, images: jax.Array) -> jax.Array:
    """Logits (B, H, W, num_classes), float32."""
    return state.apply_fn({'params': state.params, 'batch_stats': state.batch_stats}, images,
                          train=False)

  def train_step(self, state, batch, rng):
    ignore = self.config.data.ignore_label
    # The loss is per labeled pixel (weighted by `config.class_weights`) of the whole global
    # batch. Each device's and micro-batch's share is scaled by the number of shares, which the
    # gradients' mean divides back, so jit, pmap and accumulation agree however unevenly the
    # ignored pixels fall.
    pixels = jnp.sum(segment_metrics.pixel_weights(batch['label'], self.info.num_classes, ignore,
                                                   self.class_weights))
    shares = self.ctx.grad_accum_steps
    if self.ctx.axis_name:
      pixels = jax.lax.psum(pixels, self.ctx.axis_name)
      shares *= jax.lax.axis_size(self.ctx.axis_name)

    def grad_fn(params, micro_batch, rng, batch_stats):
      def loss_fn(params):
        logits, updates = state.apply_fn(
            {'params': params, 'batch_stats': batch_stats}, micro_batch['image'], train=True,
            mutable=['batch_stats'], rngs={'dropout': step_lib.device_key(rng, self.ctx)})
        total, _ = segment_metrics.cross_entropy_sum(logits, micro_batch['label'],
                                                     ignore_label=ignore,
                                                     class_weights=self.class_weights)
        return total * shares / jnp.maximum(pixels, 1e-6), updates.get('batch_stats', {})

      (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
      return grads, {'loss': loss}, batch_stats

    grads, metrics, batch_stats = step_lib.accumulate_gradients(
        grad_fn, state.params, batch, rng, self.ctx, carry=state.batch_stats)
    state = state.apply_gradients(grads=grads, batch_stats=batch_stats)
    return state, metrics | {'grad_norm': optax.tree.norm(grads)}

  def eval_step(self, state, batch, rng, *, final=False):
    del rng, final  # deterministic
    logits = self.predict(state, batch['image'])
    labels, mask = batch['label'], batch['mask']
    num_classes, ignore = self.info.num_classes, self.config.data.ignore_label
    loss, pixels = segment_metrics.cross_entropy_sum(logits, labels, ignore_label=ignore,
                                                     example_mask=mask)
    valid = segment_metrics.valid_pixels(labels, num_classes, ignore)[..., None]
    weights = mask.astype(jnp.float32)
    sums = {'loss': loss, 'pixels': pixels, 'count': jnp.sum(weights),
            'confusion': segment_metrics.confusion_matrix(
                jnp.argmax(logits, -1), labels, num_classes=num_classes, ignore_label=ignore,
                example_mask=mask)}
    for name, maps in (('', jax.nn.softmax(logits)),
                       ('_truth', jax.nn.one_hot(labels, num_classes) * valid)):
      on_lattice, total = image_metrics.lattice_energy(maps, period=2)
      sums[f'lattice_energy{name}'] = jnp.sum(on_lattice * weights)
      sums[f'energy{name}'] = jnp.sum(total * weights)
    return sums

  def summarize(self, totals):
    decibels = lambda ratio: float(10 * math.log10(max(ratio, 1e-20)))
    return segment_metrics.summarize(totals['confusion'], self.info.class_names) | {
        'loss': float(totals['loss'] / max(totals['pixels'], 1)),
        'checkerboard_db': decibels(totals['lattice_energy'] / max(totals['energy'], 1e-20)),
        'checkerboard_db_truth': decibels(
            totals['lattice_energy_truth'] / max(totals['energy_truth'], 1e-20))}

  def after_eval(self, state, step, images, rng, writer):
    del images, rng  # the grid needs the labels too: read the first eval batch again
    batch = next(segment_data.make_eval_iterator(self.config.data,
                                                 global_batch_size=self.config.eval_batch_size))
    shown = batch['mask'].nonzero()[0][:self.config.num_shown]
    predictions = np.asarray(jnp.argmax(self.predict_fn(state, batch['image'][shown]), -1))
    num_classes = self.info.num_classes
    rows = np.stack([segment_data.displayable(self.config.data, batch['image'][shown]),
                     colorize(batch['label'][shown], num_classes),
                     colorize(predictions, num_classes)], axis=1)
    writer.write_images(step, 'segmentation', rows.reshape(-1, *rows.shape[2:]),
                        scale=max(1, 128 // self.info.image_shape[0]), columns=3)
    return {}

  def final_report(self, metrics):
    return ' | '.join(f'{name} {metrics[name]:.4f}' for name in (
        'mean_iou', 'pixel_accuracy', 'loss', 'checkerboard_db', 'checkerboard_db_truth'))


def train_and_evaluate(config, workdir: str, **kwargs) -> dict[str, float]:
  """Trains and evaluates as `config` says; returns the final eval metrics (see `run`)."""
  return run(SegmentTask(config), config, workdir, **kwargs)


main = functools.partial(cli.run, train_and_evaluate, description=__doc__)

if __name__ == '__main__':
  main()

"""Image classification: `python -m train.classify --config configs/<recipe>.py --workdir DIR`.

Trains a `zoo` classifier data-parallel over every device, evaluates loss, top-1 and top-5 on the
whole eval split, writes `DIR/metrics.jsonl` and TensorBoard events, and keeps Orbax checkpoints
in `DIR/checkpoints`. Running the same command again resumes from the latest checkpoint.
"""

import functools
from typing import Any

import jax
import jax.numpy as jnp
import optax

from train.core import build, cli, trained, transfer
from train.core import step as step_lib
from train.core.errors import UserError
from train.core.loop import say
from train.core.losses import cross_entropy
from train.core.state import TrainState, create_train_state
from train.core.task import Batch, Length, Metrics, StepContext, Task, count_params


def train_step(state: TrainState, batch: Batch, rng: jax.Array, *, label_smoothing: float,
               ctx: StepContext = StepContext(), freeze_batch_stats: bool = False
               ) -> tuple[TrainState, Metrics]:
  """One optimizer step on a batch; dropout draws from `rng` (per device under pmap).

  `freeze_batch_stats` keeps the BatchNorm running statistics as they were (a frozen backbone).
  """
  def grad_fn(params, micro_batch, rng, batch_stats):
    def loss_fn(params):
      logits, updates = state.apply_fn(
          {'params': params, 'batch_stats': batch_stats}, micro_batch['image'], train=True,
          mutable=['batch_stats'], rngs={'dropout': rng})
      loss = cross_entropy(logits, micro_batch['label'], label_smoothing).mean()
      hits = jnp.mean(jnp.argmax(logits, -1) == micro_batch['label'])
      return loss, (hits, updates.get('batch_stats', {}))

    (loss, (hits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    return grads, {'loss': loss, 'accuracy': hits}, batch_stats

  grads, metrics, batch_stats = step_lib.accumulate_gradients(
      grad_fn, state.params, batch, step_lib.device_key(rng, ctx), ctx, state.batch_stats)
  if freeze_batch_stats:
    batch_stats = state.batch_stats
  state = state.apply_gradients(grads=grads, batch_stats=batch_stats)
  return state, metrics | {'grad_norm': optax.tree.norm(grads),
                           'param_norm': optax.tree.norm(state.params)}


def eval_step(state: TrainState, batch: Batch) -> Metrics:
  """Sums of loss and top-1/top-5 hits over the real (mask=1) examples of a padded batch."""
  logits = state.apply_fn({'params': state.params, 'batch_stats': state.batch_stats},
                          batch['image'], train=False)
  mask = batch['mask'].astype(jnp.float32)
  labels = batch['label']
  top_k = jax.lax.top_k(logits, min(5, logits.shape[-1]))[1]
  return {
      'loss': jnp.sum(cross_entropy(logits, labels, 0.0) * mask),
      'accuracy': jnp.sum((top_k[:, 0] == labels) * mask),
      'top5_accuracy': jnp.sum(jnp.any(top_k == labels[:, None], axis=-1) * mask),
      'count': jnp.sum(mask),
  }


class ClassifyTask(Task):
  """Cross entropy on labelled images; the best checkpoint has the highest eval accuracy."""
  name = 'classify'
  best_metric = 'accuracy'
  eval_metrics = ('loss', 'accuracy', 'top5_accuracy')
  best_mode = 'max'

  def __init__(self, config):
    source_dir, pretrained = config.transfer.init_from, config.transfer.pretrained
    if source_dir and pretrained:
      raise UserError(f'config.transfer: init_from={source_dir!r} and pretrained={pretrained!r} '
                      'both set; start from one of them.')
    # Pretrained weights (or a run started from them) decide how the input is preprocessed,
    # which the data pipeline needs before `build`: the file is read once, here, and its
    # variables kept for `warm_start`.
    self._pretrained_variables, self._input_report = None, ''
    if pretrained:
      weights = transfer.load_pretrained(pretrained)
      self._pretrained_variables = weights.variables
      config, self._input_report = transfer.follow_pretrained_input(config, weights.config)
    elif source_dir:
      config, self._input_report = transfer.follow_source_input(config, source_dir)
    super().__init__(config)

  def build(self, info, length: Length, ctx: StepContext) -> None:
    super().build(info, length, ctx)
    config = self.config
    if self._input_report:
      say(self._input_report)
    if info.num_classes < 2:
      raise UserError(f'data.dataset={config.data.dataset!r} has {info.num_classes} class '
                      f'({", ".join(info.class_names)}); a classifier needs at least two: add '
                      'images of the other classes (a folder of images per class).')
    self.model = build.classifier(config, info.num_classes, bn_axis_name=ctx.axis_name)
    self.tx, self.schedule = build.optimizer(config.optim, length,
                                             head_only=config.transfer.freeze_backbone)

  def init(self, rng: jax.Array) -> TrainState:
    return create_train_state(self.model, self.tx, rng, self.info.image_shape)

  def warm_start(self, state: TrainState) -> TrainState:
    source_dir = self.config.transfer.init_from
    if source_dir:
      source = trained.load_classifier(source_dir)
      variables, origin = source.variables, f'{source_dir} (step {source.step})'
    elif self._pretrained_variables:
      variables, origin = self._pretrained_variables, self.config.transfer.pretrained
      self._pretrained_variables = None  # copied into the state; not needed any more
    else:
      return state
    state, report = transfer.initialize(state, variables, origin)
    say(report)
    return state

  def describe(self, state: TrainState) -> str:
    return f'{self.config.model}: {count_params(state):,} parameters'

  def train_step(self, state: TrainState, batch: Batch, rng: jax.Array) -> tuple[Any, Metrics]:
    return train_step(state, batch, rng, label_smoothing=self.config.label_smoothing,
                      ctx=self.ctx, freeze_batch_stats=self.config.transfer.freeze_backbone)

  def eval_step(self, state: TrainState, batch: Batch, rng: jax.Array, *,
                final: bool = False) -> Metrics:
    del rng, final  # deterministic, and cheap enough every time
    return eval_step(state, batch)


train_and_evaluate = cli.trainer(ClassifyTask)
main = functools.partial(cli.run, train_and_evaluate, description=__doc__)

if __name__ == '__main__':
  main()

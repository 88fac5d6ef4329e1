"""Image classification: `python -m train.classify --config configs/<recipe>.py --workdir DIR`.

Trains a `zoo` classifier data-parallel over every device, evaluates loss, top-1 and top-5 on the
whole eval split, writes `DIR/metrics.jsonl` and TensorBoard events, and keeps Orbax checkpoints
in `DIR/checkpoints`. Running the same command again resumes from the latest checkpoint.
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
from train import cli, input_pipeline, optim, parallel
from train.checkpoint import Checkpointer
from train.early_stopping import EarlyStopping
from train.errors import UserError
from train.metric_writer import MetricWriter
from train.progress import Progress
from train.state import TrainState, create_train_state, init_on_mesh

EVAL_METRICS = ('loss', 'accuracy', 'top5_accuracy')


def cross_entropy(logits: jax.Array, labels: jax.Array, label_smoothing: float) -> jax.Array:
  """Per-example cross entropy against one-hot labels smoothed by `label_smoothing`."""
  targets = optax.smooth_labels(jax.nn.one_hot(labels, logits.shape[-1]), label_smoothing)
  return optax.softmax_cross_entropy(logits.astype(jnp.float32), targets)


def train_step(state: TrainState, batch: dict[str, jax.Array], rng: jax.Array, *,
               label_smoothing: float) -> tuple[TrainState, dict[str, jax.Array]]:
  """One optimizer step on a batch; dropout draws from `rng` folded with the step."""
  dropout_rng = jax.random.fold_in(rng, state.step)

  def loss_fn(params):
    logits, updates = state.apply_fn(
        {'params': params, 'batch_stats': state.batch_stats}, batch['image'], train=True,
        mutable=['batch_stats'], rngs={'dropout': dropout_rng})
    loss = cross_entropy(logits, batch['label'], label_smoothing).mean()
    return loss, (logits, updates)

  (loss, (logits, updates)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  state = state.apply_gradients(grads=grads, batch_stats=updates.get('batch_stats', {}))
  metrics = {
      'loss': loss,
      'accuracy': jnp.mean(jnp.argmax(logits, -1) == batch['label']),
      'grad_norm': optax.global_norm(grads),
      'param_norm': optax.global_norm(state.params),
  }
  return state, metrics


def eval_step(state: TrainState, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
  """Sums of loss and top-1/top-5 hits over the real (mask=1) examples of a padded batch."""
  logits = state.apply_fn({'params': state.params, 'batch_stats': state.batch_stats},
                          batch['image'], train=False)
  mask = batch['mask'].astype(jnp.float32)
  labels = batch['label']
  k = min(5, logits.shape[-1])
  top_k = jax.lax.top_k(logits, k)[1]
  return {
      'loss': jnp.sum(cross_entropy(logits, labels, 0.0) * mask),
      'accuracy': jnp.sum((top_k[:, 0] == labels) * mask),
      'top5_accuracy': jnp.sum(jnp.any(top_k == labels[:, None], axis=-1) * mask),
      'count': jnp.sum(mask),
  }


def evaluate(eval_fn, state: TrainState, batches: Iterable[dict[str, np.ndarray]],
             mesh: jax.sharding.Mesh) -> dict[str, float]:
  """Mean eval metrics over every example of the eval split (padding excluded)."""
  totals = None
  for batch in batches:
    sums = eval_fn(state, parallel.shard_batch(batch, mesh))
    totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
  totals = parallel.to_host(totals)
  count = totals.pop('count')
  return {name: float(total / count) for name, total in totals.items()} | {'count': int(count)}


def build_model(config: ml_collections.ConfigDict, num_classes: int):
  """The `zoo` model the config names, for `num_classes`, computing in `config.dtype`."""
  try:
    return zoo.create_model(config.model, num_classes=num_classes,
                            dtype=jnp.dtype(config.dtype), **config.model_kwargs.to_dict())
  except (ValueError, TypeError) as e:
    raise UserError(f'config.model={config.model!r}: {e}') from None


def _steps(epochs: float, steps_per_epoch: int) -> int:
  return max(1, round(epochs * steps_per_epoch))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains and evaluates as `config` says; returns the final eval metrics."""
  for field in ('batch_size', 'eval_batch_size'):
    parallel.check_batch_size(config[field], field)
  mesh = parallel.make_mesh()
  info = input_pipeline.get_dataset_info(config.data)
  model = build_model(config, info.num_classes)
  steps_per_epoch = max(1, info.num_train // config.batch_size)
  total_steps = _steps(config.num_epochs, steps_per_epoch)
  eval_every = _steps(config.eval_every_epochs, steps_per_epoch)
  checkpoint_every = _steps(config.checkpoint_every_epochs, steps_per_epoch)
  tx = optim.make_optimizer(config.optim, total_steps, steps_per_epoch)
  init_rng, dropout_rng = jax.random.split(jax.random.key(config.seed))
  state, abstract_state = init_on_mesh(
      functools.partial(create_train_state, model, tx, input_shape=info.image_shape),
      init_rng, parallel.replicated(mesh))

  checkpointer = Checkpointer(workdir, keep=config.keep_checkpoints, best_metric='accuracy')
  if checkpointer.latest_step() is not None:
    state = checkpointer.restore(abstract_state)
    _say(f'Resuming from the checkpoint at step {int(state.step)} in {checkpointer.directory}')
  start_step = int(state.step)

  _say(f'{config.model}: {_count(state.params):,} parameters; {info.num_train} training and '
       f'{info.num_eval} eval examples of {config.data.dataset} {info.image_shape}; '
       f'{total_steps} steps of {config.batch_size} on {jax.device_count()} device(s)')
  train_fn = jax.jit(functools.partial(train_step, label_smoothing=config.label_smoothing),
                     donate_argnums=0)
  eval_fn = jax.jit(eval_step)
  eval_batches = lambda: input_pipeline.make_eval_iterator(  # pylint: disable=g-long-lambda
      config.data, global_batch_size=config.eval_batch_size)
  train_batches = input_pipeline.make_train_iterator(
      config.data, seed=config.seed, global_batch_size=config.batch_size, start_step=start_step)

  writer = MetricWriter(workdir)
  progress = Progress(total_steps, start_step)
  stopper = EarlyStopping(config.early_stopping.patience, config.early_stopping.mode,
                          config.early_stopping.min_delta)
  schedule = optim.learning_rate_schedule(config.optim, total_steps, steps_per_epoch)
  eval_metrics, step_metrics = None, []
  for step in range(start_step + 1, total_steps + 1):
    state, metrics = train_fn(state, parallel.shard_batch(next(train_batches), mesh), dropout_rng)
    step_metrics.append(metrics)
    if step % config.log_every_steps == 0 or step == total_steps:
      means = _mean_on_host(step_metrics)
      step_metrics = []
      if not math.isfinite(means['loss']):
        checkpointer.wait()
        raise UserError(f'the training loss is {means["loss"]} at step {step}; lower '
                        f'--config.optim.learning_rate or set --config.optim.grad_clip_norm. '
                        f'Checkpoints up to step {checkpointer.latest_step()} are intact.')
      means['learning_rate'] = float(schedule(step - 1))
      means['steps_per_second'] = progress.report(step, means)
      writer.write_scalars(step, 'train', means)
    if step % eval_every == 0 or step == total_steps:
      eval_metrics = evaluate(eval_fn, state, eval_batches(), mesh)
      writer.write_scalars(step, 'eval', eval_metrics)
      _say(f'eval at step {step}: ' + _format(eval_metrics))
      checkpointer.save(step, state, metrics=eval_metrics)
      progress.restart_clock(step)
      if stopper.update(step, eval_metrics[config.early_stopping.metric]):
        _say(f'Early stopping at step {step}: {config.early_stopping.metric} has not improved '
             f'for {stopper.patience} evaluations (best {stopper.best:.4f} at step '
             f'{stopper.best_step}).')
        break
    elif step % checkpoint_every == 0:
      checkpointer.save(step, state)

  if eval_metrics is None:  # resumed a finished run: evaluate what was restored
    eval_metrics = evaluate(eval_fn, state, eval_batches(), mesh)
  final_step = int(state.step)
  checkpointer.save(final_step, state, metrics=eval_metrics)
  checkpointer.wait()
  _say(f'Final eval on {eval_metrics["count"]} {config.data.eval_split} examples at step '
       f'{final_step}: ' + _format(eval_metrics) +
       f' (best accuracy checkpoint: step {checkpointer.best_step()})')
  checkpointer.close()
  writer.close()
  return eval_metrics


def _mean_on_host(step_metrics: list[dict[str, jax.Array]]) -> dict[str, float]:
  stacked = parallel.to_host(jax.tree.map(lambda *xs: jnp.stack(xs), *step_metrics))
  return {name: float(np.mean(values)) for name, values in stacked.items()}


def _count(params) -> int:
  return sum(x.size for x in jax.tree.leaves(params))


def _format(metrics: dict[str, float]) -> str:
  return ' | '.join(f'{name} {metrics[name]:.4f}' for name in EVAL_METRICS)


def _say(message: str) -> None:
  if jax.process_index() == 0:
    print(message, flush=True)


def main() -> None:
  cli.run(train_and_evaluate, description=__doc__)


if __name__ == '__main__':
  main()

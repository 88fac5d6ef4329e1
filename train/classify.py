"""Image classification: `python -m train.classify --config configs/<recipe>.py --workdir DIR`.

Trains a `zoo` classifier data-parallel over every device, evaluates loss, top-1 and top-5 on the
whole eval split, writes `DIR/metrics.jsonl` and TensorBoard events, and keeps Orbax checkpoints
in `DIR/checkpoints`. Running the same command again resumes from the latest checkpoint.
"""

import functools
from typing import Any, Iterable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from train import cli, input_pipeline, loop, optim, parallel, trained, transfer
from train.checkpoint import Checkpointer
from train.early_stopping import EarlyStopping
from train.metric_writer import MetricWriter
from train.progress import format_metrics
from train.state import TrainState, create_train_state, init_on_mesh
# Lives in train.trained, which rebuilds finished runs and which this module uses; kept here
# under its old name.
from train.trained import build_model


def cross_entropy(logits: jax.Array, labels: jax.Array, label_smoothing: float) -> jax.Array:
  """Per-example cross entropy against one-hot labels smoothed by `label_smoothing`."""
  targets = optax.smooth_labels(jax.nn.one_hot(labels, logits.shape[-1]), label_smoothing)
  return optax.softmax_cross_entropy(logits.astype(jnp.float32), targets)


def _micro_batches(batch: dict[str, jax.Array], count: int) -> dict[str, jax.Array]:
  """(B, ...) -> (count, B // count, ...); micro-batch i holds examples i, i + count, ...

  Strided rather than contiguous, so each micro-batch draws from every device's shard.
  """
  return jax.tree.map(
      lambda x: x.reshape(x.shape[0] // count, count, *x.shape[1:]).swapaxes(0, 1), batch)


def train_step(state: TrainState, batch: dict[str, jax.Array], rng: jax.Array, *,
               label_smoothing: float, grad_accum_steps: int = 1,
               axis_name: str | None = None) -> tuple[TrainState, dict[str, jax.Array]]:
  """One optimizer step on a batch; dropout draws from `rng` folded with the step.

  With `grad_accum_steps=k` the batch is processed as k micro-batches whose gradients are
  averaged: the update equals the whole batch's (BatchNorm sees each micro-batch's statistics),
  in the memory of one micro-batch. Under `jax.pmap`, `axis_name` names the device axis that
  gradients and metrics are averaged over.
  """
  dropout_rng = jax.random.fold_in(rng, state.step)
  if axis_name:
    dropout_rng = jax.random.fold_in(dropout_rng, jax.lax.axis_index(axis_name))

  def loss_fn(params, batch_stats, micro_batch, index):
    logits, updates = state.apply_fn(
        {'params': params, 'batch_stats': batch_stats}, micro_batch['image'], train=True,
        mutable=['batch_stats'], rngs={'dropout': jax.random.fold_in(dropout_rng, index)})
    loss = cross_entropy(logits, micro_batch['label'], label_smoothing).mean()
    hits = jnp.mean(jnp.argmax(logits, -1) == micro_batch['label'])
    return loss, (hits, updates.get('batch_stats', {}))

  def accumulate(carry, micro):
    grads_sum, loss_sum, hits_sum, batch_stats = carry
    index, micro_batch = micro
    (loss, (hits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params, batch_stats, micro_batch, index)
    grads_sum = jax.tree.map(jnp.add, grads_sum, grads)
    return (grads_sum, loss_sum + loss, hits_sum + hits, batch_stats), None

  zeros = jax.tree.map(jnp.zeros_like, state.params)
  carry = (zeros, jnp.zeros(()), jnp.zeros(()), state.batch_stats)
  if grad_accum_steps == 1:  # on XLA:CPU a loop body runs several times slower than flat code
    (grads, loss, hits, batch_stats), _ = accumulate(carry, (0, batch))
  else:
    micro = (jnp.arange(grad_accum_steps), _micro_batches(batch, grad_accum_steps))
    (grads, loss, hits, batch_stats), _ = jax.lax.scan(accumulate, carry, micro)
    grads, loss, hits = jax.tree.map(lambda x: x / grad_accum_steps, (grads, loss, hits))
  if axis_name:
    grads, loss, hits = jax.lax.pmean((grads, loss, hits), axis_name)
  state = state.apply_gradients(grads=grads, batch_stats=batch_stats)
  metrics = {
      'loss': loss,
      'accuracy': hits,
      'grad_norm': optax.tree.norm(grads),
      'param_norm': optax.tree.norm(state.params),
  }
  return state, metrics


def eval_step(state: TrainState, batch: dict[str, jax.Array], *,
              axis_name: str | None = None) -> dict[str, jax.Array]:
  """Sums of loss and top-1/top-5 hits over the real (mask=1) examples of a padded batch."""
  logits = state.apply_fn({'params': state.params, 'batch_stats': state.batch_stats},
                          batch['image'], train=False)
  mask = batch['mask'].astype(jnp.float32)
  labels = batch['label']
  k = min(5, logits.shape[-1])
  top_k = jax.lax.top_k(logits, k)[1]
  sums = {
      'loss': jnp.sum(cross_entropy(logits, labels, 0.0) * mask),
      'accuracy': jnp.sum((top_k[:, 0] == labels) * mask),
      'top5_accuracy': jnp.sum(jnp.any(top_k == labels[:, None], axis=-1) * mask),
      'count': jnp.sum(mask),
  }
  return jax.lax.psum(sums, axis_name) if axis_name else sums


def evaluate(eval_fn, state: TrainState, batches: Iterable[dict[str, np.ndarray]],
             parallelism: parallel.JitParallelism | parallel.PmapParallelism) -> dict[str, float]:
  """Mean eval metrics over every example of the eval split (padding excluded)."""
  totals = None
  for batch in batches:
    sums = eval_fn(state, parallelism.shard_batch(batch))
    totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
  totals = parallelism.get_output(totals)
  count = totals.pop('count')
  return {name: float(total / count) for name, total in totals.items()} | {'count': int(count)}


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains and evaluates as `config` says; returns the final eval metrics."""
  parallel.check_batch_size(config.batch_size, 'batch_size', config.grad_accum_steps)
  parallel.check_batch_size(config.eval_batch_size, 'eval_batch_size')
  mesh = parallel.make_mesh()
  parallelism = parallel.make_parallelism(config.parallelism, mesh)
  info = input_pipeline.get_dataset_info(config.data)
  model = build_model(config, info.num_classes, bn_axis_name=parallelism.axis_name)
  steps_per_epoch = max(1, info.num_train // config.batch_size)
  cadence = loop.Cadence.from_epochs(config, steps_per_epoch)
  tx = transfer.make_optimizer(config, cadence.total_steps, steps_per_epoch)
  init_rng, dropout_rng = jax.random.split(jax.random.key(config.seed))
  state, abstract_state = init_on_mesh(
      functools.partial(create_train_state, model, tx, input_shape=info.image_shape),
      init_rng, parallel.replicated(mesh))
  checkpointer = Checkpointer(workdir, keep=config.keep_checkpoints, best_metric='accuracy')
  trained.save_config(config, workdir)
  if config.transfer.init_from and checkpointer.latest_step() is None:
    source = trained.load_classifier(config.transfer.init_from, mesh)
    state, report = transfer.initialize(
        state, source.variables, f'{config.transfer.init_from} (step {source.step})')
    loop.say(report)
  state = loop.restore_latest(checkpointer, state, abstract_state)
  start_step = int(state.step)
  loop.say(f'{config.model}: {loop.count_params(state.params):,} parameters; '
           f'{info.num_train} training and {info.num_eval} eval examples of '
           f'{config.data.dataset} {info.image_shape}; {cadence.total_steps} steps of '
           f'{config.batch_size} on {jax.device_count()} device(s) with {config.parallelism}')

  axis_name = parallelism.axis_name
  step_fn = functools.partial(train_step, label_smoothing=config.label_smoothing,
                              grad_accum_steps=config.grad_accum_steps, axis_name=axis_name)
  if config.transfer.freeze_backbone:
    step_fn = transfer.keep_batch_stats(step_fn)
  train_fn = parallelism.compile(step_fn, donate_state=True, with_rng=True)
  eval_fn = parallelism.compile(functools.partial(eval_step, axis_name=axis_name))
  run_eval = lambda state, step: evaluate(  # pylint: disable=g-long-lambda
      eval_fn, state, input_pipeline.make_eval_iterator(
          config.data, global_batch_size=config.eval_batch_size), parallelism)
  writer = MetricWriter(workdir)
  state, eval_metrics = loop.train_loop(
      parallelism.put_state(state), start_step=start_step, cadence=cadence, train_fn=train_fn,
      batches=input_pipeline.make_train_iterator(
          config.data, seed=config.seed, global_batch_size=config.batch_size,
          start_step=start_step),
      mesh=mesh, rng=dropout_rng, evaluate=run_eval, checkpointer=checkpointer, writer=writer,
      learning_rate=optim.learning_rate_schedule(config.optim, cadence.total_steps,
                                                 steps_per_epoch),
      stopper=EarlyStopping(**config.early_stopping.to_dict()), parallelism=parallelism)
  loop.say(f'Final eval on {eval_metrics["count"]} {config.data.eval_split} examples at step '
           f'{checkpointer.latest_step()}: ' + format_metrics(eval_metrics) +
           f' (best accuracy checkpoint: step {checkpointer.best_step()})')
  checkpointer.close()
  writer.close()
  return eval_metrics


def main() -> None:
  cli.run(train_and_evaluate, description=__doc__)


if __name__ == '__main__':
  main()

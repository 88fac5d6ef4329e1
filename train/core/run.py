"""`run(task, config, workdir)`: the one driver every entry point shares.

The task says what to compute (`train.core.task.Task`); `run` owns the rest: the device mesh, jit
or pmap (`config.parallelism`), gradient accumulation (`config.grad_accum_steps`, through the
task's use of `step.accumulate_gradients`), the computation dtype (`config.dtype`, read by the
task's models), the training data's fixed shards (`config.data.shards`), checkpoints and resume,
metrics.jsonl and TensorBoard, early stopping, JAX's persistent compilation cache
(`config.compilation_cache`), a profiler trace of `config.profile_steps`, the final report, and
closing every resource in `finally`. With `config.data.validation_split` set, evaluations during
training (and so the best checkpoint, early stopping and tuning) use the validation split, and the
eval (test) split is evaluated once at the end, with the best checkpoint: the one a user of the
run gets. In metrics.jsonl the evaluations during training have split 'validation' ('eval'
without a validation split, when they are on the eval split) and that final one 'test'. Callers
observe each evaluation through `hooks` (hyperparameter tuning reports intermediate values there;
a hook may raise, e.g. `optuna.TrialPruned`, to stop the run).
"""

import dataclasses
from typing import Any, Callable, Iterable, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from train.core import (
  compat,
  compilation_cache,
  interrupt,
  loop,
  parallel,
  profiling,
  trained,
  validate,
)
from train.core import workdir as workdir_lib
from train.core.checkpoint import Checkpointer
from train.core.early_stopping import EarlyStopping
from train.core.task import Length, StepContext, Task, state_step
from train.core.writer import MetricWriter

# hook(step, eval_metrics), called after every evaluation has been written and saved.
EvalHook = Callable[[int, dict[str, float]], None]


@dataclasses.dataclass(frozen=True)
class Streams:
  """The run's independent random streams, each derived once from `config.seed`."""
  init: jax.Array  # the initial state
  train: jax.Array  # folded with the step: dropout, noise, binarization
  eval: jax.Array  # folded with the eval batch index: the same at every evaluation
  images: jax.Array  # grids and samples written after evaluations

  @classmethod
  def from_seed(cls, seed: int) -> 'Streams':
    root = jax.random.key(seed)
    init, train = jax.random.split(root)
    return cls(init, train, jax.random.fold_in(root, 2), jax.random.fold_in(root, 3))


def check_batch_sizes(config: ml_collections.ConfigDict) -> None:
  parallel.check_batch_size(config.batch_size, 'batch_size', config.grad_accum_steps)
  parallel.check_batch_size(config.eval_batch_size, 'eval_batch_size')


def run(task: Task, config: ml_collections.ConfigDict, workdir: str, *,
        hooks: Sequence[EvalHook] = ()) -> dict[str, float]:
  """Trains `task` as `config` says, resuming from `workdir`; returns the final eval metrics.

  Nothing is written to `workdir` until the config has been checked, the workdir locked for
  this run (`train.core.workdir`) and its checkpoints found to fit the config
  (`train.core.compat`). With a validation split the metrics returned are the last evaluation's
  on it, plus the best checkpoint's on the eval split, each prefixed 'test_' (and 'test_step',
  the step of that checkpoint).
  """
  validate.check_config(config, task.eval_metrics)
  check_batch_sizes(config)
  workdir_lib.check_usable(workdir)
  compilation_cache.enable(config.get('compilation_cache', True))
  with workdir_lib.hold(workdir), interrupt.catch_stop_signals() as signals:
    return _run(task, config, workdir, hooks, signals)


def _run(task: Task, config: ml_collections.ConfigDict, workdir: str,
         hooks: Sequence[EvalHook], signals: interrupt.SignalFlag) -> dict[str, float]:
  mesh = parallel.make_mesh()
  parallelism = parallel.make_parallelism(config.parallelism, mesh)
  info = task.pipeline.get_dataset_info(config.data)
  validation = task.pipeline.validation_split(config.data)
  selection_split = validation or config.data.eval_split
  steps_per_epoch = max(1, info.num_train // config.batch_size)
  cadence = loop.Cadence.from_config(config, steps_per_epoch)
  profile_steps = profiling.check_steps(config.get('profile_steps', ()), cadence.total_steps)
  ctx = StepContext(axis_name=parallelism.axis_name, grad_accum_steps=config.grad_accum_steps)
  task.build(info, Length(cadence.total_steps, steps_per_epoch), ctx)
  streams = Streams.from_seed(config.seed)
  init = jax.jit(task.init, out_shardings=parallel.replicated(mesh))
  # Traced once: for the abstract state here, and when called to build a fresh one.
  abstract_state = validate.abstract_model_state(lambda: init.eval_shape(streams.init), config)
  checkpointer = Checkpointer(workdir, keep=config.keep_checkpoints,
                              best_metric=task.best_metric, best_mode=task.best_mode)
  writer = None
  try:
    compat.check_fits(checkpointer.saved_tree(), abstract_state, trained.saved_config(workdir),
                      config, workdir)
    stopper = EarlyStopping(**config.early_stopping.to_dict())
    restored = loop.restore_latest(checkpointer, abstract_state)
    if restored is None:
      state = task.warm_start(init(streams.init))
    else:
      state = restored.state
      stopper.load_state_dict(restored.progress.get('early_stopping', {}))
    start_step = int(state_step(state))
    held_out = (f'{info.num_validation} validation ({validation}) and ' if validation else '')
    loop.say(f'{task.describe(state)}; {info.num_train} training, {held_out}{info.num_eval} '
             f'eval examples of {config.data.dataset} {info.image_shape}; {cadence.total_steps} '
             f'steps of {config.batch_size} on {jax.device_count()} device(s) with '
             f'{config.parallelism}')
    train_fn = parallelism.compile(_train_step(task, ctx), donate_state=True, with_rng=True)
    # Compiled on first use; the final evaluation's step only if it differs (Task.eval_step).
    eval_fns = {final: parallelism.compile(_eval_step(task, ctx, final), with_rng=True)
                for final in {False, task.final_eval_differs}}

    def evaluate_on(split: str, state: Any, final: bool) -> tuple[dict[str, float], np.ndarray]:
      batches = task.pipeline.make_eval_iterator(
          config.data, global_batch_size=config.eval_batch_size, split=split)
      return evaluate_split(task, eval_fns[final and task.final_eval_differs], state, batches,
                            parallelism, streams.eval)

    if config.early_stopping.patience and not task.eval_metrics:
      # Checked on one batch now rather than at the first evaluation, after training.
      batch = next(iter(task.pipeline.make_eval_iterator(
          config.data, global_batch_size=config.eval_batch_size, split=selection_split)))
      names, _ = evaluate_split(task, eval_fns[False], parallelism.put_state(state), [batch],
                                parallelism, streams.eval)
      names.pop('count')
      validate.check_stopping_metric(config.early_stopping, [*names, *task.after_eval_metrics])
    # The config passed every check: the run's first writes.
    trained.save_config(config, workdir)
    writer = MetricWriter(workdir, start_step)

    def evaluate(state: Any, step: int) -> dict[str, float]:
      metrics, images = evaluate_on(selection_split, state, step >= cadence.total_steps)
      return metrics | task.after_eval(parallelism.get_state(state), step, images,
                                       streams.images, writer)

    state, metrics = loop.train_loop(
        parallelism.put_state(state), start_step=start_step, cadence=cadence,
        train_fn=train_fn, batches=task.pipeline.make_train_iterator(
            config.data, seed=config.seed, global_batch_size=config.batch_size,
            start_step=start_step),
        mesh=mesh, rng=streams.train, evaluate=evaluate, checkpointer=checkpointer,
        writer=writer, learning_rate=task.learning_rate, stopper=stopper,
        parallelism=parallelism, hooks=hooks, on_log=task.after_log, signals=signals,
        profiler=profiling.StepProfiler(profile_steps, workdir, start_step),
        eval_label='validation' if validation else 'eval')
    loop.say(f'Final eval on {metrics["count"]} {selection_split} examples at step '
             f'{checkpointer.latest_step()}: {task.final_report(metrics)} (best '
             f'{task.best_metric} checkpoint: step {checkpointer.best_step()})')
    if not validation:
      return metrics
    # The test split, once: the best checkpoint by the validation split.
    best_step = checkpointer.best_step()
    best = parallelism.put_state(checkpointer.restore(abstract_state, step=best_step).state)
    test_metrics, _ = evaluate_on(config.data.eval_split, best, final=True)
    writer.write_scalars(best_step, 'test', test_metrics)
    loop.say(f'Test on {test_metrics["count"]} {config.data.eval_split} examples with the best '
             f'{selection_split} {task.best_metric} checkpoint (step {best_step}): '
             f'{task.final_report(test_metrics)}')
    return metrics | {f'test_{name}': value for name, value in test_metrics.items()} | {
        'test_step': best_step}
  finally:
    checkpointer.close()
    if writer:
      writer.close()


def _train_step(task: Task, ctx: StepContext):
  def step(state, batch, rng):
    return task.train_step(state, batch, jax.random.fold_in(rng, state_step(state)))
  return step


def _eval_step(task: Task, ctx: StepContext, final: bool):
  def step(state, batch, rng):
    sums = task.eval_step(state, batch, rng, final=final)
    return jax.lax.psum(sums, ctx.axis_name) if ctx.axis_name else sums
  return step


def evaluate_split(task: Task, eval_fn, state: Any, batches: Iterable[dict[str, np.ndarray]],
                   parallelism: parallel.JitParallelism | parallel.PmapParallelism,
                   rng: jax.Array) -> tuple[dict[str, float], np.ndarray]:
  """The task's eval metrics over every example of the split (padding excluded), and this
  process's first real images. Batch i draws from `rng` folded with i."""
  totals, images = None, None
  for i, batch in enumerate(batches):
    if images is None:
      images = batch['image'][batch['mask']]
    sums = eval_fn(state, parallelism.shard_batch(batch), jax.random.fold_in(rng, i))
    totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
  totals = parallelism.get_output(totals)
  return task.summarize(totals) | {'count': int(totals['count'])}, images

"""The training loop every entry point shares: step, log, evaluate, checkpoint, stop early.

An entry point builds its state, its compiled step and its evaluation, then hands them to
`train_loop`; what differs between tasks (the losses, what an evaluation writes) stays there.
"""

import collections
import dataclasses
import math
import signal
from typing import Any, Callable, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from train.core import parallel
from train.core.checkpoint import Checkpointer, Restored
from train.core.early_stopping import EarlyStopping
from train.core.errors import UserError
from train.core.interrupt import Interrupted, SignalFlag
from train.core.profiling import StepProfiler
from train.core.progress import Progress, format_metrics
from train.core.writer import MetricWriter


@dataclasses.dataclass(frozen=True)
class Cadence:
  """How long to train and how often to log, evaluate and save, all in steps."""
  total_steps: int
  log_every: int
  eval_every: int
  checkpoint_every: int

  @classmethod
  def from_config(cls, config, steps_per_epoch: int) -> 'Cadence':
    """Reads `num_steps` (if > 0, else `num_epochs`), `eval_every_epochs`,
    `checkpoint_every_epochs` and `log_every_steps`."""
    steps = lambda epochs: max(1, round(epochs * steps_per_epoch))
    total = config.num_steps if config.get('num_steps') else steps(config.num_epochs)
    if total <= 0:
      raise UserError(f'config.num_steps={config.get("num_steps")} / config.num_epochs='
                      f'{config.num_epochs}: train for at least one step')
    return cls(total, config.log_every_steps,
               steps(config.eval_every_epochs), steps(config.checkpoint_every_epochs))


def restore_latest(checkpointer: Checkpointer, abstract_state: Any) -> Restored | None:
  """The newest usable checkpoint (saying which), or None if there is none."""
  if checkpointer.latest_step() is None:
    return None
  restored = checkpointer.restore_usable(abstract_state)
  if restored is not None:
    say(f'Resuming from the checkpoint at step {restored.step} in {checkpointer.directory}')
  return restored


def train_loop(state: Any, *, start_step: int, cadence: Cadence,
               train_fn: Callable[[Any, dict, jax.Array], tuple[Any, dict]],
               batches: Iterator[dict[str, np.ndarray]], mesh: jax.sharding.Mesh,
               rng: jax.Array, evaluate: Callable[[Any, int], dict[str, float]],
               checkpointer: Checkpointer, writer: MetricWriter,
               learning_rate: Callable[[int], float | None] | None = None,
               stopper: EarlyStopping | None = None,
               parallelism: parallel.JitParallelism | parallel.PmapParallelism | None = None,
               hooks: Sequence[Callable[[int, dict[str, float]], None]] = (),
               on_log: Callable[[int, dict[str, float]], None] | None = None,
               signals: SignalFlag | None = None,
               profiler: StepProfiler | None = None, eval_label: str = 'eval'
               ) -> tuple[Any, dict[str, float]]:
  """Runs steps `start_step + 1 .. total_steps`; returns the state and its last eval metrics.

  `train_fn(state, batch, rng)` is the compiled step; `evaluate(state, step)` computes (and may
  write images for) the eval metrics. Every evaluation is saved as a checkpoint with its metrics,
  and every checkpoint holds `stopper`'s state; metrics.jsonl labels the evaluations' records
  with the split `eval_label`. A state with NaN or infinite values is neither evaluated nor
  saved (`Diverged`). With a `parallelism` other than the default jit one over
  `mesh`, `state` is in its device layout (`parallelism.put_state`) and checkpoints get the
  single-copy layout. Each of `hooks` is called as `hook(step, eval_metrics)` after every
  evaluation has been saved; `on_log(step, means)` sees each logged mean of the train metrics.
  After a signal in `signals` (or a preemption notice on a cluster) the current step is saved
  and `Interrupted` raised. `profiler` traces the steps it was given.
  """
  parallelism = parallelism or parallel.JitParallelism(mesh)
  progress = Progress(cadence.total_steps, start_step)
  loop_state = lambda: {'early_stopping': stopper.state_dict()} if stopper else {}
  eval_metrics, step_metrics = None, []
  last_step = start_step if stopper and stopper.should_stop() else cadence.total_steps
  if last_step == start_step < cadence.total_steps:
    say(f'This run stopped early at step {start_step} ({stopper.metric} had not improved for '
        f'{stopper.patience} evaluations); evaluating that checkpoint.')
  on_device = prefetch_to_device(batches, parallelism.shard_batch)
  profiler = profiler or StepProfiler(None, '', start_step)
  try:
    for step in range(start_step + 1, last_step + 1):
      profiler.before(step)
      with jax.profiler.StepTraceAnnotation('train', step_num=step):
        state, metrics = train_fn(state, next(on_device), rng)
      profiler.after(step, metrics)
      if _sync_each_step():
        jax.block_until_ready(metrics)
      step_metrics.append(metrics)
      if step % cadence.log_every == 0 or step == cadence.total_steps:
        means = _mean_on_host(step_metrics, parallelism)
        step_metrics = []
        checkpointer.check_for_errors()  # a failed save stops the run here, not one save later
        bad = [name for name, value in means.items() if not math.isfinite(value)]
        if bad:
          raise checkpointer.diverged(step, f'{", ".join(bad)} not finite')
        rate = learning_rate(step - 1) if learning_rate else None
        if rate is not None:
          means['learning_rate'] = float(rate)
        means['steps_per_second'] = progress.report(step, means)
        if on_log:
          on_log(step, means)
        writer.write_scalars(step, 'train', means)
      if step % cadence.eval_every == 0 or step == cadence.total_steps:
        single = parallelism.get_state(state)
        checkpointer.check_finite(step, single)
        eval_metrics = evaluate(state, step)
        writer.write_scalars(step, eval_label, eval_metrics)
        say(f'eval at step {step}: ' + format_metrics(eval_metrics))
        stop = stopper.update(step, eval_metrics) if stopper else False
        checkpointer.save(step, single, metrics=eval_metrics, progress=loop_state())
        for hook in hooks:
          hook(step, eval_metrics)
        progress.restart_clock(step)
        if stop:
          say(f'Early stopping at step {step}: {stopper.metric} has not improved for '
              f'{stopper.patience} evaluations (best {stopper.best:.4f} at step '
              f'{stopper.best_step}).')
          break
      elif step % cadence.checkpoint_every == 0:
        checkpointer.save(step, parallelism.get_state(state), progress=loop_state())
      signum = (signals.signum if signals else None) or (
          signal.SIGTERM if checkpointer.reached_preemption(step) else None)
      if signum:
        checkpointer.save(step, parallelism.get_state(state), progress=loop_state())
        checkpointer.wait()
        raise Interrupted(signum, f'{signal.Signals(signum).name} at step {step}: saved the '
                                  f'checkpoint at step {step} in {checkpointer.directory}; run '
                                  'the same command again to resume from it.')
  finally:
    profiler.stop()  # a run stopped early or failing inside the range
  if eval_metrics is None:  # resumed a finished run: evaluate what was restored
    eval_metrics = evaluate(state, start_step)
    checkpointer.save(start_step, parallelism.get_state(state), metrics=eval_metrics,
                      progress=loop_state())
  checkpointer.wait()
  return state, eval_metrics


def prefetch_to_device(batches: Iterator[Any], put: Callable[[Any], Any], size: int = 2
                       ) -> Iterator[Any]:
  """Yields `put(batch)` for each batch, `size - 1` batches ahead of the one yielded.

  `put` starts an asynchronous transfer (`jax.device_put` and friends), so the next batch goes
  to the devices while the current step runs. flax.jax_utils.prefetch_to_device does the same
  for pmap's device-stacked layout only; `put` here gives the run's own sharding either way.
  """
  queue = collections.deque()
  for batch in batches:
    queue.append(put(batch))
    if len(queue) >= size:
      yield queue.popleft()
  yield from queue


def _sync_each_step() -> bool:
  """Whether to wait for each step before dispatching the next.

  XLA:CPU starts each device's part of a program with collectives on one thread of a pool of
  max(cores, devices) threads. With the host many steps ahead, one device's limit of 32
  computations in flight fills while the other devices wait in the all-reduce, and the process
  aborts on the collective's rendezvous timeout. Several CPU devices are a test and development
  setup only, so the wait costs no real run anything.
  """
  return jax.default_backend() == 'cpu' and jax.local_device_count() > 1


def _mean_on_host(step_metrics: list[dict[str, jax.Array]], parallelism) -> dict[str, float]:
  stacked = parallelism.get_output(jax.tree.map(lambda *xs: jnp.stack(xs, -1), *step_metrics))
  return {name: float(np.mean(values)) for name, values in stacked.items()}


def count_params(params: Any) -> int:
  return sum(x.size for x in jax.tree.leaves(params))


def say(message: str) -> None:
  """Prints on process 0 only, so a multi-host run reads like a single one."""
  if jax.process_index() == 0:
    print(message, flush=True)

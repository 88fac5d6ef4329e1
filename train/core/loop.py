"""The training loop every entry point shares: step, log, evaluate, checkpoint, stop early.

An entry point builds its state, its compiled step and its evaluation, then hands them to
`train_loop`; what differs between tasks (the losses, what an evaluation writes) stays there.
"""

import dataclasses
import math
from typing import Any, Callable, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from train.core import parallel
from train.core.checkpoint import Checkpointer
from train.core.early_stopping import EarlyStopping
from train.core.errors import TrainingDiverged, UserError
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


def restore_latest(checkpointer: Checkpointer, state: Any, abstract_state: Any) -> Any:
  """The latest saved state if there is one (and says so), else `state` unchanged."""
  if checkpointer.latest_step() is None:
    return state
  state = checkpointer.restore(abstract_state)
  say(f'Resuming from the checkpoint at step {checkpointer.latest_step()} '
      f'in {checkpointer.directory}')
  return state


def train_loop(state: Any, *, start_step: int, cadence: Cadence,
               train_fn: Callable[[Any, dict, jax.Array], tuple[Any, dict]],
               batches: Iterator[dict[str, np.ndarray]], mesh: jax.sharding.Mesh,
               rng: jax.Array, evaluate: Callable[[Any, int], dict[str, float]],
               checkpointer: Checkpointer, writer: MetricWriter,
               learning_rate: Callable[[int], float | None] | None = None,
               stopper: EarlyStopping | None = None,
               parallelism: parallel.JitParallelism | parallel.PmapParallelism | None = None,
               hooks: Sequence[Callable[[int, dict[str, float]], None]] = (),
               on_log: Callable[[int, dict[str, float]], None] | None = None
               ) -> tuple[Any, dict[str, float]]:
  """Runs steps `start_step + 1 .. total_steps`; returns the state and its last eval metrics.

  `train_fn(state, batch, rng)` is the compiled step; `evaluate(state, step)` computes (and may
  write images for) the eval metrics. Every evaluation is saved as a checkpoint with its metrics.
  With a `parallelism` other than the default jit one over `mesh`, `state` is in its device
  layout (`parallelism.put_state`) and checkpoints get the single-copy layout. Each of `hooks`
  is called as `hook(step, eval_metrics)` after every evaluation has been saved; `on_log(step,
  means)` sees each logged mean of the train metrics.
  """
  parallelism = parallelism or parallel.JitParallelism(mesh)
  progress = Progress(cadence.total_steps, start_step)
  eval_metrics, step_metrics = None, []
  for step in range(start_step + 1, cadence.total_steps + 1):
    state, metrics = train_fn(state, parallelism.shard_batch(next(batches)), rng)
    step_metrics.append(metrics)
    if step % cadence.log_every == 0 or step == cadence.total_steps:
      means = _mean_on_host(step_metrics, parallelism)
      step_metrics = []
      _check_finite(means, step, checkpointer)
      rate = learning_rate(step - 1) if learning_rate else None
      if rate is not None:
        means['learning_rate'] = float(rate)
      means['steps_per_second'] = progress.report(step, means)
      if on_log:
        on_log(step, means)
      writer.write_scalars(step, 'train', means)
    if step % cadence.eval_every == 0 or step == cadence.total_steps:
      eval_metrics = evaluate(state, step)
      writer.write_scalars(step, 'eval', eval_metrics)
      say(f'eval at step {step}: ' + format_metrics(eval_metrics))
      checkpointer.save(step, parallelism.get_state(state), metrics=eval_metrics)
      for hook in hooks:
        hook(step, eval_metrics)
      progress.restart_clock(step)
      if stopper and stopper.update(step, eval_metrics):
        say(f'Early stopping at step {step}: {stopper.metric} has not improved for '
            f'{stopper.patience} evaluations (best {stopper.best:.4f} at step '
            f'{stopper.best_step}).')
        break
    elif step % cadence.checkpoint_every == 0:
      checkpointer.save(step, parallelism.get_state(state))
  if eval_metrics is None:  # resumed a finished run: evaluate what was restored
    eval_metrics = evaluate(state, start_step)
    checkpointer.save(start_step, parallelism.get_state(state), metrics=eval_metrics)
  checkpointer.wait()
  return state, eval_metrics


def _mean_on_host(step_metrics: list[dict[str, jax.Array]], parallelism) -> dict[str, float]:
  stacked = parallelism.get_output(jax.tree.map(lambda *xs: jnp.stack(xs, -1), *step_metrics))
  return {name: float(np.mean(values)) for name, values in stacked.items()}


def _check_finite(means: dict[str, float], step: int, checkpointer: Checkpointer) -> None:
  bad = [name for name, value in means.items() if not math.isfinite(value)]
  if bad:
    checkpointer.wait()
    raise TrainingDiverged(f'training diverged: {", ".join(bad)} not finite at step {step}; lower '
                    f'--config.optim.learning_rate or set --config.optim.grad_clip_norm. '
                    f'Checkpoints up to step {checkpointer.latest_step()} are intact.')


def count_params(params: Any) -> int:
  return sum(x.size for x in jax.tree.leaves(params))


def say(message: str) -> None:
  """Prints on process 0 only, so a multi-host run reads like a single one."""
  if jax.process_index() == 0:
    print(message, flush=True)

"""Orbax checkpoints under `WORKDIR/checkpoints`: the latest k, plus the best by an eval metric."""

import logging
import os
from typing import Any

import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers


class _SkipUnscoredSaveWarning(logging.Filter):
  """Periodic saves between evaluations carry no metrics by design; Orbax warns at each one."""

  def filter(self, record: logging.LogRecord) -> bool:
    return 'did not provide metrics' not in record.getMessage()


logging.getLogger('absl').addFilter(_SkipUnscoredSaveWarning())


class Checkpointer:
  """Saves a train state; restores the latest one into an abstract state's shapes and shardings.

  Checkpoints saved with eval metrics compete for "best" (by `best_metric`, larger is better when
  `best_mode='max'`); the `keep` most recent are kept whatever their metrics.
  """

  def __init__(self, workdir: str, *, keep: int, best_metric: str, best_mode: str = 'max'):
    sign = 1.0 if best_mode == 'max' else -1.0
    score = lambda metrics: sign * metrics[best_metric]
    policy = checkpoint_managers.AnyPreservationPolicy([
        checkpoint_managers.LatestN(n=keep),
        checkpoint_managers.BestN(get_metric_fn=score, n=1,
                                  keep_checkpoints_without_metrics=False),
    ])
    self.directory = os.path.join(os.path.abspath(workdir), 'checkpoints')
    # best_fn makes Orbax store the metrics beside each checkpoint, which BestN ranks by.
    self._manager = ocp.CheckpointManager(self.directory, options=ocp.CheckpointManagerOptions(
        preservation_policy=policy, best_fn=score, best_mode='max'))

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def save(self, step: int, state: Any, metrics: dict[str, float] | None = None) -> None:
    """Starts an asynchronous save; a save already made at `step` is left as it is."""
    if step in self._manager.all_steps():
      return
    # One save at a time: a save starting while the previous one is still finalizing (and
    # pruning old steps) can race with it inside Orbax.
    self._manager.wait_until_finished()
    self._manager.save(step, args=ocp.args.StandardSave(state), metrics=metrics)

  def restore(self, abstract_state: Any, step: int | None = None) -> Any:
    """The state saved at `step` (default: latest), laid out like `abstract_state`.

    `abstract_state` comes from `jax.eval_shape` with `.sharding` set on each leaf, so a
    checkpoint restores onto a different number of devices than it was saved from.
    """
    step = self.latest_step() if step is None else step
    return self._manager.restore(step, args=ocp.args.StandardRestore(abstract_state))

  def best_step(self) -> int | None:
    """The saved step with the best metric (the latest one when no save had metrics)."""
    return self._manager.best_step()

  def wait(self) -> None:
    """Blocks until every save has reached the disk."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.close()


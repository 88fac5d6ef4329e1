"""A finished (or running) task's state, restored from its workdir for scoring or inference."""

from typing import Any

import jax
import ml_collections

from train.core import parallel
from train.core.checkpoint import Checkpointer
from train.core.errors import UserError
from train.core.state import abstract_on_mesh
from train.core.task import Length, StepContext, Task
from train.data import pipeline as input_pipeline


def restore_state(task: Task, workdir: str, *, which: str | int = 'latest',
                  data_config: ml_collections.ConfigDict | None = None,
                  mesh: jax.sharding.Mesh | None = None) -> tuple[Any, int]:
  """Builds `task` for its config's data (or `data_config`) and restores the checkpoint `which`
  ('latest', 'best' by the task's metric, or a step) replicated over `mesh`; returns it and its
  step. No state is computed: the checkpoint restores into an abstract one."""
  mesh = mesh or parallel.make_mesh()
  info = input_pipeline.get_dataset_info(data_config or task.config.data)
  # The optimizer's schedule does not shape the state: any step counts will do.
  task.build(info, Length(total_steps=1, steps_per_epoch=1), StepContext())
  abstract = abstract_on_mesh(task.init, jax.random.key(0), parallel.replicated(mesh))
  checkpointer = Checkpointer(workdir, keep=1, best_metric=task.best_metric,
                              best_mode=task.best_mode)
  try:
    step = {'latest': checkpointer.latest_step, 'best': checkpointer.best_step}.get(
        which, lambda: which)()
    if step is None:
      raise UserError(f'no checkpoint in {checkpointer.directory}: train first with '
                      f'python -m train.{task.name} --config ... --workdir {workdir}')
    return checkpointer.restore(abstract, step=int(step)), int(step)
  finally:
    checkpointer.close()

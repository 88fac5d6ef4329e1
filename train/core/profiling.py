"""`config.profile_steps=(first, last)`: a `jax.profiler` trace of those training steps.

The trace goes to `WORKDIR/profile/plugins/profile/<time>/` as an XPlane file (TensorBoard's
profile tab: `tensorboard --logdir WORKDIR/profile`, with the `tensorboard-plugin-profile`
package) and a Perfetto trace (`*.trace.json.gz`, opened at https://ui.perfetto.dev).
"""

import os
from typing import Any

import jax

from train.core.errors import UserError

DIRECTORY = 'profile'


def check_steps(value: Any, total_steps: int | None = None) -> tuple[int, int] | None:
  """The (first, last) step pair of `config.profile_steps`, or None for (); a UserError
  naming the value otherwise."""
  steps = tuple(value) if isinstance(value, (tuple, list)) else value
  if steps == ():
    return None
  ok = (isinstance(steps, tuple) and len(steps) == 2
        and all(isinstance(s, int) and not isinstance(s, bool) for s in steps)
        and 1 <= steps[0] <= steps[1])
  if not ok:
    raise UserError(f'config.profile_steps={value!r}: expected (first, last), whole numbers '
                    'with 1 <= first <= last (e.g. (10, 15)), or () for no trace; set '
                    '--config.profile_steps to one.')
  if total_steps is not None and steps[1] > total_steps:
    raise UserError(f'config.profile_steps={value!r}: the run has {total_steps} steps; '
                    f'profile steps up to {total_steps}.')
  return steps


class StepProfiler:
  """Starts a trace before step `first` (or the first step run, on a resume inside the range)
  and stops it once step `last` has finished on the devices."""

  def __init__(self, steps: tuple[int, int] | None, workdir: str, start_step: int):
    self.directory = os.path.join(workdir, DIRECTORY)
    self._first, self._last = steps or (0, -1)
    self._first = max(self._first, start_step + 1)
    self._tracing = False

  def before(self, step: int) -> None:
    if step == self._first <= self._last:
      jax.profiler.start_trace(self.directory, create_perfetto_trace=True)
      self._tracing = True

  def after(self, step: int, outputs: Any) -> None:
    if self._tracing and step == self._last:
      jax.block_until_ready(outputs)  # the trace covers the steps' device work
      self.stop()

  def stop(self) -> None:
    if self._tracing:
      self._tracing = False
      jax.profiler.stop_trace()


"""Orbax checkpoints under `WORKDIR/checkpoints`: the latest k, plus the best by an eval metric.

Each checkpoint holds two items: `state` (the train state's arrays) and `progress` (a small JSON
dict of loop state, e.g. early stopping); checkpoints of the earlier layout, the state alone as
Orbax's single item `default`, restore with empty progress. A state that is not finite is never
saved, and a checkpoint that cannot be read back (truncated or missing files, non-finite values)
is passed over for the newest one that can, with a line saying so.
"""

import contextlib
import functools
import glob
import logging
import os
import shutil
import sys
import tempfile
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers, type_handlers

from train.core.errors import USER_FIXABLE_ERRNOS, TrainingDiverged, UserError

LEGACY_ITEM = 'default'  # the state alone, as saved before the `progress` item existed
UNUSABLE_DIR = 'unusable_checkpoints'  # beside `checkpoints`: set-aside steps, kept for a person
_WRITE_FAILURES = ('RESOURCE_EXHAUSTED', 'PERMISSION_DENIED')
# Room for Orbax's files beside the arrays: manifests, metadata, commit markers and the OCDBT
# store's data files, which vary in number from save to save, each taking at least one 4 KiB
# block, and about 700 bytes of tree metadata per array (_METADATA, _sharding, array_metadatas).
# Measured on a digits CNN's checkpoint (27 arrays, 3 blocks of them), 20 saves each: 24 to 29
# blocks on disk with each replicated array saved whole (one CPU process), 27 to 39 with Orbax's
# replica-parallel saving. The arrays themselves are counted uncompressed: the most the OCDBT
# store can take.
_SAVE_MARGIN_BYTES = 36 * 4096
_SAVE_MARGIN_BYTES_PER_ARRAY = 1024


def _is_write_failure(e: BaseException | None) -> bool:
  """A full disk or a denied write: TensorStore reports these as a ValueError with its status."""
  if isinstance(e, OSError):
    return e.errno in USER_FIXABLE_ERRNOS
  return isinstance(e, ValueError) and any(status in str(e) for status in _WRITE_FAILURES)


class _SkipExpectedWarnings(logging.Filter):
  """Periodic saves between evaluations carry no metrics by design, scoring opens checkpoints
  read-only on purpose, and `_save_replicas_whole_on_one_cpu_process` replaces Orbax's array
  handler on purpose; Orbax warns at each. A save that fails for a full disk or a denied write is
  reported in one line, without Orbax's tracebacks."""

  def filter(self, record: logging.LogRecord) -> bool:
    message = record.getMessage()
    if record.exc_info and _is_write_failure(record.exc_info[1]):
      return False  # a failed save's tracebacks: `Checkpointer.wait` reports it in one line
    return not any(s in message for s in ('did not provide metrics', 'read only', 'read_only',
                                          'overriding jax.Array'))


logging.getLogger('absl').addFilter(_SkipExpectedWarnings())


@functools.cache
def _save_replicas_whole_on_one_cpu_process() -> None:
  """Orbax's replica-parallel saving (its default except on GPU) cuts each replicated array into
  one slice per replica, so that devices copy to the host, and processes write, in parallel. The
  CPU devices of one process have neither to share: it only compiles a slicing program per array
  shape (the first save of 40 small arrays on 4 CPU devices: 9 s with it, 0.2 s without)."""
  if jax.process_count() == 1 and jax.default_backend() == 'cpu':
    type_handlers.register_type_handler(
        jax.Array, type_handlers.ArrayHandler(use_replica_parallel=False), override=True)


class Restored(NamedTuple):
  state: Any
  progress: dict[str, Any]
  step: int


@jax.jit
def _all_finite(arrays: list[jax.Array]) -> jax.Array:
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in arrays]))


def is_finite(state: Any) -> bool:
  """Whether every float array of `state` is finite: one reduction on device, one bool back.
  Reduced as a list of arrays, not the state itself, so that states of the same shapes share one
  traced program (a state's tree structure includes its optimizer, new in each run)."""
  arrays = [x for x in jax.tree.leaves(state) if jnp.issubdtype(x.dtype, jnp.inexact)]
  return bool(_all_finite(arrays)) if arrays else True


class Checkpointer:
  """Saves a train state; restores the latest usable one into an abstract state's shapes and
  shardings.

  Checkpoints saved with eval metrics compete for "best" (by `best_metric`, larger is better when
  `best_mode='max'`); the `keep` most recent are kept whatever their metrics. `read_only` (for
  scoring and prediction) creates, cleans up and sets aside nothing.
  """

  def __init__(self, workdir: str, *, keep: int, best_metric: str, best_mode: str = 'max',
               read_only: bool = False):
    sign = 1.0 if best_mode == 'max' else -1.0
    score = lambda metrics: sign * metrics[best_metric]
    policy = checkpoint_managers.AnyPreservationPolicy([
        checkpoint_managers.LatestN(n=keep),
        checkpoint_managers.BestN(get_metric_fn=score, n=1,
                                  keep_checkpoints_without_metrics=False),
    ])
    _save_replicas_whole_on_one_cpu_process()
    self.workdir = os.path.abspath(workdir)
    self.directory = os.path.join(self.workdir, 'checkpoints')
    self.read_only = read_only
    self._saving = (None, 0)  # the step and size of the latest save started
    # best_fn makes Orbax store the metrics beside each checkpoint, which BestN ranks by.
    # cleanup_tmp_directories removes the partial saves a killed run leaves behind. The
    # directory is made by the first save (create=False): a run refused before it leaves none.
    self._manager = ocp.CheckpointManager(
        self.directory, item_handlers={'state': ocp.StandardCheckpointHandler(),
                                       'progress': ocp.JsonCheckpointHandler(),
                                       LEGACY_ITEM: ocp.StandardCheckpointHandler()},
        options=ocp.CheckpointManagerOptions(
            preservation_policy=policy, best_fn=score, best_mode='max', read_only=read_only,
            create=False, cleanup_tmp_directories=not read_only))

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def check_finite(self, step: int, state: Any) -> None:
    """Raises `TrainingDiverged` if `state` has NaN or infinite values."""
    if not is_finite(state):
      raise self.diverged(step, 'the state has NaN or infinite values')

  def diverged(self, step: int, what: str) -> TrainingDiverged:
    """The error for a run whose step `step` diverged (`what` says how): it names the newest
    checkpoint, which is finite since no other is saved."""
    self.wait()
    latest = self.latest_step()
    where = (f'the newest checkpoint, step {latest} in {self.directory}, is finite, and '
             'rerunning resumes from it' if latest is not None else
             'no checkpoint was saved yet, so rerunning starts afresh')
    return TrainingDiverged(f'training diverged at step {step} ({what}; not saved): {where}. Lower '
                    '--config.optim.learning_rate or set --config.optim.grad_clip_norm.')

  def save(self, step: int, state: Any, metrics: dict[str, float] | None = None,
           progress: dict[str, Any] | None = None) -> None:
    """Starts an asynchronous save of a finite state (else `TrainingDiverged`); a save already
    made at `step` is left as it is."""
    if step in self._manager.all_steps():
      return
    self.check_finite(step, state)
    # One save at a time: a save starting while the previous one is still finalizing (and
    # pruning old steps) can race with it inside Orbax. Waiting also surfaces a failed save.
    self.wait()
    self._saving = (step, _check_free_space(self.directory, state))
    self._manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), progress=ocp.args.JsonSave(progress or {})),
                       metrics=metrics)

  def restore(self, abstract_state: Any, step: int | None = None) -> Restored:
    """The checkpoint at `step` (default: latest), laid out like `abstract_state`.

    `abstract_state` comes from `jax.eval_shape` with `.sharding` set on each leaf, so a
    checkpoint restores onto a different number of devices than it was saved from.
    """
    step = self.latest_step() if step is None else step
    if self._is_legacy(step):
      restored = self._manager.restore(step, args=ocp.args.Composite(
          **{LEGACY_ITEM: ocp.args.StandardRestore(abstract_state)}))
      return Restored(restored[LEGACY_ITEM], {}, step)
    restored = self._manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state), progress=ocp.args.JsonRestore()))
    return Restored(restored['state'], dict(restored['progress'] or {}), step)

  def restore_usable(self, abstract_state: Any, steps: list[int] | None = None
                     ) -> Restored | None:
    """The first of `steps` (default: newest first) that reads back finite; None if none do.

    Each one passed over is reported in a line and, unless read-only, moved to
    WORKDIR/unusable_checkpoints, so that the run saves that step afresh when it gets there.
    """
    steps = sorted(self._manager.all_steps(), reverse=True) if steps is None else steps
    for i, step in enumerate(steps):
      try:
        with _quiet_stderr_unless_ok():
          restored = self.restore(abstract_state, step)
        problem = None if is_finite(restored.state) else 'it has NaN or infinite values'
      except Exception as e:  # pylint: disable=broad-except  (Orbax/TensorStore raise many types)
        problem = f'it cannot be read ({type(e).__name__}: {_first_line(e)})'
      if problem is None:
        return restored
      fallback = (f'trying step {steps[i + 1]}' if i + 1 < len(steps) else
                  'no other checkpoint is left')
      _say(f'The checkpoint at step {step} in {self.directory} is unusable: {problem}; '
           f'{self._set_aside(step)}{fallback}.')
    return None

  def restore_for_use(self, abstract_state: Any, which: str | int = 'latest') -> Restored:
    """For scoring and prediction: the checkpoint `which` ('latest', 'best' or a step) or, if it
    cannot be used, the newest one that can (saying so); UserError if there is none."""
    steps = sorted(self._manager.all_steps(), reverse=True)
    first = {'latest': self.latest_step, 'best': self.best_step}.get(which, lambda: which)()
    first = steps[0] if first is None and steps else first  # no save had metrics
    if first is None:
      raise UserError(f'no checkpoint in {self.directory}: train first (the same command with '
                      'python -m train.<task> --config ... --workdir WORKDIR).')
    restored = self.restore_usable(abstract_state, [first] + [s for s in steps if s != first])
    if restored is None:
      raise UserError(f'no usable checkpoint in {self.directory} (each is unreadable or not '
                      'finite): train again in a new --workdir.')
    return restored

  def _set_aside(self, step: int) -> str:
    if self.read_only or jax.process_index() != 0:
      return ''
    target = os.path.join(self.workdir, UNUSABLE_DIR, str(step))
    os.makedirs(os.path.dirname(target), exist_ok=True)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(os.path.join(self.directory, str(step)), target)
    self._manager.reload()
    return f'moved to {target}; '

  def saved_tree(self) -> Any:
    """The array metadata (shapes, dtypes) of the newest checkpoint whose metadata reads; None
    if there is none."""
    for step in sorted(self._manager.all_steps(), reverse=True):
      try:
        with _quiet_stderr_unless_ok():
          item = LEGACY_ITEM if self._is_legacy(step) else 'state'
          return self._manager.item_metadata(step)[item].tree
      except Exception:  # pylint: disable=broad-except  (unreadable: `restore_usable` says so)
        continue
    return None

  def _is_legacy(self, step: int) -> bool:
    folder = os.path.join(self.directory, str(step))
    return (os.path.isdir(os.path.join(folder, LEGACY_ITEM)) and
            not os.path.isdir(os.path.join(folder, 'state')))

  def best_step(self) -> int | None:
    """The saved step with the best metric (the latest one when no save had metrics)."""
    return self._manager.best_step()

  def reached_preemption(self, step: int) -> bool:
    """Whether every host has reached the step at which to save for a preemption notice
    (JAX's preemption sync point; always False without `jax.distributed`)."""
    return self._manager.reached_preemption(step)

  def wait(self) -> None:
    """Blocks until every save has reached the disk; a failed save raises here."""
    with self._failed_save_is_user_error():
      self._manager.wait_until_finished()

  def check_for_errors(self) -> None:
    """Raises now, without waiting, if an asynchronous save has failed (e.g. a full disk)."""
    with self._failed_save_is_user_error():
      self._manager.check_for_errors()

  @contextlib.contextmanager
  def _failed_save_is_user_error(self):
    try:
      yield
    except (OSError, ValueError) as e:
      if not _is_write_failure(e):
        raise
      self._remove_partial_saves()
      step, size = self._saving
      reason = getattr(e, 'strerror', None) or _first_line(e)
      latest = self.latest_step()
      resume = f'resume from step {latest}' if latest is not None else 'start afresh'
      raise UserError(f'cannot write the checkpoint of step {step} (about {size:,} bytes) to '
                      f'{self.directory} ({reason}): free that much space there or fix its '
                      f'permissions, then run the same command again to {resume}.') from None

  def _remove_partial_saves(self) -> None:
    """Removes what a failed save left (Orbax's temporary step folders), so that only complete
    checkpoints remain."""
    if self.read_only or jax.process_index() != 0:
      return
    for path in glob.glob(os.path.join(self.directory, '*.orbax-checkpoint-tmp*')):
      shutil.rmtree(path, ignore_errors=True)
    self._manager.reload()

  def close(self) -> None:
    self._manager.close()


def checkpoint_bytes(state: Any) -> int:
  """The most room a checkpoint of `state` takes on disk: its arrays' bytes and the margin."""
  leaves = jax.tree.leaves(state)
  return (_SAVE_MARGIN_BYTES + _SAVE_MARGIN_BYTES_PER_ARRAY * len(leaves) +
          sum(np.dtype(x.dtype).itemsize * np.size(x) for x in leaves))


def _check_free_space(directory: str, state: Any) -> int:
  """Refuses a save the disk cannot hold, now rather than when the asynchronous write fails;
  returns the bytes it needs."""
  needed = checkpoint_bytes(state)
  free = shutil.disk_usage(directory if os.path.isdir(directory) else
                           os.path.dirname(directory)).free
  if free < needed:
    raise UserError(f'{directory}: {free:,} bytes free, but a checkpoint needs about {needed:,}: '
                    'free some space (or give another --workdir), then run again to resume.')
  return needed


@functools.cache
def _ignore_reads_left_behind() -> None:
  """A failed read of a checkpoint leaves Orbax's other reads running after it closes their
  event loop; as each finishes, TensorStore reports the 'Event loop is closed' RuntimeError of
  its callback, printed or as unraisable (one traceback per array, as the loop closes, during the
  next read or later), past the end of `_quiet_stderr_unless_ok`. These are dropped; any other
  exception goes to the hook it would have gone to."""
  is_closed_loop = lambda e: isinstance(e, RuntimeError) and str(e) == 'Event loop is closed'
  print_exception, report_unraisable = sys.excepthook, sys.unraisablehook

  def excepthook(kind, value, traceback):
    if not is_closed_loop(value):
      print_exception(kind, value, traceback)

  def unraisablehook(unraisable):
    if not is_closed_loop(unraisable.exc_value):
      report_unraisable(unraisable)

  sys.excepthook, sys.unraisablehook = excepthook, unraisablehook


@contextlib.contextmanager
def _quiet_stderr_unless_ok():
  """TensorStore prints a traceback of its own ('Event loop is closed') when a read fails; the
  caller reports the failure in one line instead. Output of a restore that works is kept."""
  _ignore_reads_left_behind()
  sys.stderr.flush()
  saved = os.dup(2)
  with tempfile.TemporaryFile() as captured:
    os.dup2(captured.fileno(), 2)
    ok = False
    try:
      yield
      ok = True
    finally:
      sys.stderr.flush()
      os.dup2(saved, 2)
      os.close(saved)
      if ok:
        captured.seek(0)
        os.write(2, captured.read())


def _first_line(e: Exception) -> str:
  text = str(e).strip().splitlines()
  return text[0][:200] if text else ''


def _say(message: str) -> None:
  if jax.process_index() == 0:
    print(message, flush=True)

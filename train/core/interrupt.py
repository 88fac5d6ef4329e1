"""SIGTERM and SIGINT during training: finish the current step, save it, then exit.

On one process the signals set a flag that the loop reads after each step. With several
processes, SIGTERM is left to JAX's preemption notifier, which agrees on one step for every host
(`Checkpointer.reached_preemption`), since hosts that stopped at different steps would hang.
A second signal of the same kind acts as it would without this module (ends the process at once).
"""

import contextlib
import signal
from typing import Iterator

import jax

EXIT_STATUS = {signal.SIGTERM: 143, signal.SIGINT: 130}  # 128 + the signal, as a shell reports


class Interrupted(Exception):
  """Training stopped for a signal after saving its current step; exit with `exit_status`."""

  def __init__(self, signum: int, message: str):
    super().__init__(message)
    self.exit_status = EXIT_STATUS.get(signum, 128 + signum)


class SignalFlag:
  """The first SIGTERM/SIGINT received while it is installed (None if none yet)."""
  signum: int | None = None


@contextlib.contextmanager
def catch_stop_signals() -> Iterator[SignalFlag]:
  """Within the block, SIGTERM and SIGINT set the flag instead of ending the process."""
  flag = SignalFlag()
  signums = [signal.SIGINT]
  if jax.process_count() == 1:
    signums.append(signal.SIGTERM)

  def handle(signum, frame):
    del frame
    flag.signum = signum
    signal.signal(signum, previous[signum])  # a second one is not caught

  try:
    previous = {s: signal.signal(s, handle) for s in signums}
  except ValueError:  # not the main thread: signals stay as they are
    yield flag
    return
  try:
    yield flag
  finally:
    for s, handler in previous.items():
      signal.signal(s, handler)

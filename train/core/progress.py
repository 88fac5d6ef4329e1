"""A progress line a person can read: step, metrics, steps per second and time left."""

import datetime
import time
from typing import Mapping

import jax


def format_metrics(metrics: Mapping[str, float]) -> str:
  """`loss 0.1234 | accuracy 0.9688 | ...`: the loss first, then the rest by name."""
  names = sorted((n for n, v in metrics.items() if isinstance(v, float)),
                 key=lambda n: (n != 'loss', n))
  return ' | '.join(f'{name} {metrics[name]:.4f}' for name in names)


class Progress:
  """Prints `step 300/1000 | loss 0.2310 | accuracy 0.9375 | 42.1 steps/s | ETA 0:00:16`."""

  def __init__(self, total_steps: int, start_step: int):
    self.total_steps = total_steps
    self._last_step, self._last_time = start_step, time.perf_counter()

  def report(self, step: int, metrics: Mapping[str, float]) -> float:
    """Prints the line (on process 0) and returns the steps per second since the last report."""
    now = time.perf_counter()
    rate = (step - self._last_step) / max(now - self._last_time, 1e-9)
    self._last_step, self._last_time = step, now
    if jax.process_index() == 0:
      eta = datetime.timedelta(seconds=round((self.total_steps - step) / max(rate, 1e-9)))
      print(f'step {step}/{self.total_steps} | {format_metrics(metrics)} | {rate:.1f} steps/s '
            f'| ETA {eta}', flush=True)
    return rate

  def restart_clock(self, step: int) -> None:
    """Starts timing afresh, so time spent evaluating or saving is not counted as training."""
    self._last_step, self._last_time = step, time.perf_counter()

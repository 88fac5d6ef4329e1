"""Stop training once an eval metric has not improved for `patience` evaluations."""

import dataclasses
import math

from train.core.errors import UserError


@dataclasses.dataclass
class EarlyStopping:
  """Tracks the best value of one metric; `patience=0` never stops but still tracks the best."""
  metric: str
  patience: int
  mode: str = 'max'  # 'max' for accuracy, 'min' for a loss
  min_delta: float = 0.0
  best: float = dataclasses.field(init=False)
  best_step: int | None = dataclasses.field(default=None, init=False)
  evals_without_improvement: int = dataclasses.field(default=0, init=False)

  def __post_init__(self):
    if self.mode not in ('max', 'min'):
      raise UserError(f"config.early_stopping.mode={self.mode!r}: use 'max' or 'min'")
    self.best = -math.inf if self.mode == 'max' else math.inf

  def update(self, step: int, metrics: dict[str, float]) -> bool:
    """Records an evaluation's metrics; returns True when training should stop."""
    if self.metric not in metrics:
      raise UserError(f'config.early_stopping.metric={self.metric!r} is not an eval metric; '
                      f'use one of {sorted(metrics)}')
    value = metrics[self.metric]
    gain = value - self.best if self.mode == 'max' else self.best - value
    if gain > self.min_delta:
      self.best, self.best_step, self.evals_without_improvement = value, step, 0
    else:
      self.evals_without_improvement += 1
    return 0 < self.patience <= self.evals_without_improvement

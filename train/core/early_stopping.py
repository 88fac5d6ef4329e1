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
    return self.should_stop()

  def should_stop(self) -> bool:
    return 0 < self.patience <= self.evals_without_improvement

  def state_dict(self) -> dict[str, float | int | None]:
    """What a checkpoint keeps, so a resumed run stops where an uninterrupted one would."""
    return {'best': self.best if math.isfinite(self.best) else None,
            'best_step': self.best_step,
            'evals_without_improvement': self.evals_without_improvement}

  def load_state_dict(self, saved: dict[str, float | int | None]) -> None:
    if saved.get('best') is not None:
      self.best = saved['best']
    self.best_step = saved.get('best_step')
    self.evals_without_improvement = saved.get('evals_without_improvement', 0)

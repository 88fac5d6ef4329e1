"""The `Task` interface: what one kind of training defines; `train.core.run.run` does the rest.

A task holds its config and, after `build`, its models and optimizers. Its step functions are
pure (no Python control flow on traced values): `run` compiles them once with `jax.jit` or
`jax.pmap` and feeds them sharded batches. Lifecycle, in the order `run` calls it:

    task.build(info, length, ctx)       # check the config against the data; make models
    state = task.init(rng)              # pure; run jits it onto the mesh
    state = task.warm_start(state)      # fresh runs only (no checkpoint yet)
    task.describe(state)                # the one-line summary printed at the start
    task.train_step(state, batch, rng)  # -> (state, scalar metrics), per step
    task.after_log(step, means)         # the logged means of the train metrics
    task.eval_step(state, batch, rng, final=...)  # -> masked sums and 'count', per batch
    task.summarize(totals)              # sums over the split -> eval metrics
    task.after_eval(state, step, images, rng, writer)  # grids, samples, other scores
    task.final_report(metrics)          # the closing line
"""

import dataclasses
from typing import Any, Callable, Mapping

import jax
import ml_collections
import numpy as np
from etils import epy

from train.core.progress import format_metrics
from train.core.writer import MetricWriter

# TensorFlow (4 s to import) only once a pipeline is used, not on importing a task.
with epy.lazy_imports():
  from train.data import pipeline as input_pipeline

Batch = dict[str, jax.Array]
Metrics = dict[str, jax.Array]


@dataclasses.dataclass(frozen=True)
class StepContext:
  """How the steps run, fixed by `run` before `build`.

  `axis_name` is the device axis under `jax.pmap` (steps reduce over it: gradients with
  `train.core.step.accumulate_gradients`, BatchNorm statistics through the model's
  `bn_axis_name`, eval sums by `run`); None under jit, where the compiler inserts collectives.
  """
  axis_name: str | None = None
  grad_accum_steps: int = 1


@dataclasses.dataclass(frozen=True)
class Length:
  """How long training lasts, in steps, and how many steps make one epoch of the train split."""
  total_steps: int
  steps_per_epoch: int


class Task:
  """Base class of every task; subclasses override what differs.

  Class attributes: `name` (shown in messages), `eval_metrics`, `best_metric` (the eval metric
  that picks the best checkpoint), `best_mode` ('max' when larger is better, 'min' otherwise)
  and `pipeline` (the input pipeline module).
  """
  name: str = 'task'
  best_metric: str = 'loss'
  # The names evaluations report, so config.early_stopping.metric is checked before any work;
  # () if they depend on the config and the data: `run` then evaluates one batch before
  # training to learn them, and adds `after_eval_metrics`, those `after_eval` returns.
  eval_metrics: tuple[str, ...] = ()
  after_eval_metrics: tuple[str, ...] = ()
  best_mode: str = 'min'
  # True when `eval_step(final=True)` computes more than the other evaluations: it is then
  # compiled as a program of its own; otherwise every evaluation runs the same one.
  final_eval_differs: bool = False
  # Where the data comes from: a module with `get_dataset_info`, `make_train_iterator` and
  # `make_eval_iterator` (as train/data/pipeline.py), reading `config.data`.
  pipeline: Any = input_pipeline

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config
    self.ctx = StepContext()

  def build(self, info: 'input_pipeline.DatasetInfo', length: Length, ctx: StepContext) -> None:
    """Checks the config against the dataset (UserError naming the field) and builds the
    models and optimizers the steps use. Always call `super().build(...)` first."""
    self.info, self.length, self.ctx = info, length, ctx

  def init(self, rng: jax.Array) -> Any:
    """The initial train state, a pytree with a `.step` (or a dict of such states, all stepped
    together); a pure function of `rng`."""
    raise NotImplementedError

  def warm_start(self, state: Any) -> Any:
    """The initial state of a fresh run (no checkpoint yet), e.g. with pretrained weights."""
    return state

  def describe(self, state: Any) -> str:
    """What is trained, in one line (parameters, model, loss)."""
    return f'{self.name}: {count_params(state):,} parameters'

  schedule: Callable[[int], Any] | None = None  # set by `build` for a single optimizer

  def learning_rate(self, step: int) -> float | None:
    """The learning rate of optimizer step `step` (0-based), logged with the train metrics:
    by default from `self.schedule`, which a task with one optimizer sets in `build`."""
    return None if self.schedule is None else float(self.schedule(step))

  def train_step(self, state: Any, batch: Batch, rng: jax.Array) -> tuple[Any, Metrics]:
    """One optimizer step. `rng` is the train stream folded with the step number, the same on
    every device: derive per-example keys with `step.example_keys` (equal numbers under jit and
    pmap) or per-device ones with `step.device_key`."""
    raise NotImplementedError

  def after_log(self, step: int, means: dict[str, float]) -> None:
    """Sees the train metrics' means every `log_every_steps` (e.g. to monitor for failure)."""
    del step, means

  def eval_step(self, state: Any, batch: Batch, rng: jax.Array, *, final: bool = False
                ) -> Metrics:
    """Sums over the real examples (`batch['mask']`) of a padded eval batch, plus their
    `'count'`; `run` adds them up over the devices and the split. `rng` is the eval stream
    folded with the batch index (the same at every evaluation and on every device); `final`
    is True at the last evaluation of training, for estimates too costly to make every time."""
    raise NotImplementedError

  def summarize(self, totals: Mapping[str, float]) -> dict[str, float]:
    """Eval metrics from the sums over the whole split; by default each sum over the count."""
    count = totals['count']
    return {name: float(total / count) for name, total in totals.items() if name != 'count'}

  def after_eval(self, state: Any, step: int, images: np.ndarray, rng: jax.Array,
                 writer: MetricWriter) -> dict[str, float]:
    """Runs after each evaluation of the split, with the single-copy (jit layout) state: writes
    grids (`images` are this process's first real eval images; `rng` is the same at every
    evaluation) and returns metrics beyond the split's (sample scores, speeds)."""
    del state, step, images, rng, writer
    return {}

  def final_report(self, metrics: Mapping[str, float]) -> str:
    """The closing summary after 'Final eval on N <split> examples at step S: '."""
    return format_metrics(metrics)


def state_step(state: Any) -> jax.Array:
  """The step of a state: its `.step`, or that of the first state in a dict of states."""
  return state.step if hasattr(state, 'step') else state_step(next(iter(state.values())))


def count_params(tree: Any) -> int:
  """Parameters in a state (every `params` subtree) or a parameter tree."""
  def leaves(node):
    if hasattr(node, 'params'):
      return jax.tree.leaves(node.params)
    if isinstance(node, Mapping):
      return [leaf for child in node.values() for leaf in leaves(child)]
    if dataclasses.is_dataclass(node):
      return [leaf for f in dataclasses.fields(node) for leaf in leaves(getattr(node, f.name))]
    return jax.tree.leaves(node)
  return sum(int(np.size(x)) for x in leaves(tree))  # arrays or their ShapeDtypeStructs

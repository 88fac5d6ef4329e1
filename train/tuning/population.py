"""Population training: K classifier trials that differ only in continuous hyperparameters
(learning rate, weight decay, label smoothing), trained as one compiled program.

The K train states are stacked on a leading trial axis and `classify.train_step` is `jax.vmap`ped
over it; every trial sees the same batches from one input pipeline, the same initial parameters
and the same dropout draws (as K sequential runs with one seed would). The learning rate and
weight decay live in the optimizer state (`optax.inject_hyperparams`), so they are per-trial
arrays rather than constants compiled into the program. `benchmarks/population.py` measures
trials per hour against K sequential trials.
"""

import dataclasses
import functools
from typing import Iterator

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from train import classify
from train.core import build, optim
from train.core.state import TrainState, create_train_state
from train.data import pipeline as input_pipeline

HYPERPARAMETERS = ('learning_rate', 'weight_decay', 'label_smoothing')


@dataclasses.dataclass(frozen=True)
class Population:
  """Per-trial values, each of shape (K,)."""
  learning_rate: np.ndarray
  weight_decay: np.ndarray
  label_smoothing: np.ndarray

  @classmethod
  def of(cls, config: ml_collections.ConfigDict, **values) -> 'Population':
    """Trials with `values` (name -> K numbers); the others take the config's value."""
    size = {len(v) for v in values.values()}
    if len(size) != 1 or not set(values) <= set(HYPERPARAMETERS):
      raise ValueError(f'give K values of some of {HYPERPARAMETERS}; got {values}')
    k = size.pop()
    defaults = dict(learning_rate=config.optim.learning_rate,
                    weight_decay=config.optim.weight_decay,
                    label_smoothing=config.label_smoothing)
    return cls(**{name: np.asarray(values.get(name, [defaults[name]] * k), np.float32)
                  for name in HYPERPARAMETERS})

  @property
  def size(self) -> int:
    return len(self.learning_rate)


def optimizer(config: ml_collections.ConfigDict, total_steps: int,
              steps_per_epoch: int) -> optax.GradientTransformation:
  """`config.optim`'s optimizer and schedule, with the peak learning rate and the weight decay
  as hyperparameters held in the optimizer state."""
  return optim.make_optimizer(
      ml_collections.ConfigDict({**config.optim.to_dict(), 'inject_hyperparams': True}),
      total_steps, steps_per_epoch)


def init(model, tx: optax.GradientTransformation, rng: jax.Array, input_shape,
         population: Population) -> TrainState:
  """K train states stacked on axis 0: the same initial parameters, each trial's
  hyperparameters in its optimizer state."""
  def one(learning_rate, weight_decay):
    state = create_train_state(model, tx, rng, input_shape)
    hyperparams = dict(state.opt_state.hyperparams, learning_rate=learning_rate,
                       weight_decay=weight_decay)
    return state.replace(opt_state=state.opt_state._replace(hyperparams=hyperparams))
  return jax.vmap(one)(population.learning_rate, population.weight_decay)


def train_step(state: TrainState, batch, rng: jax.Array, label_smoothing: jax.Array):
  """`classify.train_step` of every trial on the shared `batch`: (state, per-trial metrics)."""
  step = lambda s, smoothing: classify.train_step(s, batch, rng, label_smoothing=smoothing)
  return jax.vmap(step)(state, label_smoothing)


def eval_step(state: TrainState, batch):
  """`classify.eval_step` of every trial on the shared `batch`: per-trial sums."""
  return jax.vmap(classify.eval_step, in_axes=(0, None))(state, batch)


def train(config: ml_collections.ConfigDict, population: Population, *, test: bool = False
          ) -> list[dict[str, float]]:
  """Trains the population for `config`'s duration; returns each trial's best evaluation on the
  validation split (eval split without one) by the classifier's accuracy, with its 'step'. With
  `test`, each trial's best state is also scored on the eval split ('test_accuracy', ...)."""
  info = input_pipeline.get_dataset_info(config.data)
  steps_per_epoch = max(1, info.num_train // config.batch_size)
  total = config.num_steps or max(1, round(config.num_epochs * steps_per_epoch))
  eval_every = max(1, round(config.eval_every_epochs * steps_per_epoch))
  tx = optimizer(config, total, steps_per_epoch)
  model = build.classifier(config, info.num_classes)
  rng = jax.random.key(config.seed)
  init_rng, train_rng = jax.random.split(rng)
  state = jax.jit(functools.partial(init, model, tx, input_shape=info.image_shape,
                                    population=population))(init_rng)
  step_fn = jax.jit(train_step, donate_argnums=0)
  eval_fn = jax.jit(eval_step)
  smoothing = jnp.asarray(population.label_smoothing)
  batches = input_pipeline.make_train_iterator(config.data, seed=config.seed,
                                               global_batch_size=config.batch_size)
  split = input_pipeline.validation_split(config.data)
  best = [{'accuracy': -1.0} for _ in range(population.size)]
  best_state = None  # each trial's state at its best evaluation, kept only for `test`
  for step in range(1, total + 1):
    state, _ = step_fn(state, next(batches), jax.random.fold_in(train_rng, step - 1), smoothing)
    if step % eval_every == 0 or step == total:
      improved = np.zeros(population.size, bool)
      for trial, metrics in enumerate(_evaluate(eval_fn, state, config, split)):
        if metrics['accuracy'] > best[trial]['accuracy']:
          best[trial] = metrics | {'step': step}
          improved[trial] = True
      if test:  # copies: the next step donates `state`'s buffers
        best_state = _select(improved, state, state if best_state is None else best_state)
  if test:
    for trial, metrics in enumerate(_evaluate(eval_fn, best_state, config,
                                              config.data.eval_split)):
      best[trial] |= {f'test_{name}': value for name, value in metrics.items()}
  return best


def _select(which: np.ndarray, new: TrainState, old: TrainState) -> TrainState:
  """Per trial, `new`'s state where `which` is True, else `old`'s."""
  return jax.tree.map(
      lambda a, b: jnp.where(which.reshape(-1, *[1] * (a.ndim - 1)), a, b), new, old)


def _evaluate(eval_fn, state, config, split: str | None) -> Iterator[dict[str, float]]:
  totals = None
  for batch in input_pipeline.make_eval_iterator(config.data, split=split,
                                                 global_batch_size=config.eval_batch_size):
    sums = eval_fn(state, batch)
    totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
  totals = jax.device_get(totals)
  for trial in range(len(totals['count'])):
    count = totals['count'][trial]
    yield {name: float(values[trial] / count) for name, values in totals.items()
           if name != 'count'}

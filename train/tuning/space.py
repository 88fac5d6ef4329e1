"""A recipe's search space (`config.search`) as Optuna distributions, checked before any trial.

`config.search` mirrors the config's own fields; each leaf is a tuple naming a distribution:

    config.search = dict(
        optim=dict(learning_rate=('log_uniform', 1e-4, 1e-2),  # low, high
                   weight_decay=('uniform', 0.0, 1e-3)),
        label_smoothing=('choice', (0.0, 0.1)),
        model_kwargs=dict(features=('choice', ((8, 16), (16, 32))), hidden=('int', 32, 128)))

'int' takes an optional step: ('int', 32, 128, 32). Choices may be any Python literal (tuples
too); Optuna sees those by their text.
"""

import dataclasses
import difflib
import json
import math
from typing import Any

import ml_collections
import optuna

from train.core import config as config_lib
from train.core.errors import UserError

KINDS = ('choice', 'uniform', 'log_uniform', 'int')
_PLAIN = (type(None), bool, int, float, str)  # what Optuna's categorical distribution stores


@dataclasses.dataclass(frozen=True)
class Param:
  """One searched field: its dotted config name and its distribution."""
  field: str
  distribution: optuna.distributions.BaseDistribution
  choices: tuple[Any, ...] = ()  # a choice's values as the config takes them

  def value(self, suggested: Any) -> Any:
    """The config value of what Optuna suggested (a choice's text back to its value)."""
    if self.choices:
      return self.choices[self.distribution.choices.index(suggested)]
    return suggested

  def override(self, value: Any) -> str:
    """`--config.FIELD=VALUE`, which sets `value` from the command line."""
    return f'--config.{self.field}={value!r}'


class Space(dict[str, Param]):
  """The searched fields by dotted name, in the order the recipe gives them."""

  def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
    """The config value of each field for `trial`."""
    return {name: param.value(_suggest(trial, name, param.distribution))
            for name, param in self.items()}

  def grid(self) -> dict[str, list[Any]]:
    """Every value of each field, for Optuna's GridSampler; UserError for a continuous one."""
    continuous = [n for n, p in self.items()
                  if isinstance(p.distribution, optuna.distributions.FloatDistribution)]
    if continuous:
      raise UserError(f'--tune.sampler=grid needs a finite set of values per field, but '
                      f'{", ".join(continuous)} {"is" if len(continuous) == 1 else "are"} '
                      "continuous: give them as ('choice', (...)) or use random or bayes.")
    grid = {}
    for name, param in self.items():
      d = param.distribution
      grid[name] = (list(d.choices) if isinstance(d, optuna.distributions.CategoricalDistribution)
                    else list(range(d.low, d.high + 1, d.step)))
    return grid

  def describe(self) -> str:
    """A fixed text of the space, stored with the study so a rerun can check it is the same."""
    return json.dumps({name: optuna.distributions.distribution_to_json(p.distribution)
                       for name, p in self.items()}, sort_keys=True)


def parse(config: ml_collections.ConfigDict) -> Space:
  """`config.search` checked against the rest of `config`; UserError for bad input."""
  search = config.get('search')
  if not search:
    raise UserError('config.search is empty: add the fields to search, e.g. '
                    "search=dict(optim=dict(learning_rate=('log_uniform', 1e-4, 1e-2))) "
                    'in the recipe (see docs/tune.md).')
  space = Space()
  for name, spec in _leaves(search.to_dict() if hasattr(search, 'to_dict') else search):
    try:
      config_lib.field_value(config, name)
    except UserError as e:
      raise UserError(f'config.search: {e}') from None
    space[name] = _param(name, spec)
  return space


def _leaves(tree: dict[str, Any], prefix: str = ''):
  for key, value in tree.items():
    name = prefix + key
    if isinstance(value, dict):
      yield from _leaves(value, name + '.')
    else:
      yield name, value


def _param(name: str, spec: Any) -> Param:
  where = f'config.search.{name}={spec!r}'
  if not (isinstance(spec, (tuple, list)) and spec and spec[0] in KINDS):
    raise UserError(f'{where}: expected (kind, ...) with kind one of {", ".join(KINDS)}'
                    + _did_you_mean(spec))
  kind, *args = spec
  if kind == 'choice':
    if len(args) != 1 or not isinstance(args[0], (tuple, list)) or not args[0]:
      raise UserError(f"{where}: expected ('choice', (value, value, ...)).")
    values = tuple(args[0])
    if all(isinstance(v, _PLAIN) for v in values):
      return Param(name, optuna.distributions.CategoricalDistribution(values))
    return Param(name, optuna.distributions.CategoricalDistribution(
        tuple(repr(v) for v in values)), choices=values)
  if kind == 'int':
    if len(args) not in (2, 3) or not all(isinstance(a, int) for a in args):
      raise UserError(f"{where}: expected ('int', low, high) or ('int', low, high, step), "
                      'integers.')
    low, high, step = (*args, 1) if len(args) == 2 else args
    _check_bounds(where, low, high)
    if step <= 0:
      raise UserError(f'{where}: step {step} must be > 0.')
    return Param(name, optuna.distributions.IntDistribution(low, high, step=step))
  if len(args) != 2 or not all(isinstance(a, (int, float)) and math.isfinite(a) for a in args):
    raise UserError(f"{where}: expected ('{kind}', low, high), finite numbers.")
  low, high = map(float, args)
  _check_bounds(where, low, high)
  if kind == 'log_uniform' and low <= 0:
    raise UserError(f'{where}: a log scale needs low > 0 (got {low}); use uniform, or a '
                    'positive lower bound.')
  return Param(name, optuna.distributions.FloatDistribution(low, high,
                                                            log=kind == 'log_uniform'))


def _check_bounds(where: str, low, high) -> None:
  if low >= high:
    raise UserError(f'{where}: low ({low}) must be below high ({high}).')


def _did_you_mean(spec: Any) -> str:
  if isinstance(spec, (tuple, list)) and spec and isinstance(spec[0], str):
    close = difflib.get_close_matches(spec[0], KINDS, n=1)
    if close:
      return f'; did you mean {close[0]!r}?'
  return '.'


def trial_config(config: ml_collections.ConfigDict, overrides: list[str]
                 ) -> ml_collections.ConfigDict:
  """A copy of `config` without `search`, with each `--config.FIELD=VALUE` of `overrides` applied
  exactly as the command line would (so the printed command reproduces the trial)."""
  trial = ml_collections.ConfigDict(config.to_dict())
  del trial['search']
  trial.lock()
  config_lib.apply_overrides(trial, [config_lib.split_overrides([o])[1][0] for o in overrides])
  return trial


def _suggest(trial: optuna.Trial, name: str,
             distribution: optuna.distributions.BaseDistribution) -> Any:
  if isinstance(distribution, optuna.distributions.FloatDistribution):
    return trial.suggest_float(name, distribution.low, distribution.high, log=distribution.log)
  if isinstance(distribution, optuna.distributions.IntDistribution):
    return trial.suggest_int(name, distribution.low, distribution.high, step=distribution.step)
  return trial.suggest_categorical(name, distribution.choices)

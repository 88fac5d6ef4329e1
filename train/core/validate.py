"""Checks of the config fields every task shares, before any work: a bad value is one line
naming the field, the value and what to do, instead of a traceback or hours of lost training."""

import math
from typing import Any, Callable, Iterable

import jax.numpy as jnp
import ml_collections

from train.core import compat, profiling
from train.core.errors import UserError

_POSITIVE_INTS = ('batch_size', 'eval_batch_size', 'grad_accum_steps', 'log_every_steps',
                  'keep_checkpoints')
_POSITIVE_NUMBERS = ('eval_every_epochs', 'checkpoint_every_epochs')
_NON_NEGATIVE_OPTIM = ('learning_rate', 'warmup_epochs', 'weight_decay', 'grad_clip_norm',
                       'momentum', 'decay_factor')


def check_config(config: ml_collections.ConfigDict,
                 eval_metrics: Iterable[str] = ()) -> None:
  """UserError for the first bad shared field; `eval_metrics` (if known) are the names
  `config.early_stopping.metric` may take."""
  for name in _POSITIVE_INTS:
    if name in config:
      _require(name, config[name], _is_int(config[name]) and config[name] >= 1,
               'a whole number of at least 1')
  for name in _POSITIVE_NUMBERS:
    if name in config:
      _require(name, config[name], _is_number(config[name]) and config[name] > 0,
               'a number above 0')
  if 'num_steps' in config:
    _require('num_steps', config.num_steps, _is_int(config.num_steps) and config.num_steps >= 0,
             'a whole number (0: train for num_epochs)')
  if 'num_epochs' in config and not config.get('num_steps'):
    _require('num_epochs', config.num_epochs,
             _is_number(config.num_epochs) and config.num_epochs > 0,
             'a number of epochs above 0 (or set num_steps)')
  if 'dtype' in config:
    _require('dtype', config.dtype, _is_float_dtype(config.dtype),
             "a float type: 'float32', 'bfloat16' or 'float16'")
  for path, optim in _groups(config, 'optim'):
    for name in _NON_NEGATIVE_OPTIM:
      if name in optim:
        _require(f'{path}.{name}', optim[name], _is_number(optim[name]) and optim[name] >= 0,
                 'a number of at least 0')
  for name in ('compilation_cache', 'remat'):
    if name in config:
      _require(name, config[name], isinstance(config[name], bool), 'true or false')
  if 'profile_steps' in config:
    profiling.check_steps(config.profile_steps)
  if 'early_stopping' in config:
    _check_early_stopping(config.early_stopping, eval_metrics)
  if 'data' in config:
    _check_data(config.data)


def require_unit_images(config: ml_collections.ConfigDict, why: str) -> None:
  """UserError unless `config.data.normalization` is 'none', the images left in [0, 1]; `why`
  says what needs them so."""
  if config.data.normalization != 'none':
    raise UserError(f'config.data.normalization={config.data.normalization!r}: {why}; set '
                    '--config.data.normalization=none')


def _check_early_stopping(stopping: ml_collections.ConfigDict, eval_metrics: Iterable[str]):
  _require('early_stopping.patience', stopping.patience,
           _is_int(stopping.patience) and stopping.patience >= 0,
           'a whole number of evaluations (0: never stop)')
  _require('early_stopping.mode', stopping.mode, stopping.mode in ('max', 'min'),
           "'max' (larger is better) or 'min'")
  _require('early_stopping.min_delta', stopping.min_delta,
           _is_number(stopping.min_delta) and stopping.min_delta >= 0, 'a number of at least 0')
  if eval_metrics:
    check_stopping_metric(stopping, eval_metrics)


def check_stopping_metric(stopping: ml_collections.ConfigDict, eval_metrics: Iterable[str]):
  """UserError unless early stopping watches one of `eval_metrics`."""
  names = sorted(eval_metrics)
  if stopping.metric not in names:
    raise UserError(f'config.early_stopping.metric={stopping.metric!r} is not an eval metric '
                    f'of this task; use one of {", ".join(names)}.')


def _check_data(data: ml_collections.ConfigDict) -> None:
  _require('data.dataset', data.dataset, isinstance(data.dataset, str) and data.dataset.strip()
           and data.dataset.strip() == data.dataset,
           "a TFDS name (e.g. 'mnist') or 'folder:/path/to/images'")
  size = tuple(data.image_size)
  _require('data.image_size', size, size == () or (
      len(size) == 2 and all(_is_int(n) and n >= 1 for n in size)),
           '(height, width) of at least 1 each, or () for the dataset\'s own size')
  _require('data.shards', data.shards, _is_int(data.shards) and data.shards >= 0,
           'a whole number (0: one stream per process)')
  if 'shuffle_buffer' in data:
    _require('data.shuffle_buffer', data.shuffle_buffer,
             _is_int(data.shuffle_buffer) and data.shuffle_buffer >= 1, 'a whole number >= 1')


def _groups(config: ml_collections.ConfigDict, name: str, prefix: str = ''):
  """Every sub-config called `name` (e.g. each network's `optim`), with its dotted path."""
  for key, value in config.items():
    # `search` (train.tune's search space) holds distributions, not values.
    if isinstance(value, ml_collections.ConfigDict) and key != 'search':
      path = f'{prefix}{key}'
      if key == name:
        yield path, value
      else:
        yield from _groups(value, name, path + '.')


def _require(field: str, value: Any, ok: Any, expected: str) -> None:
  if not ok:
    raise UserError(f'config.{field}={value!r}: expected {expected}; set '
                    f'--config.{field} to one.')


def _is_int(value: Any) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
  return _is_int(value) or (isinstance(value, float) and math.isfinite(value))


def _is_float_dtype(name: Any) -> bool:
  try:
    return jnp.issubdtype(jnp.dtype(name), jnp.floating)
  except TypeError:
    return False


def abstract_model_state(make: Callable[[], Any], config: ml_collections.ConfigDict) -> Any:
  """`make()` (the abstract train state), or a UserError naming the model's fields if they
  cannot build it or make empty parameters (a width of 0), which would train to nothing."""
  kwargs = config.get('model_kwargs')
  given = (f'config.model_kwargs={kwargs.to_dict()!r}' if kwargs else
           f'config.model={config.get("model")!r}')
  try:
    abstract = make()
  except (ZeroDivisionError, ValueError, TypeError) as e:
    raise UserError(f'{given} cannot build the model ({type(e).__name__}: '
                    f'{str(e).splitlines()[0] if str(e) else ""}): fix it.') from None
  for path, shape in compat.shapes(abstract).items():
    if 0 in shape:
      raise UserError(f'{given} makes {path} of shape {shape}: every width must be at least 1; '
                      'fix it.')
  return abstract

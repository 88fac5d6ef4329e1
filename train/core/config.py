"""Config files (`get_config()` returning an ml_collections ConfigDict) and their overrides.

A config is named as `path/to/file.py` or `path/to/file.py:ARG` (ARG goes to `get_config(ARG)`).
Overrides are `--config.a.b=value` (or `--config.a.b value`); each must name an existing field,
and the value is parsed to that field's type. Groups listed in OPEN_GROUPS (the model's own
dataclass fields) take new names too, parsed as Python literals; the model checks them.
"""

import ast
import difflib
import importlib.util
import inspect
import os
from typing import Any, Sequence

import ml_collections

from train.core.errors import UserError

_PREFIX = '--config.'
OPEN_GROUPS = ('model_kwargs',)


def load_config(spec: str, flag: str = '--config') -> ml_collections.ConfigDict:
  """Imports the config file in `spec` ('file.py' or 'file.py:arg') and calls its get_config;
  errors name the command-line `flag` that gave it."""
  path, _, arg = spec.partition(':')
  if not os.path.isfile(path):
    where = ' (recipes live in configs/)' if flag == '--config' else ''
    raise UserError(f'{flag}: no such config file {path!r}{where}')
  module_spec = importlib.util.spec_from_file_location('_zoo_config', path)
  module = importlib.util.module_from_spec(module_spec)
  try:
    module_spec.loader.exec_module(module)
  except SyntaxError as e:
    raise UserError(f'{flag}: {path} line {e.lineno}: {e.msg}; fix the file.') from None
  except Exception as e:  # pylint: disable=broad-except  (any error of the user's file)
    raise UserError(f'{flag}: {path} fails to import ({type(e).__name__}: {e}); fix the '
                    'file.') from None
  if not callable(getattr(module, 'get_config', None)):
    raise UserError(f'{flag}: {path} defines no get_config() function')
  if arg and not inspect.signature(module.get_config).parameters:
    raise UserError(f'{flag} {spec}: {path} takes no argument after ":"; use {flag} {path}')
  try:
    config = module.get_config(arg) if arg else module.get_config()
  except (ValueError, TypeError) as e:  # a bad or unexpected ':arg'
    raise UserError(f'{flag}: {e}' if path in str(e) else f'{flag} {spec}: {e}') from None
  if not isinstance(config, ml_collections.ConfigDict):
    raise UserError(f'{flag}: get_config() in {path} returned a {type(config).__name__}; '
                    'return an ml_collections.ConfigDict (e.g. ConfigDict(your_dict)).')
  config.lock()  # assignments to fields that do not exist fail from here on
  return config


def split_overrides(argv: Sequence[str], prefix: str = _PREFIX
                    ) -> tuple[list[str], list[tuple[str, str]]]:
  """Separates `--config.x=v` / `--config.x v` overrides (or those of another `prefix`) from the
  other arguments."""
  rest, overrides = [], []
  args = list(argv)
  while args:
    arg = args.pop(0)
    if not arg.startswith(prefix):
      rest.append(arg)
      continue
    name, has_value, value = arg[len(prefix):].partition('=')
    if not has_value:
      if not args:
        raise UserError(f'{prefix}{name}: missing value')
      value = args.pop(0)
    overrides.append((name, value))
  return rest, overrides


def apply_overrides(config: ml_collections.ConfigDict,
                    overrides: Sequence[tuple[str, str]]) -> None:
  """Sets each dotted field to its parsed value; unknown fields and bad values raise UserError."""
  for dotted, text in overrides:
    *parents, leaf = dotted.split('.')
    if '.'.join(parents) in OPEN_GROUPS and leaf not in config['.'.join(parents)]:
      with config.unlocked():
        config['.'.join(parents)][leaf] = _literal(text)
      continue
    node = config
    for depth, key in enumerate(parents + [leaf]):
      if not isinstance(node, ml_collections.ConfigDict) or key not in node:
        raise UserError(_unknown_field_message(dotted, '.'.join(parents[:depth]), node))
      if depth < len(parents):
        node = node[key]
    value = _parse_like(node[leaf], text, dotted)
    try:
      node[leaf] = value
    except (TypeError, ValueError) as e:
      raise UserError(f'--config.{dotted}={text}: {e}') from None


def field_value(config: ml_collections.ConfigDict, dotted: str) -> Any:
  """The value of the dotted field (None for a new name in an OPEN_GROUPS group); UserError
  naming an unknown field, with the closest known name."""
  *parents, leaf = dotted.split('.')
  node = config
  for depth, key in enumerate(parents + [leaf]):
    if depth == len(parents) and '.'.join(parents) in OPEN_GROUPS:
      return node.get(key)
    if not isinstance(node, ml_collections.ConfigDict) or key not in node:
      raise UserError(_unknown_field_message(dotted, '.'.join(parents[:depth]), node))
    node = node[key]
  return node


def _unknown_field_message(dotted: str, parent: str, node: Any) -> str:
  where = f'config.{parent}' if parent else 'config'
  if not isinstance(node, ml_collections.ConfigDict):
    return f'unknown config field {dotted!r}: {where} is a value, not a group of fields'
  known = sorted(node.keys())
  close = difflib.get_close_matches(dotted.split('.')[-1], known, n=1)
  hint = f'; did you mean {close[0]!r}?' if close else f'; {where} has: {", ".join(known)}'
  return f'unknown config field {dotted!r}{hint}'


def _parse_like(current: Any, text: str, dotted: str) -> Any:
  """Parses `text` into the type of the field's current value."""
  if isinstance(current, bool):
    if text.lower() in ('true', '1', 'yes'):
      return True
    if text.lower() in ('false', '0', 'no'):
      return False
    raise UserError(f'--config.{dotted}={text}: expected true or false')
  if isinstance(current, (int, float)):
    try:
      number = float(text) if isinstance(current, float) else int(text)
    except ValueError:
      kind = type(current).__name__
      raise UserError(f'--config.{dotted}={text}: expected a number ({kind})') from None
    return number
  if isinstance(current, str):
    return text
  if isinstance(current, (tuple, list)):
    parsed = _literal(text if text.strip().startswith(('(', '[')) else f'({text},)')
    if not isinstance(parsed, (tuple, list)):
      raise UserError(f'--config.{dotted}={text}: expected a comma-separated list')
    return type(current)(parsed)
  return _literal(text)


def _literal(text: str) -> Any:
  """A Python literal if `text` is one, else the text itself."""
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text

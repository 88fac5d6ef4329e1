"""A timm-style registry: `create_model(name, **overrides)` and `list_models(pattern)`."""

import dataclasses
import difflib
import fnmatch
from typing import Any, Callable

import flax.linen as nn


@dataclasses.dataclass(frozen=True)
class ModelInfo:
  """What a registered model is and the input it expects by default."""
  name: str
  constructor: Callable[..., nn.Module]
  input_shape: tuple[int, int, int]  # (height, width, channels) of one example
  description: str = ''


_REGISTRY: dict[str, ModelInfo] = {}


def register_model(name: str, constructor: Callable[..., nn.Module], *,
                   input_shape: tuple[int, int, int], description: str = '') -> None:
  """Adds `constructor` (a module class or a `functools.partial` of one) under `name`."""
  if name in _REGISTRY:
    raise ValueError(f'model {name!r} is already registered')
  _REGISTRY[name] = ModelInfo(name, constructor, tuple(input_shape), description)


def model_info(name: str) -> ModelInfo:
  """The registry entry of `name`; a clear error naming close matches if unknown."""
  if name not in _REGISTRY:
    close = difflib.get_close_matches(name, list(_REGISTRY), n=3)
    hint = f' Did you mean {", ".join(close)}?' if close else ''
    raise ValueError(f'unknown model {name!r}.{hint} See zoo.list_models().')
  return _REGISTRY[name]


def create_model(name: str, **overrides: Any) -> nn.Module:
  """Builds the model registered as `name`, with dataclass fields overridden by keyword."""
  info = model_info(name)
  try:
    return info.constructor(**overrides)
  except TypeError as e:  # an unknown field name
    raise TypeError(f'create_model({name!r}): {e}') from None


def list_models(pattern: str = '*') -> list[str]:
  """Registered model names matching a shell-style pattern, sorted."""
  return sorted(n for n in _REGISTRY if fnmatch.fnmatchcase(n, pattern))

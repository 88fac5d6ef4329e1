"""A timm-style registry: `create_model(name, **overrides)` and `list_models(pattern)`.

Each model is one constructor function, registered by decorating it; its name is the model's:

  @register_model(kind='classifier', input_shape=(224, 224, 3), description='ResNet-50 v1.5')
  def resnet50(**overrides) -> ResNet:
    return ResNet(stage_sizes=(3, 4, 6, 3), block_cls=Bottleneck, **overrides)
"""

import dataclasses
import difflib
import fnmatch
from typing import Any, Callable, TypeVar

import flax.linen as nn

# What a model maps, which tells a trainer or a tool how to drive it.
KINDS = {
    'classifier': 'images -> logits (B, num_classes)',
    'generator': 'noise (B, latent_dim) -> images',
    'discriminator': 'images -> one logit per image (B,)',
    'autoencoder': 'images -> reconstruction and latent statistics',
    'density': 'images -> per-pixel distribution parameters (autoregressive likelihood)',
    'upsampler': 'images -> images at a higher resolution',
    'segmenter': 'images -> per-pixel logits (B, H, W, num_classes)',
}


@dataclasses.dataclass(frozen=True)
class ModelInfo:
  """What a registered model is and the input it expects by default."""
  name: str
  constructor: Callable[..., nn.Module]
  kind: str
  input_shape: tuple[int, ...]  # one example: (height, width, channels), or (latent_dim,)
  description: str = ''


_REGISTRY: dict[str, ModelInfo] = {}
Constructor = TypeVar('Constructor', bound=Callable[..., nn.Module])


def register_model(*, kind: str, input_shape: tuple[int, ...],
                   description: str = '') -> Callable[[Constructor], Constructor]:
  """Registers the decorated constructor under its function name."""
  if kind not in KINDS:
    raise ValueError(f'kind {kind!r} is not one of {sorted(KINDS)}')

  def register(constructor: Constructor) -> Constructor:
    name = constructor.__name__
    if name in _REGISTRY:
      raise ValueError(f'model {name!r} is already registered')
    _REGISTRY[name] = ModelInfo(name, constructor, kind, tuple(input_shape), description)
    return constructor

  return register


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


def list_models(pattern: str = '*', kind: str | None = None) -> list[str]:
  """Registered model names matching a shell-style pattern (and `kind`, if given), sorted."""
  return sorted(n for n, info in _REGISTRY.items()
                if fnmatch.fnmatchcase(n, pattern) and kind in (None, info.kind))

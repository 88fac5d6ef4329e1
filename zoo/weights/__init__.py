"""Weights from other frameworks (torchvision, timm, Keras) converted onto zoo models.

  model, variables = zoo.load_pretrained('resnet50', 'resnet50.pth')         # torchvision
  model, variables = zoo.load_pretrained('resnet50', 'resnet50.weights.h5')  # Keras: v1, eps
  zoo.save_pretrained('resnet50.msgpack', 'resnet50', model_overrides, variables)

A file is read into a flat {key: array} dict (`zoo.weights.files`); the model's family module
`zoo/weights/<family>.py` (the module of its registered constructor, `zoo/<family>.py`) converts
it. A family module exposes:

  SOURCES: tuple[str, ...]  # of 'torchvision', 'timm', 'keras' (and 'pytorch_fid')
  def overrides(model_name, source, tensors) -> dict  # fields the weights need (epsilon, ...)
  def rule(model_name, source) -> mapping.Rule        # where each variable comes from
and optionally
  def ignored(model_name, source) -> tuple[str, ...]  # fnmatch patterns of unused keys
  def detect_source(model_name, tensors) -> str       # when keys alone tell the sources apart
  def config(model_name, source, base) -> PretrainedConfig  # its input preprocessing
"""

import dataclasses
import importlib
import json
import os
from types import ModuleType
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import serialization

from zoo.registry import create_model, model_info
from zoo.weights import files, mapping
from zoo.weights.mapping import ConversionError

FORMAT_VERSION = 1


def family(name: str, required: bool = True) -> ModuleType | None:
  """The converter module of model `name`: zoo/weights/<family>.py for zoo/<family>.py."""
  module = model_info(name).constructor.__module__.rsplit('.', 1)[-1]
  try:
    return importlib.import_module(f'zoo.weights.{module}')
  except ModuleNotFoundError as e:
    if required and e.name == f'zoo.weights.{module}':
      raise ConversionError(f'{name}: zoo has no converter for other frameworks\' weights of '
                            f'this model (no zoo/weights/{module}.py)') from None
    if required:
      raise
    return None


def input_shape(model: nn.Module, name: str) -> tuple[int, int, int]:
  """The input shape `model` (of registered name `name`) takes: the registered one, or square
  images of its `image_size` where that is a field (a ViT's position embeddings follow it)."""
  shape = model_info(name).input_shape
  size = getattr(model, 'image_size', None)
  return (size, size, shape[-1]) if isinstance(size, int) else shape


def abstract_variables(model: nn.Module, name: str) -> dict[str, Any]:
  """The shapes of `model`'s variables on its input shape (no FLOPs, no memory)."""
  x = jax.ShapeDtypeStruct((1, *input_shape(model, name)), jnp.float32)
  def init(x):  # keys made inside: made outside, they would be computed (and compiled) eagerly
    rngs = {'params': jax.random.key(0), 'dropout': jax.random.key(0)}
    return model.init(rngs, x, train=False)
  return jax.eval_shape(init, x)


def convert(name: str, tensors: Mapping[str, np.ndarray], source: str,
            **overrides: Any) -> tuple[nn.Module, dict[str, Any]]:
  """(model, variables) from `source`'s tensors {key: array}; `overrides` win over the
  fields the weights need. Raises `ConversionError` naming the first key that does not fit."""
  converter = family(name)
  if source not in converter.SOURCES:
    raise ConversionError(f'{name}: zoo converts its weights from {", ".join(converter.SOURCES)},'
                          f' not {source!r}')
  fields = {**converter.overrides(name, source, tensors), **overrides}
  model = create_model(name, **fields)
  ignored = ('*num_batches_tracked',)
  if hasattr(converter, 'ignored'):
    ignored += tuple(converter.ignored(name, source))
  layout = mapping.keras_layout if source == 'keras' else mapping.torch_layout
  variables = mapping.map_variables(abstract_variables(model, name), tensors,
                                    converter.rule(name, source), source=source, layout=layout,
                                    ignored=ignored)
  # device_put, not jnp.asarray: under JAX 0.10, jnp.asarray of a NumPy array compiles an identity
  # program for each new shape (0.8 s for the 28 shapes of a ResNet-50's 267 arrays).
  return model, jax.device_put(variables)


def _candidate_sources(name: str, fmt: str, tensors: Mapping[str, np.ndarray],
                       source: str | None, path: str) -> list[str]:
  converter = family(name)
  possible = [s for s in files.FORMAT_SOURCES[fmt] if s in converter.SOURCES]
  if source is not None:
    if source not in files.FORMAT_SOURCES[fmt]:
      raise ConversionError(f'{path}: a {fmt} file cannot hold {source!r} weights')
    return [source]
  if not possible:
    raise ConversionError(f'{path}: zoo reads {name} weights from '
                          f'{", ".join(converter.SOURCES)}, none of which writes {fmt} files')
  if len(possible) > 1 and hasattr(converter, 'detect_source'):
    return [converter.detect_source(name, tensors)]
  return possible


def load_pretrained(name: str, path: str | os.PathLike, *, source: str | None = None,
                    with_config: bool = False, **overrides: Any):
  """Model `name` and its variables ({'params', 'batch_stats'}) from a weight file.

  Reads torch state dicts (.pth), timm .safetensors, Keras .h5 / .weights.h5 and zoo's own
  .msgpack (`save_pretrained`; needs no torch or keras). The source is told by the extension
  and the keys (`source=` forces it). The model is configured as the source's weights need (for
  Keras' ResNet50: v1 strides, conv biases, BatchNorm epsilon 1.001e-5); `overrides` set other
  fields (e.g. dtype). Returns (model, variables), or (model, variables, PretrainedConfig) with
  `with_config=True`. A missing file, an unknown format or weights of another architecture
  raise `ConversionError` (a ValueError) in one line naming the file or the first key.
  """
  path = os.fspath(path)
  fmt = files.file_format(path)
  if fmt == 'zoo':
    model, variables, source = _load_zoo(name, path, overrides)
  else:
    _, tensors = files.read_tensors(path)
    candidates = _candidate_sources(name, fmt, tensors, source, path)
    errors = []
    for candidate in candidates:
      try:
        model, variables = convert(name, tensors, candidate, **overrides)
        source = candidate
        break
      except ConversionError as e:
        errors.append(e)
    else:
      raise ConversionError(f'{path}: {errors[0]}') from None
  if not with_config:
    return model, variables
  from zoo.pretrained_config import pretrained_config  # pylint: disable=import-outside-toplevel

  config = pretrained_config(name, source, num_classes=model.num_classes)
  return model, variables, dataclasses.replace(config, input_size=input_shape(model, name))


def _json_value(field: str, value: Any) -> Any:
  if isinstance(value, (bool, int, float, str)) or value is None:
    return value
  if isinstance(value, (tuple, list)):
    return [_json_value(field, v) for v in value]
  raise ValueError(f'save_pretrained: model field {field}={value!r} cannot be saved (only '
                   'numbers, strings, booleans and sequences of them); pass it to '
                   'load_pretrained as an override instead')


def save_pretrained(path: str | os.PathLike, name: str, model_overrides: Mapping[str, Any],
                    variables: Mapping[str, Any], *, source: str = 'torchvision') -> None:
  """Writes `variables` and the model config (`name`, `model_overrides`, the weights' `source`
  for their preprocessing) to one .msgpack file that `load_pretrained` reads back."""
  path = os.fspath(path)
  if not path.endswith('.msgpack'):
    raise ValueError(f'save_pretrained: {path!r} must end in .msgpack')
  config = {'model': name, 'source': source,
            'overrides': {k: _json_value(k, v) for k, v in model_overrides.items()}}
  state = {'zoo_format': FORMAT_VERSION, 'config': json.dumps(config),
           'variables': jax.tree.map(np.asarray, dict(variables))}
  with open(path, 'wb') as f:
    f.write(serialization.msgpack_serialize(state))


def _tuples(value: Any) -> Any:
  return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def _load_zoo(name: str, path: str, overrides: Mapping[str, Any]):
  with open(path, 'rb') as f:
    state = serialization.msgpack_restore(f.read())
  if not isinstance(state, dict) or state.get('zoo_format') != FORMAT_VERSION:
    raise ConversionError(f'{path}: not a file written by zoo.save_pretrained')
  config = json.loads(state['config'])
  if config['model'] != name:
    raise ConversionError(f'{path}: holds {config["model"]} weights, not {name}')
  fields = {k: _tuples(v) for k, v in config['overrides'].items()}
  model = create_model(name, **{**fields, **overrides})
  flat = {'/'.join((collection, *(k.key for k in key_path))): leaf
          for collection, tree in state['variables'].items()
          for key_path, leaf in jax.tree_util.tree_leaves_with_path(tree)}
  variables = mapping.map_variables(
      abstract_variables(model, name), flat, lambda collection, p: '/'.join((collection, *p)),
      source='zoo', layout=mapping.keras_layout)
  return model, jax.device_put(variables), config['source']


__all__ = ['ConversionError', 'convert', 'family', 'load_pretrained', 'save_pretrained']

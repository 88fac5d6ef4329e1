"""Mapping another framework's weights onto a zoo model's variables.

A weight file is read into `tensors`: a flat {name: np.ndarray} dict with the source's own names
(torch state-dict keys such as 'layer1.0.conv1.weight'; Keras weight paths such as
'conv1_conv/kernel'). For each model family and source, a converter gives a `Rule`: for every
variable of the zoo model, identified by its collection ('params' or 'batch_stats') and its path
in the variable tree, where its value comes from:
  - a source key (str): that tensor, moved to flax's layout by the source's `Layout`;
  - a function of a `Tensors`: for weights the source fuses, splits or reshapes (ViT's qkv, a
    class token), reading what it needs through `Tensors.take`.

`map_variables` walks the model's variables, applies the rule, checks every shape and that every
source tensor was used (but `ignored` ones), and raises `ConversionError` naming the first problem
in one line.
"""

import fnmatch
from typing import Any, Callable, Iterable, Mapping

import jax
import numpy as np


class ConversionError(ValueError):
  """The weights do not fit the model; the message names the key, both shapes and what to do."""


Path = tuple[str, ...]


class Tensors:
  """Read access to a source's tensors that records which were used."""

  def __init__(self, tensors: Mapping[str, np.ndarray], source: str):
    self._tensors = tensors
    self.source = source
    self.used: set[str] = set()

  def __contains__(self, key: str) -> bool:
    return key in self._tensors

  def take(self, key: str) -> np.ndarray:
    if key not in self._tensors:
      close = [k for k in self._tensors if k.rsplit('.', 1)[-1] == key.rsplit('.', 1)[-1]][:3]
      hint = f' (it has e.g. {", ".join(map(repr, close))})' if close else ''
      raise ConversionError(f'the {self.source} weights have no {key!r}{hint}')
    self.used.add(key)
    return np.asarray(self._tensors[key])

  def keys(self) -> Iterable[str]:
    return self._tensors.keys()


def torch_layout(path: Path, value: np.ndarray) -> np.ndarray:
  """PyTorch -> flax: conv (O, I, kh, kw) -> (kh, kw, I, O); linear (O, I) -> (I, O)."""
  if path[-1] == 'kernel':
    if value.ndim == 4:
      return value.transpose(2, 3, 1, 0)
    if value.ndim == 2:
      return value.T
  return value


def keras_layout(path: Path, value: np.ndarray) -> np.ndarray:
  """Keras stores conv (kh, kw, I, O) and dense (I, O) kernels as flax does."""
  del path
  return value


def keras_depthwise(value: np.ndarray) -> np.ndarray:
  """Keras' DepthwiseConv2D kernel (kh, kw, C, 1) -> flax's grouped conv (kh, kw, 1, C)."""
  return value.transpose(0, 1, 3, 2)


Layout = Callable[[Path, np.ndarray], np.ndarray]
Rule = Callable[[str, Path], 'str | Callable[[Tensors], np.ndarray]']


class RuleIgnoring:
  """A rule that also names source tensors with no place in the model (`fnmatch` patterns):
  layers zoo leaves out of the model, such as Keras' input-normalization layers. `map_variables`
  adds them to its `ignored`."""

  def __init__(self, rule: Rule, ignored: Iterable[str]):
    self._rule = rule
    self.ignored = tuple(ignored)

  def __call__(self, collection: str, path: Path) -> 'str | Callable[[Tensors], np.ndarray]':
    return self._rule(collection, path)


def torch_batch_norm(collection: str, prefix: str, leaf: str) -> str:
  """The torch key of a flax BatchNorm variable whose torch module is `prefix`."""
  names = {('params', 'scale'): 'weight', ('params', 'bias'): 'bias',
           ('batch_stats', 'mean'): 'running_mean', ('batch_stats', 'var'): 'running_var'}
  return f'{prefix}.{names[collection, leaf]}'


def keras_batch_norm(collection: str, layer: str, leaf: str) -> str:
  """The Keras key ('<layer>/<weight>') of a flax BatchNorm variable whose Keras layer is `layer`."""
  names = {('params', 'scale'): 'gamma', ('params', 'bias'): 'beta',
           ('batch_stats', 'mean'): 'moving_mean', ('batch_stats', 'var'): 'moving_variance'}
  return f'{layer}/{names[collection, leaf]}'


def map_variables(target: Any, tensors: Mapping[str, np.ndarray], rule: Rule, *,
                  source: str, layout: Layout,
                  ignored: Iterable[str] = ('*num_batches_tracked',)) -> dict[str, Any]:
  """The model's variables filled from `tensors` by `rule`.

  `target` is the model's variable tree or its shapes (`jax.eval_shape` of `init`). Values come
  back as float32 numpy arrays in the same tree structure.
  """
  ignored = (*ignored, *getattr(rule, 'ignored', ()))
  reader = Tensors(tensors, source)
  variables = {}
  for collection, tree in target.items():
    leaves = []
    for key_path, leaf in jax.tree_util.tree_leaves_with_path(tree):
      path = tuple(k.key for k in key_path)
      where = rule(collection, path)
      if isinstance(where, str):
        value = layout(path, reader.take(where))
        name = repr(where)
      else:
        value = where(reader)
        name = f'the tensors for {"/".join(path)}'
      value = np.asarray(value, np.float32)
      if value.shape != tuple(leaf.shape):
        raise ConversionError(
            f'{source} weights: {name} has shape {value.shape} in flax layout, but '
            f'{collection}/{"/".join(path)} of the model needs {tuple(leaf.shape)}; the file is '
            f'for another architecture or size: check the model name and its options')
      leaves.append(value)
    variables[collection] = jax.tree.unflatten(jax.tree.structure(tree), leaves)
  unused = [k for k in reader.keys() if k not in reader.used
            and not any(fnmatch.fnmatchcase(k, pattern) for pattern in ignored)]
  if unused:
    more = f' and {len(unused) - 1} more' if len(unused) > 1 else ''
    verb = 'have' if more else 'has'
    raise ConversionError(f'{source} weights: {unused[0]!r}{more} {verb} no place in the model; '
                          'the file is for another architecture or size: check the model name '
                          'and its options')
  return variables

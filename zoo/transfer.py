"""Transfer learning helpers that need nothing but jax and flax.

  model, variables = zoo.load_pretrained('resnet50', 'resnet50.pth')
  model, variables = replace_head(model, variables, num_classes=5, rng=key,
                                  input_shape=(224, 224, 3))   # new head, the rest copied
  labels = freeze_labels(variables['params'])                 # 'train' for the head only
  tx = optax.multi_transform({'train': optax.adam(1e-3), 'frozen': optax.set_to_zero()}, labels)
  ...
  new_variables = keep_batch_stats(new_variables, variables)  # frozen running statistics

Every zoo classifier names its last Dense layer `head` (`HEAD`).
"""

from typing import Any, Iterable

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import traverse_util

HEAD = 'head'
Variables = dict[str, Any]


def transfer_variables(target: Variables, source: Variables, *,
                       exclude: Iterable[str] = (HEAD,)) -> tuple[Variables, dict[str, list[str]]]:
  """`target` with every array of `source` at the same path and shape, except under the
  top-level modules in `exclude`; and what was not copied, {reason: ['params/head/bias', ...]}.
  """
  exclude = set(exclude)
  flat_source = traverse_util.flatten_dict(source, sep='/')
  merged, skipped = {}, {}
  for path, value in traverse_util.flatten_dict(target, sep='/').items():
    old = flat_source.get(path)
    if path.split('/')[1] in exclude:
      reason = 'excluded'
    elif old is None:
      reason = 'not in the source'
    elif old.shape != value.shape:
      reason = 'other shape'
    else:
      merged[path] = jnp.asarray(old, value.dtype)
      continue
    merged[path] = value
    skipped.setdefault(reason, []).append(path)
  return traverse_util.unflatten_dict(merged, sep='/'), skipped


def replace_head(model: nn.Module, variables: Variables, num_classes: int, rng: jax.Array,
                 input_shape: tuple[int, ...]) -> tuple[nn.Module, Variables]:
  """`model` with a freshly initialized `head` of `num_classes` outputs (0: no head, pooled
  features), every other variable copied from `variables`."""
  model = model.clone(num_classes=num_classes)
  fresh = model.init({'params': rng, 'dropout': rng}, jnp.zeros((1, *input_shape)), train=False)
  merged, skipped = transfer_variables(fresh, variables)
  missing = {k: v for k, v in skipped.items() if k != 'excluded'}
  if missing:
    raise ValueError(f'replace_head: variables do not fit the model: {missing}')
  return model, merged


def freeze_labels(params: Variables, trainable: Iterable[str] = (HEAD,)) -> dict[str, str]:
  """Labels for `optax.multi_transform`: 'train' for the top-level modules in `trainable`,
  'frozen' for the rest (pair it with `optax.set_to_zero()`). A prefix of the parameter tree:
  one label covers all arrays of a module."""
  trainable = set(trainable)
  unknown = trainable - set(params)
  if unknown:
    raise ValueError(f'freeze_labels: no module {min(unknown)!r} in the parameters; '
                     f'they have {", ".join(params)}')
  return {name: 'train' if name in trainable else 'frozen' for name in params}


def keep_batch_stats(new_variables: Variables, old_variables: Variables) -> Variables:
  """`new_variables` with the BatchNorm running statistics of `old_variables`: a frozen backbone
  keeps its pretrained statistics although train-mode steps update them."""
  if 'batch_stats' not in old_variables:
    return new_variables
  return {**new_variables, 'batch_stats': old_variables['batch_stats']}

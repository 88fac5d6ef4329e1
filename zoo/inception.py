"""Inception-v3 (Szegedy et al. 2016) in the variant that FID and the Inception Score use.

This is the network of the 2015 TensorFlow graph (`pool_3`, 2048-d, and 1008 logits) as
pytorch-fid rebuilds it on torchvision's Inception3: the same layers, with the graph's pooling in
the Mixed blocks (average pools that exclude the padding; a max pool in the last block's pool
branch). With the standard FID weights (`load_torch_state_dict` on pytorch-fid's
`pt_inception-2015-12-05` state dict) it computes the features every FID in the literature uses.

Input: NHWC images in [-1, 1] (pytorch-fid maps its [0, 1] input to this range), at least 75x75;
FID resizes to 299x299 first (`train.feature_nets`). Sows 'stage1'..'stage5' (strides 2, 4, 8,
16, 32: Conv2d_2b, Conv2d_4a, Mixed_5d, Mixed_6e, Mixed_7c) and 'pooled' (the 2048-d global
average pool, FID's features); returns the logits of the Dense `head` (torchvision's `fc`).

Submodules carry torchvision's names (`Mixed_6b/branch7x7_2/conv`), so a PyTorch state dict maps
onto the parameters name by name.
"""

import functools
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from zoo import features
from zoo.classifier_layers import classifier_head
from zoo.registry import register_model


class BasicConv(nn.Module):
  """torchvision's BasicConv2d: convolution without bias, BatchNorm (eps 1e-3), ReLU."""
  features: int
  kernel_size: tuple[int, int]
  strides: int = 1
  padding: tuple[int, int] = (0, 0)
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    ph, pw = self.padding
    x = nn.Conv(self.features, self.kernel_size, strides=self.strides,
                padding=((ph, ph), (pw, pw)), use_bias=False, dtype=self.dtype,
                param_dtype=self.param_dtype, name='conv')(x)
    x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-3,
                     dtype=self.dtype, param_dtype=self.param_dtype, name='bn')(x)
    return nn.relu(x)


def _conv(parent: nn.Module, x: jax.Array, name: str, features: int, kernel: int | tuple,
          strides: int = 1, padding: tuple[int, int] = (0, 0), *, train: bool) -> jax.Array:
  """A `BasicConv` named `name` inside `parent` (call it from `parent`'s compact method)."""
  kernel = (kernel, kernel) if isinstance(kernel, int) else kernel
  return BasicConv(features, kernel, strides, padding, dtype=parent.dtype,
                   param_dtype=parent.param_dtype, name=name)(x, train=train)


def _avg_pool(x: jax.Array) -> jax.Array:
  """3x3, stride 1, padded, averaging over the real pixels only (the TF graph's pooling)."""
  return nn.avg_pool(x, (3, 3), padding=((1, 1), (1, 1)), count_include_pad=False)


def _max_pool(x: jax.Array, strides: int) -> jax.Array:
  padding = ((1, 1), (1, 1)) if strides == 1 else 'VALID'
  return nn.max_pool(x, (3, 3), strides=(strides, strides), padding=padding)


class InceptionA(nn.Module):
  pool_features: int
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    c = functools.partial(_conv, self, train=train)
    b1 = c(x, 'branch1x1', 64, 1)
    b5 = c(c(x, 'branch5x5_1', 48, 1), 'branch5x5_2', 64, 5, padding=(2, 2))
    bd = c(x, 'branch3x3dbl_1', 64, 1)
    bd = c(bd, 'branch3x3dbl_2', 96, 3, padding=(1, 1))
    bd = c(bd, 'branch3x3dbl_3', 96, 3, padding=(1, 1))
    bp = c(_avg_pool(x), 'branch_pool', self.pool_features, 1)
    return jnp.concatenate([b1, b5, bd, bp], -1)


class InceptionB(nn.Module):
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    c = functools.partial(_conv, self, train=train)
    b3 = c(x, 'branch3x3', 384, 3, strides=2)
    bd = c(x, 'branch3x3dbl_1', 64, 1)
    bd = c(bd, 'branch3x3dbl_2', 96, 3, padding=(1, 1))
    bd = c(bd, 'branch3x3dbl_3', 96, 3, strides=2)
    return jnp.concatenate([b3, bd, _max_pool(x, 2)], -1)


class InceptionC(nn.Module):
  channels_7x7: int
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    c = functools.partial(_conv, self, train=train)
    c7 = self.channels_7x7
    b1 = c(x, 'branch1x1', 192, 1)
    b7 = c(x, 'branch7x7_1', c7, 1)
    b7 = c(b7, 'branch7x7_2', c7, (1, 7), padding=(0, 3))
    b7 = c(b7, 'branch7x7_3', 192, (7, 1), padding=(3, 0))
    bd = c(x, 'branch7x7dbl_1', c7, 1)
    bd = c(bd, 'branch7x7dbl_2', c7, (7, 1), padding=(3, 0))
    bd = c(bd, 'branch7x7dbl_3', c7, (1, 7), padding=(0, 3))
    bd = c(bd, 'branch7x7dbl_4', c7, (7, 1), padding=(3, 0))
    bd = c(bd, 'branch7x7dbl_5', 192, (1, 7), padding=(0, 3))
    bp = c(_avg_pool(x), 'branch_pool', 192, 1)
    return jnp.concatenate([b1, b7, bd, bp], -1)


class InceptionD(nn.Module):
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    c = functools.partial(_conv, self, train=train)
    b3 = c(c(x, 'branch3x3_1', 192, 1), 'branch3x3_2', 320, 3, strides=2)
    b7 = c(x, 'branch7x7x3_1', 192, 1)
    b7 = c(b7, 'branch7x7x3_2', 192, (1, 7), padding=(0, 3))
    b7 = c(b7, 'branch7x7x3_3', 192, (7, 1), padding=(3, 0))
    b7 = c(b7, 'branch7x7x3_4', 192, 3, strides=2)
    return jnp.concatenate([b3, b7, _max_pool(x, 2)], -1)


class InceptionE(nn.Module):
  """The last blocks; the graph's second one (`max_pool=True`) max-pools its pool branch."""
  max_pool: bool = False
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    c = functools.partial(_conv, self, train=train)

    def split(y, prefix):  # 1x3 and 3x1 side by side
      return jnp.concatenate([c(y, f'{prefix}a', 384, (1, 3), padding=(0, 1)),
                              c(y, f'{prefix}b', 384, (3, 1), padding=(1, 0))], -1)

    b1 = c(x, 'branch1x1', 320, 1)
    b3 = split(c(x, 'branch3x3_1', 384, 1), 'branch3x3_2')
    bd = c(x, 'branch3x3dbl_1', 448, 1)
    bd = split(c(bd, 'branch3x3dbl_2', 384, 3, padding=(1, 1)), 'branch3x3dbl_3')
    pooled = _max_pool(x, 1) if self.max_pool else _avg_pool(x)
    bp = c(pooled, 'branch_pool', 192, 1)
    return jnp.concatenate([b1, b3, bd, bp], -1)


class InceptionV3(nn.Module):
  """Inception-v3 without the auxiliary head; see the module docstring.

  Attributes:
    num_classes: 1008 for the FID weights (the 2015 graph's outputs).
    dropout_rate: before the head, as torchvision (inactive in eval).
  """
  num_classes: int = 1008
  dropout_rate: float = 0.5
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    if min(x.shape[1:3]) < 75:
      raise ValueError(f'InceptionV3 needs images of at least 75x75, got shape {x.shape}')
    c = functools.partial(_conv, self, train=train)
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    x = c(x, 'Conv2d_1a_3x3', 32, 3, strides=2)
    x = c(x, 'Conv2d_2a_3x3', 32, 3)
    x = c(x, 'Conv2d_2b_3x3', 64, 3, padding=(1, 1))
    features.sow_stage(self, 1, x)
    x = c(_max_pool(x, 2), 'Conv2d_3b_1x1', 80, 1)
    x = c(x, 'Conv2d_4a_3x3', 192, 3)
    features.sow_stage(self, 2, x)
    x = _max_pool(x, 2)
    for name, pool_features in (('Mixed_5b', 32), ('Mixed_5c', 64), ('Mixed_5d', 64)):
      x = InceptionA(pool_features, **kw, name=name)(x, train=train)
    features.sow_stage(self, 3, x)
    x = InceptionB(**kw, name='Mixed_6a')(x, train=train)
    for name, channels in (('Mixed_6b', 128), ('Mixed_6c', 160), ('Mixed_6d', 160),
                           ('Mixed_6e', 192)):
      x = InceptionC(channels, **kw, name=name)(x, train=train)
    features.sow_stage(self, 4, x)
    x = InceptionD(**kw, name='Mixed_7a')(x, train=train)
    x = InceptionE(**kw, name='Mixed_7b')(x, train=train)
    x = InceptionE(max_pool=True, **kw, name='Mixed_7c')(x, train=train)
    features.sow_stage(self, 5, x)
    x = jnp.mean(x, axis=(1, 2))
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    return classifier_head(self, x)


# (collection, flax leaf) -> the PyTorch leaf.
_TORCH_LEAVES = {
    ('params', 'kernel'): 'weight',
    ('params', 'scale'): 'weight',
    ('params', 'bias'): 'bias',
    ('batch_stats', 'mean'): 'running_mean',
    ('batch_stats', 'var'): 'running_var',
}


def torch_key(collection: str, path: tuple[str, ...]) -> str:
  """The state-dict key of a flax variable: ('params', ('head', 'kernel')) -> 'fc.weight'."""
  modules = ['fc' if name == 'head' else name for name in path[:-1]]
  return '.'.join([*modules, _TORCH_LEAVES[collection, path[-1]]])


def _to_flax_layout(value: np.ndarray) -> np.ndarray:
  """Convolution kernels OIHW -> HWIO, dense kernels (out, in) -> (in, out)."""
  return value.transpose(2, 3, 1, 0) if value.ndim == 4 else value.T


def load_torch_state_dict(state_dict: Mapping[str, np.ndarray],
                          num_classes: int = 1008) -> dict[str, Any]:
  """The variables ({'params', 'batch_stats'}) of `InceptionV3` from a torchvision/pytorch-fid
  state dict of NumPy arrays (e.g. `np.load` of `pt_inception-2015-12-05.npz`, see docs/gan.md).

  Every variable of the model must be given once with its shape; anything missing, extra or
  misshapen raises ValueError naming it. `num_batches_tracked` entries are ignored.
  """
  model = InceptionV3(num_classes=num_classes)
  target = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 75, 75, 3)),
                                             train=False))
  variables, problems, used = {}, [], set()
  for collection in ('params', 'batch_stats'):
    leaves = []
    for path, leaf in jax.tree_util.tree_leaves_with_path(target[collection]):
      path = tuple(k.key for k in path)
      key = torch_key(collection, path)
      if key not in state_dict:
        problems.append(f'missing {key!r}')
        leaves.append(None)
        continue
      used.add(key)
      value = np.asarray(state_dict[key], np.float32)
      value = _to_flax_layout(value) if path[-1] == 'kernel' else value
      if value.shape != leaf.shape:
        problems.append(f'{key!r} has shape {np.shape(state_dict[key])}, which is {value.shape} '
                        f'in flax layout; the model needs {leaf.shape}')
      leaves.append(jnp.asarray(value))
    variables[collection] = jax.tree.unflatten(jax.tree.structure(target[collection]), leaves)
  problems += [f'unexpected {key!r}' for key in state_dict
               if key not in used and not key.endswith('num_batches_tracked')]
  if problems:
    more = f' (and {len(problems) - 10} more)' if len(problems) > 10 else ''
    raise ValueError('not an InceptionV3 state dict: ' + '; '.join(problems[:10]) + more)
  return variables


@register_model(kind='classifier', input_shape=(299, 299, 3),
                description='Inception-v3 as for FID (pytorch-fid layers, 1008 classes, inputs '
                            'in [-1, 1]); weights: zoo.inception.load_torch_state_dict')
def inception_v3(**overrides) -> InceptionV3:
  return InceptionV3(**overrides)

"""Layers shared by the classifiers: the Conv-BatchNorm-ReLU unit and the head."""

from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.typing import Dtype

from zoo import norm
from zoo.features import sow_pooled

# He initialization over fan-out, as torchvision's VGG and ResNet: it lets the
# BatchNorm-free VGGs train from scratch.
conv_init = nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')


class ConvBN(nn.Module):
  """Conv → BatchNorm (optional) → ReLU (optional).

  Pads k // 2 on every side, as PyTorch, not 'SAME': on even inputs a strided 'SAME'
  conv pads more at the bottom/right and would see other pixels than torchvision's.
  BatchNorm is `norm.batch_norm` (PyTorch's defaults; `bn_epsilon` for other sources).
  """
  features: int
  kernel_size: tuple[int, int] = (3, 3)
  strides: int = 1
  use_bias: bool = False
  batch_norm: bool = True
  relu: bool = True
  bn_scale_init: Callable[..., jax.Array] = nn.initializers.ones
  bn_epsilon: float = 1e-5
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32
  bn_axis_name: str | None = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    x = nn.Conv(self.features, self.kernel_size, strides=self.strides,
                padding=[(k // 2, k // 2) for k in self.kernel_size],
                use_bias=self.use_bias, kernel_init=conv_init, dtype=self.dtype,
                param_dtype=self.param_dtype, name='conv')(x)
    if self.batch_norm:
      x = norm.batch_norm(train, name='bn', epsilon=self.bn_epsilon, scale_init=self.bn_scale_init,
                          axis_name=self.bn_axis_name, dtype=self.dtype,
                          param_dtype=self.param_dtype)(x)
    return nn.relu(x) if self.relu else x


def drop_path(x: jax.Array, rate: float, *, train: bool) -> jax.Array:
  """Stochastic depth (Huang et al. 2016) on a residual branch `x`.

  Zeroes the branch of whole examples with probability `rate` and scales the kept ones by
  1 / (1 - rate), as timm's DropPath, with the 'dropout' RNG stream; the identity when
  `train` is False. Call it from a compact `__call__`.
  """
  return nn.Dropout(rate, broadcast_dims=tuple(range(1, x.ndim)))(x, deterministic=not train)


def classifier_head(model: nn.Module, x: jax.Array) -> jax.Array:
  """Sows `x` as 'pooled' and maps it to logits with a Dense named `head`.

  Call it from the compact `__call__` of `model`, which must have the fields
  `num_classes`, `dtype` and `param_dtype`. With `num_classes=0` there is no head and the
  pooled features (B, D) come back instead, as timm's headless models.
  """
  sow_pooled(model, x)
  if model.num_classes == 0:
    return x.astype(jnp.float32)
  x = nn.Dense(model.num_classes, dtype=model.dtype, param_dtype=model.param_dtype,
               name='head')(x)
  # float32 logits keep the softmax cross-entropy exact under bfloat16 compute.
  return x.astype(jnp.float32)

"""Layers shared by the classifiers: the Conv-BatchNorm-ReLU unit and the head."""

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from zoo.features import sow_pooled

# He initialization over fan-out, as torchvision's VGG and ResNet: it lets the
# BatchNorm-free VGGs train from scratch.
conv_init = nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')


class ConvBN(nn.Module):
  """Conv → BatchNorm (optional) → ReLU (optional).

  Pads k // 2 on every side, as PyTorch, not 'SAME': on even inputs a strided 'SAME'
  conv pads more at the bottom/right and would see other pixels than torchvision's.
  BatchNorm matches PyTorch's defaults (its momentum 0.1 is flax's 0.9; eps 1e-5).
  """
  features: int
  kernel_size: tuple[int, int] = (3, 3)
  strides: int = 1
  use_bias: bool = False
  batch_norm: bool = True
  relu: bool = True
  bn_scale_init: Callable[..., jax.Array] = nn.initializers.ones
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  bn_axis_name: str | None = None

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    x = nn.Conv(self.features, self.kernel_size, strides=self.strides,
                padding=[(k // 2, k // 2) for k in self.kernel_size],
                use_bias=self.use_bias, kernel_init=conv_init, dtype=self.dtype,
                param_dtype=self.param_dtype, name='conv')(x)
    if self.batch_norm:
      x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                       scale_init=self.bn_scale_init, axis_name=self.bn_axis_name,
                       dtype=self.dtype, param_dtype=self.param_dtype, name='bn')(x)
    return nn.relu(x) if self.relu else x


def classifier_head(model: nn.Module, x: jax.Array) -> jax.Array:
  """Sows `x` as 'pooled' and maps it to logits with a Dense named `head`.

  Call it from the compact `__call__` of `model`, which must have the fields
  `num_classes`, `dtype` and `param_dtype`. With `num_classes=0` the model is headless,
  as in timm: it returns the pooled features `x` and has no `head`.
  """
  sow_pooled(model, x)
  if model.num_classes == 0:
    return x
  x = nn.Dense(model.num_classes, dtype=model.dtype, param_dtype=model.param_dtype,
               name='head')(x)
  # float32 logits keep the softmax cross-entropy exact under bfloat16 compute.
  return x.astype(jnp.float32)

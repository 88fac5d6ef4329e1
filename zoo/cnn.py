"""The small convnet of the classic course material (LeNet-style, for digits/MNIST)."""

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from zoo.classifier_layers import classifier_head
from zoo.features import sow_stage
from zoo.registry import register_model


class CNN(nn.Module):
  """(Conv-ReLU-MaxPool) × 2 → Flatten → Dense-ReLU → Dropout → Dense `head`.

  Convs are 'SAME'-padded and each 2×2 max-pool halves the resolution, so any input of
  at least 4×4 works: 8×8 or 16×16 digits, 28×28 MNIST, 32×32 CIFAR. The flattened
  size, hence the first Dense layer, depends on the input size.
  """
  num_classes: int = 10
  features: Sequence[int] = (32, 64)
  kernel_size: tuple[int, int] = (3, 3)
  hidden: int = 256
  dropout_rate: float = 0.5
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    for i, width in enumerate(self.features, 1):
      x = nn.Conv(width, self.kernel_size, dtype=self.dtype,
                  param_dtype=self.param_dtype, name=f'conv{i}')(x)
      x = nn.relu(x)
      sow_stage(self, i, x)
      x = nn.max_pool(x, (2, 2), strides=(2, 2))
    x = x.reshape(x.shape[0], -1)
    x = nn.Dense(self.hidden, dtype=self.dtype, param_dtype=self.param_dtype,
                 name='fc')(x)
    x = nn.relu(x)
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    return classifier_head(self, x)


@register_model(kind='classifier', input_shape=(28, 28, 1),
                description='Conv-ReLU-MaxPool ×2, Dense-ReLU, Dropout, Dense (MNIST, digits)')
def cnn(**overrides) -> CNN:
  return CNN(**overrides)

"""LeNet-5 (LeCun et al. 1998) as it is commonly built today.

32×32×1 input; C1: 6 convolutions 5×5 (valid) -> 28×28; S2: 2×2 average pool -> 14×14; C3: 16
convolutions 5×5 over all of S2's maps (the paper connects each to a subset) -> 10×10; S4: 2×2
average pool -> 5×5; C5: Dense 120 (the paper's 5×5 convolution on a 5×5 map is the same
thing); F6: Dense 84; the `head` (a Dense, where the paper has Euclidean RBF units). The
activation is tanh, as the paper's scaled tanh without its 1.7159 factor; `activation=nn.relu`
gives the modern variant. 61,706 parameters at 10 classes.
"""

from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.typing import Dtype

from zoo.classifier_layers import classifier_head
from zoo.features import sow_stage
from zoo.registry import register_model


class LeNet5(nn.Module):
  """C1-S2-C3-S4-C5-F6-head; see the module docstring. Sows 'stage1' (C1) and 'stage2' (C3)."""
  num_classes: int = 10
  activation: Callable[[jax.Array], jax.Array] = nn.tanh
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    del train  # no dropout or BatchNorm
    if x.shape[1:3] != (32, 32):
      raise ValueError(f'LeNet-5 takes 32x32 images (pad 28x28 MNIST by 2), got {x.shape}')
    kw = {'dtype': self.dtype, 'param_dtype': self.param_dtype}
    for i, width in enumerate((6, 16), 1):
      x = self.activation(nn.Conv(width, (5, 5), padding='VALID', **kw, name=f'conv{i}')(x))
      sow_stage(self, i, x)
      x = nn.avg_pool(x, (2, 2), strides=(2, 2))
    x = x.reshape(x.shape[0], -1)
    x = self.activation(nn.Dense(120, **kw, name='fc1')(x))
    x = self.activation(nn.Dense(84, **kw, name='fc2')(x))
    return classifier_head(self, x)


@register_model(kind='classifier', input_shape=(32, 32, 1),
                description='LeNet-5 (LeCun et al. 1998), tanh, average-pool subsampling')
def lenet5(**overrides) -> LeNet5:
  return LeNet5(**overrides)

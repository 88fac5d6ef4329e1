"""AlexNet (Krizhevsky et al. 2012) in torchvision's variant ("One weird trick", Krizhevsky
2014): five convolutions of 64/192/384/256/256 channels, no local response normalization, one
tower; 61,100,840 parameters at 1000 classes."""

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.typing import Dtype

from zoo.classifier_layers import classifier_head
from zoo.features import sow_stage
from zoo.registry import register_model
from zoo.vgg import adaptive_avg_pool

# (channels, kernel, stride, padding, max-pool after it) of torchvision's `features`.
_CONVS = ((64, 11, 4, 2, True), (192, 5, 1, 2, True), (384, 3, 1, 1, False),
          (256, 3, 1, 1, False), (256, 3, 1, 1, True))


class AlexNet(nn.Module):
  """Convolutions (3×3/2 max-pools after the 1st, 2nd and 5th), adaptive average pool to
  `pool_size`, Dropout-Dense-ReLU ×2 of `classifier_width`, the `head`.

  Inputs of at least 63×63; 224×224 gives the 6×6 map the classifier was built for. Sows
  'stage1'..'stage3' (strides 4, 8, 16: after conv1, conv2, conv5, before their pools).
  """
  num_classes: int = 1000
  pool_size: tuple[int, int] = (6, 6)
  classifier_width: int = 4096
  dropout_rate: float = 0.5
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    stage = 0
    for i, (width, kernel, stride, pad, pool) in enumerate(_CONVS, 1):
      x = nn.Conv(width, (kernel, kernel), strides=stride, padding=((pad, pad), (pad, pad)),
                  dtype=self.dtype, param_dtype=self.param_dtype, name=f'conv{i}')(x)
      x = nn.relu(x)
      if pool:
        stage += 1
        sow_stage(self, stage, x)
        x = nn.max_pool(x, (3, 3), strides=(2, 2))
    x = adaptive_avg_pool(x, self.pool_size).reshape(x.shape[0], -1)
    for k in (1, 2):
      x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
      x = nn.relu(nn.Dense(self.classifier_width, dtype=self.dtype,
                           param_dtype=self.param_dtype, name=f'fc{k}')(x))
    return classifier_head(self, x)


@register_model(kind='classifier', input_shape=(224, 224, 3),
                description="AlexNet, torchvision's one-tower variant (61.1M parameters)")
def alexnet(**overrides) -> AlexNet:
  return AlexNet(**overrides)

"""Feature maps of the classifiers, for transfer learning and perceptual losses.

Every classifier in the zoo sows, into the 'intermediates' collection, these keys:

  'stage1' … 'stageN': (B, H_i, W_i, C_i), the last activation of stage i at that
      stage's resolution, before the pooling that closes the stage (if any):
      cnn: 2 stages, strides 1, 2;
      vgg*: 5 stages, strides 1, 2, 4, 8, 16 (for vgg16: relu1_2, relu2_2, relu3_3,
        relu4_3, relu5_3, the layers perceptual losses use);
      resnet18 … resnet152: 4 stages, strides 4, 8, 16, 32;
      resnet20 … resnet110 (CIFAR): 3 stages, strides 1, 2, 4;
      mobilenet_v2, mobilenet_v3_large, efficientnet_b*: 5 stages, strides 2, 4, 8, 16, 32,
        the last block output at each resolution (mobilenet_v3_small: 4, strides 4 … 32).
  'pooled': (B, D), the input of the final `head` Dense: the global average pool for
      ResNets, MobileNetV2 and EfficientNet (for the last two after their dropout, the
      identity when `train=False`); the output of the last hidden Dense layer (after its
      dropout) for VGG, cnn and MobileNetV3.

Sowing costs nothing unless 'intermediates' is mutable in `apply`.
"""

from typing import Any

import flax.linen as nn
import jax

COLLECTION = 'intermediates'


def sow_stage(module: nn.Module, index: int, x: jax.Array) -> None:
  """Records `x` as the output of stage `index` (1-based)."""
  module.sow(COLLECTION, f'stage{index}', x)


def sow_pooled(module: nn.Module, x: jax.Array) -> None:
  """Records `x` as the vector the head maps to logits."""
  module.sow(COLLECTION, 'pooled', x)


def extract_features(model: nn.Module, variables: Any, x: jax.Array, *,
                     train: bool = False,
                     rngs: dict[str, jax.Array] | None = None) -> dict[str, jax.Array]:
  """Runs `model` on `x` and returns its sown features, {'stage1': …, 'pooled': …}.

  With `train=True` BatchNorm uses batch statistics (their updates are discarded) and
  dropout needs `rngs={'dropout': key}`.
  """
  mutable = [COLLECTION, 'batch_stats'] if train else [COLLECTION]
  _, state = model.apply(variables, x, train=train, rngs=rngs, mutable=mutable)
  # `sow` appends to a tuple; the last entry is this call's.
  return {name: values[-1] for name, values in state[COLLECTION].items()}

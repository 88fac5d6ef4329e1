"""Feature maps of the classifiers, for transfer learning and perceptual losses.

Every classifier in the zoo sows, into the 'intermediates' collection, these keys:

  'stage1' … 'stageN': (B, H_i, W_i, C_i), the last activation of stage i at that
      stage's resolution, before the pooling that closes the stage (if any):
      cnn: 2 stages, strides 1, 2;
      vgg*: 5 stages, strides 1, 2, 4, 8, 16 (for vgg16: relu1_2, relu2_2, relu3_3,
        relu4_3, relu5_3, the layers perceptual losses use);
      resnet18 … resnet152: 4 stages, strides 4, 8, 16, 32;
      resnet20 … resnet110 (CIFAR): 3 stages, strides 1, 2, 4;
      convnext_*: 4 stages, strides 4, 8, 16, 32;
      vit_*: the patch tokens after the blocks ending each quarter of the depth (3, 6, 9,
        12 of 12), as maps at stride 16 (the patch size);
      mobilenet_v2, mobilenet_v3_large, efficientnet_b*: 5 stages, strides 2, 4, 8, 16, 32,
        the last block output at each resolution (mobilenet_v3_small: 4, strides 4 … 32).
  'pooled': (B, D), the input of the final `head` Dense: the global average pool for
      ResNets, MobileNetV2 and EfficientNet (for the last two after their dropout, the
      identity when `train=False`); the output of the last hidden Dense layer (after its
      dropout, the identity when `train=False`) for VGG, cnn and MobileNetV3; the
      normalized average pool for ConvNeXt; the class token after the final LayerNorm for
      ViT. It is the output of a headless model (`num_classes=0`).

Sowing costs nothing unless 'intermediates' is mutable in `apply`.
"""

import dataclasses
import math
from typing import Any, Iterable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

COLLECTION = 'intermediates'


def sow_stage(module: nn.Module, index: int, x: jax.Array) -> None:
  """Records `x` as the output of stage `index` (1-based)."""
  module.sow(COLLECTION, f'stage{index}', x)


def sow_pooled(module: nn.Module, x: jax.Array) -> None:
  """Records `x` as the vector the head maps to logits."""
  module.sow(COLLECTION, 'pooled', x)


@dataclasses.dataclass(frozen=True)
class FeatureInfo:
  """One stage of a model's feature pyramid, as timm's `feature_info`."""
  name: str  # the key of `extract_features`: 'stage1', ...
  channels: int
  reduction: int  # input side / feature-map side, the stage's total stride


def _check_sows(model: nn.Module, names: Iterable[str]) -> None:
  if not any(name.startswith('stage') for name in names):
    raise ValueError(f'{type(model).__name__} sows no stage features: only the classifiers '
                     '(cnn, lenet5, alexnet, vgg*, resnet*, inception_v3, ...) have stages')


def feature_info(model: nn.Module, input_shape: Sequence[int]) -> list[FeatureInfo]:
  """Channels and reduction of each stage of `model` on one input of `input_shape` (H, W, C).

  Computed from shapes only (`jax.eval_shape`), so it costs no FLOPs; with
  `zoo.model_info(name).input_shape` it gives the stages at the model's default input size.
  """
  x = jax.ShapeDtypeStruct((1, *input_shape), jnp.float32)
  rngs = {'params': jax.random.key(0), 'dropout': jax.random.key(0)}
  init = lambda x: model.init(rngs, x, train=False, mutable=True)
  shapes = jax.eval_shape(init, x).get(COLLECTION, {})
  _check_sows(model, shapes)
  stages = sorted((n for n in shapes if n.startswith('stage')), key=lambda n: int(n[5:]))
  info = []
  for name in stages:
    _, h, _, c = shapes[name][-1].shape
    # Odd inputs (Inception's 299) round down at every stride: report the nominal power of two.
    reduction = 2 ** round(math.log2(input_shape[0] / h))
    info.append(FeatureInfo(name, c, reduction))
  return info


def extract_features(model: nn.Module, variables: Any, x: jax.Array, *,
                     stages: Sequence[str] | None = None, train: bool = False,
                     rngs: dict[str, jax.Array] | None = None) -> dict[str, jax.Array]:
  """Runs `model` on `x` and returns its sown features, {'stage1': …, 'pooled': …}.

  `stages` selects some of them, e.g. ('stage2', 'stage4') for a detector's neck; the whole
  model still runs (use `num_classes=0` to drop the head's cost). With `train=True` BatchNorm
  uses batch statistics (their updates are discarded) and dropout needs
  `rngs={'dropout': key}`.
  """
  mutable = [COLLECTION, 'batch_stats'] if train else [COLLECTION]
  _, state = model.apply(variables, x, train=train, rngs=rngs, mutable=mutable)
  # `sow` appends to a tuple; the last entry is this call's.
  features = {name: values[-1] for name, values in state.get(COLLECTION, {}).items()}
  _check_sows(model, features)
  if stages is None:
    return features
  unknown = [name for name in stages if name not in features]
  if unknown:
    raise ValueError(f'{type(model).__name__} has no feature {unknown[0]!r}; it has '
                     f'{", ".join(features)}')
  return {name: features[name] for name in stages}

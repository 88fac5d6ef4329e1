"""ResNets (He et al., 2016): ImageNet 18/34/50/101/152 and CIFAR 20/32/44/56/110."""

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.typing import Dtype

from zoo.classifier_layers import ConvBN, classifier_head
from zoo.features import sow_stage
from zoo.registry import register_model

ModuleDef = Any


class _ResidualBlock(nn.Module):
  """Fields and shortcut shared by the two block types.

  `shortcut` is used when a block changes the shape: 'projection' is option B of the
  paper (1×1 strided conv + BatchNorm, as torchvision); 'zero_pad' is option A,
  parameter-free: take every `strides`-th pixel and append zero channels.
  """
  features: int
  strides: int = 1
  shortcut: str = 'projection'
  zero_init_residual: bool = False
  stride_in_1x1: bool = False
  conv_bn: ModuleDef = ConvBN

  @property
  def _last_scale_init(self):
    # A zero last BatchNorm scale makes the block start as the identity (Goyal et al., 2017).
    return nn.initializers.zeros if self.zero_init_residual else nn.initializers.ones

  def _add_shortcut(self, x: jax.Array, y: jax.Array, train: bool) -> jax.Array:
    if x.shape != y.shape:
      if self.shortcut == 'projection':
        x = self.conv_bn(y.shape[-1], (1, 1), self.strides, relu=False,
                         name='shortcut')(x, train=train)
      elif self.shortcut == 'zero_pad':
        x = x[:, ::self.strides, ::self.strides, :]
        x = jnp.pad(x, [(0, 0)] * 3 + [(0, y.shape[-1] - x.shape[-1])])
      else:
        raise ValueError(f"shortcut must be 'projection' or 'zero_pad', not {self.shortcut!r}")
    return nn.relu(x + y)


class BasicBlock(_ResidualBlock):
  """Two 3×3 convs; the first carries the stride."""

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    y = self.conv_bn(self.features, strides=self.strides, name='conv1')(x, train=train)
    y = self.conv_bn(self.features, relu=False, bn_scale_init=self._last_scale_init,
                     name='conv2')(y, train=train)
    return self._add_shortcut(x, y, train)


class Bottleneck(_ResidualBlock):
  """1×1 reduce, 3×3, 1×1 expand ×4; the 3×3 carries the stride (v1.5), or the first 1×1 with
  `stride_in_1x1` (v1: the paper, Caffe and Keras)."""
  expansion = 4

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    stride_1x1, stride_3x3 = (self.strides, 1) if self.stride_in_1x1 else (1, self.strides)
    y = self.conv_bn(self.features, (1, 1), strides=stride_1x1, name='conv1')(x, train=train)
    y = self.conv_bn(self.features, strides=stride_3x3, name='conv2')(y, train=train)
    y = self.conv_bn(self.features * self.expansion, (1, 1), relu=False,
                     bn_scale_init=self._last_scale_init, name='conv3')(y, train=train)
    return self._add_shortcut(x, y, train)


class ResNet(nn.Module):
  """ResNet: a stem, stages of residual blocks, global average pooling, the `head`.

  Stage i has `stage_sizes[i]` blocks of `widths[i]` channels (×4 at the output of a
  Bottleneck); the first block of every stage but the first has stride 2.

  ImageNet models (`stem='imagenet'`): 7×7/2 conv and 3×3/2 max-pool stem, projection
  shortcuts (option B), and the v1.5 stride placement of torchvision: a Bottleneck
  strides on its 3×3 conv, not on its first 1×1 conv as in the paper (v1), so that no
  activation is skipped; it is slightly slower and slightly more accurate.

  CIFAR models (`stem='cifar'`, He et al. 2016 §4.2): one 3×3/1 conv stem, 3 stages of
  16/32/64 channels with n BasicBlocks each (6n + 2 layers), and parameter-free option
  A shortcuts (`shortcut='zero_pad'`: strided subsampling + zero channels).

  `zero_init_residual` zero-initializes the last BatchNorm scale of every block.

  `remat=True` rematerializes every block: its activations are recomputed in the backward pass
  instead of stored, for less memory at the cost of about one more forward pass. The same by
  hand: `block_cls=nn.remat(Bottleneck, static_argnums=(2,))`; `train` (argument 2, after self
  and x) is passed positionally so that it can be static. Variables keep their names.

  For Keras' ResNet50 weights (v1): `stride_in_1x1=True`, `conv_bias=True` (Keras keeps a bias
  on every convolution, before its BatchNorm) and `bn_epsilon=1.001e-5`; `load_pretrained` sets
  them from the file.
  """
  stage_sizes: Sequence[int]
  block_cls: ModuleDef = BasicBlock
  widths: Sequence[int] = (64, 128, 256, 512)
  stem: str = 'imagenet'
  shortcut: str = 'projection'
  zero_init_residual: bool = False
  stride_in_1x1: bool = False
  conv_bias: bool = False
  bn_epsilon: float = 1e-5
  num_classes: int = 1000
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32
  bn_axis_name: str | None = None
  remat: bool = False

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    block_cls = nn.remat(self.block_cls, static_argnums=(2,)) if self.remat else self.block_cls
    conv_bn = functools.partial(ConvBN, use_bias=self.conv_bias, bn_epsilon=self.bn_epsilon,
                                dtype=self.dtype, param_dtype=self.param_dtype,
                                bn_axis_name=self.bn_axis_name)
    if self.stem == 'imagenet':
      x = conv_bn(self.widths[0], (7, 7), strides=2, name='stem')(x, train=train)
      x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    elif self.stem == 'cifar':
      x = conv_bn(self.widths[0], name='stem')(x, train=train)
    else:
      raise ValueError(f"stem must be 'imagenet' or 'cifar', not {self.stem!r}")
    for i, (depth, width) in enumerate(zip(self.stage_sizes, self.widths), 1):
      for j in range(1, depth + 1):
        x = block_cls(width, strides=2 if i > 1 and j == 1 else 1,
                      shortcut=self.shortcut,
                      zero_init_residual=self.zero_init_residual,
                      stride_in_1x1=self.stride_in_1x1, conv_bn=conv_bn,
                      name=f'stage{i}_block{j}')(x, train)  # positional: see remat
      sow_stage(self, i, x)
    x = jnp.mean(x, axis=(1, 2))
    return classifier_head(self, x)


def _cifar_resnet(blocks_per_stage: int, overrides: dict[str, Any]) -> ResNet:
  """He et al. 2016 §4.2: 3 stages of 16/32/64 channels, option A shortcuts, 10 classes."""
  return ResNet(**{'stage_sizes': (blocks_per_stage,) * 3, 'widths': (16, 32, 64),
                   'stem': 'cifar', 'shortcut': 'zero_pad', 'num_classes': 10, **overrides})


@register_model(kind='classifier', input_shape=(224, 224, 3),
                description='ResNet-18 v1.5 (torchvision layout)')
def resnet18(**overrides) -> ResNet:
  return ResNet(**{'stage_sizes': (2, 2, 2, 2), 'block_cls': BasicBlock, **overrides})


@register_model(kind='classifier', input_shape=(224, 224, 3),
                description='ResNet-34 v1.5 (torchvision layout)')
def resnet34(**overrides) -> ResNet:
  return ResNet(**{'stage_sizes': (3, 4, 6, 3), 'block_cls': BasicBlock, **overrides})


@register_model(kind='classifier', input_shape=(224, 224, 3),
                description='ResNet-50 v1.5 (torchvision layout)')
def resnet50(**overrides) -> ResNet:
  return ResNet(**{'stage_sizes': (3, 4, 6, 3), 'block_cls': Bottleneck, **overrides})


@register_model(kind='classifier', input_shape=(224, 224, 3),
                description='ResNet-101 v1.5 (torchvision layout)')
def resnet101(**overrides) -> ResNet:
  return ResNet(**{'stage_sizes': (3, 4, 23, 3), 'block_cls': Bottleneck, **overrides})


@register_model(kind='classifier', input_shape=(224, 224, 3),
                description='ResNet-152 v1.5 (torchvision layout)')
def resnet152(**overrides) -> ResNet:
  return ResNet(**{'stage_sizes': (3, 8, 36, 3), 'block_cls': Bottleneck, **overrides})


@register_model(kind='classifier', input_shape=(32, 32, 3),
                description='CIFAR ResNet-20 (He et al. 2016), option A shortcuts')
def resnet20(**overrides) -> ResNet:
  return _cifar_resnet(3, overrides)


@register_model(kind='classifier', input_shape=(32, 32, 3),
                description='CIFAR ResNet-32 (He et al. 2016), option A shortcuts')
def resnet32(**overrides) -> ResNet:
  return _cifar_resnet(5, overrides)


@register_model(kind='classifier', input_shape=(32, 32, 3),
                description='CIFAR ResNet-44 (He et al. 2016), option A shortcuts')
def resnet44(**overrides) -> ResNet:
  return _cifar_resnet(7, overrides)


@register_model(kind='classifier', input_shape=(32, 32, 3),
                description='CIFAR ResNet-56 (He et al. 2016), option A shortcuts')
def resnet56(**overrides) -> ResNet:
  return _cifar_resnet(9, overrides)


@register_model(kind='classifier', input_shape=(32, 32, 3),
                description='CIFAR ResNet-110 (He et al. 2016), option A shortcuts')
def resnet110(**overrides) -> ResNet:
  return _cifar_resnet(18, overrides)

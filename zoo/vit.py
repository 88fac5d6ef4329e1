"""Vision Transformers (Dosovitskiy et al. 2021, "An Image is Worth 16x16 Words").

The image is cut into `patch_size`² patches, each linearly embedded (a strided conv); a learned
class token is prepended, learned position embeddings added, and `depth` pre-norm Transformer
encoder blocks follow. The class token after the final LayerNorm is the pooled feature.

The sources' variants, all loadable (zoo.weights.vit):
  - torchvision `vit_b_16` (= `vit_base_patch16_224`): the original architecture; LayerNorm
    epsilon 1e-6, class-token pooling, no stochastic depth.
  - timm `vit_{tiny,small,base}_patch16_224` (AugReg weights, Steiner et al. 2022): the same
    computation; its `global_pool='avg'` models (`global_pool='avg'` here) average the patch
    tokens and apply the final LayerNorm after pooling (timm's `fc_norm`), and some have no
    class token (`class_token=False`).
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from zoo.classifier_layers import classifier_head, drop_path
from zoo.features import sow_stage
from zoo.registry import register_model

# Initialization of the original ViT (big_vision): Xavier-uniform projections, zero biases.
dense_init = nn.initializers.xavier_uniform()


class SelfAttention(nn.Module):
  """Multi-head self-attention with one fused `qkv` projection.

  The fused (D, 3D) projection, queries then keys then values, each split into heads, is the
  layout of timm's `qkv` and torchvision's `in_proj_weight`: their weights map onto it as they
  are, and one matmul is faster than three.
  """
  num_heads: int
  dropout_rate: float = 0.0  # on the attention weights
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    batch, tokens, width = x.shape
    if width % self.num_heads:
      raise ValueError(f'width {width} is not divisible by num_heads={self.num_heads}')
    dense = lambda features, name: nn.Dense(features, kernel_init=dense_init, dtype=self.dtype,
                                            param_dtype=self.param_dtype, name=name)
    qkv = dense(3 * width, 'qkv')(x).reshape(batch, tokens, 3, self.num_heads, -1)
    deterministic = not train or self.dropout_rate == 0.0
    y = nn.dot_product_attention(
        qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2], dropout_rate=self.dropout_rate,
        # Independent masks per example and head, as torch's attention dropout.
        broadcast_dropout=False, deterministic=deterministic,
        dropout_rng=None if deterministic else self.make_rng('dropout'), dtype=self.dtype)
    return dense(width, 'out')(y.reshape(batch, tokens, width))


class EncoderBlock(nn.Module):
  """Pre-norm Transformer block: x + attention(LN(x)), then x + MLP(LN(x))."""
  num_heads: int
  mlp_dim: int
  dropout_rate: float = 0.0
  attention_dropout_rate: float = 0.0
  drop_path_rate: float = 0.0
  layer_norm_epsilon: float = 1e-6
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:  # positional `train`: nn.remat
    norm = lambda name: nn.LayerNorm(self.layer_norm_epsilon, dtype=self.dtype,
                                     param_dtype=self.param_dtype, name=name)
    dense = lambda features, name: nn.Dense(features, kernel_init=dense_init, dtype=self.dtype,
                                            param_dtype=self.param_dtype, name=name)
    dropout = lambda y: nn.Dropout(self.dropout_rate)(y, deterministic=not train)
    y = SelfAttention(self.num_heads, self.attention_dropout_rate, dtype=self.dtype,
                      param_dtype=self.param_dtype, name='attention')(norm('norm1')(x),
                                                                       train=train)
    x = x + drop_path(dropout(y), self.drop_path_rate, train=train)
    y = nn.gelu(dense(self.mlp_dim, 'fc1')(norm('norm2')(x)), approximate=False)
    y = dense(x.shape[-1], 'fc2')(dropout(y))
    return x + drop_path(dropout(y), self.drop_path_rate, train=train)


class VisionTransformer(nn.Module):
  """ViT: patch embedding, class token, position embeddings, encoder blocks, the `head`.

  `image_size` (square) fixes the number of position embeddings, (image_size / patch_size)² + 1
  with a class token; inputs must have that size. `mlp_dim` defaults to 4 × `width`.
  `global_pool`: 'token', the class token after the final LayerNorm (the paper, torchvision,
  timm's default); 'avg', the mean of the patch tokens followed by the final LayerNorm (timm's
  `global_pool='avg'`, whose `fc_norm` is that LayerNorm). Dropout (`dropout_rate`, after the
  position embeddings, the attention output and each MLP layer; `attention_dropout_rate`, on
  the attention weights) and stochastic depth (`drop_path_rate`, growing linearly to that rate
  over the blocks, as timm) draw from the 'dropout' stream.

  Features: the token maps of the blocks ending each quarter of the depth (3, 6, 9, 12 for 12
  blocks), as (B, H/p, W/p, D) 'stage1'…'stage4'; 'pooled' is the vector the head reads, and
  the output when `num_classes=0`.
  """
  width: int = 768
  depth: int = 12
  num_heads: int = 12
  mlp_dim: int | None = None
  patch_size: int = 16
  image_size: int = 224
  class_token: bool = True
  global_pool: str = 'token'
  num_classes: int = 1000
  dropout_rate: float = 0.0
  attention_dropout_rate: float = 0.0
  drop_path_rate: float = 0.0
  layer_norm_epsilon: float = 1e-6
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  remat: bool = False  # recompute each block's activations in the backward pass: less memory

  @property
  def grid_size(self) -> int:
    """Patches along each side of the image."""
    if self.image_size % self.patch_size:
      raise ValueError(f'image_size={self.image_size} is not a multiple of '
                       f'patch_size={self.patch_size}')
    return self.image_size // self.patch_size

  @property
  def stage_blocks(self) -> tuple[int, ...]:
    """The (1-based) blocks whose outputs are sown as stages."""
    return tuple(sorted({max(1, self.depth * k // 4) for k in range(1, 5)}))

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    if x.shape[1:3] != (self.image_size, self.image_size):
      raise ValueError(f'VisionTransformer with image_size={self.image_size} got '
                       f'{x.shape[1]}x{x.shape[2]} images: resize them, or set image_size '
                       '(the number of position embeddings follows it)')
    if self.global_pool not in ('token', 'avg'):
      raise ValueError(f"global_pool must be 'token' or 'avg', not {self.global_pool!r}")
    if self.global_pool == 'token' and not self.class_token:
      raise ValueError("global_pool='token' needs class_token=True")
    x = nn.Conv(self.width, (self.patch_size,) * 2, strides=self.patch_size, padding='VALID',
                dtype=self.dtype, param_dtype=self.param_dtype, name='patch_embed')(x)
    batch, grid = x.shape[0], self.grid_size
    x = x.reshape(batch, grid * grid, self.width)
    prefix = int(self.class_token)
    if self.class_token:
      cls = self.param('cls', nn.initializers.zeros, (1, 1, self.width), self.param_dtype)
      x = jnp.concatenate([jnp.broadcast_to(cls.astype(x.dtype), (batch, 1, self.width)), x], 1)
    pos = self.param('pos_embedding', nn.initializers.normal(0.02),
                     (1, prefix + grid * grid, self.width), self.param_dtype)
    x = nn.Dropout(self.dropout_rate)(x + pos.astype(x.dtype), deterministic=not train)
    stages = self.stage_blocks
    block_cls = nn.remat(EncoderBlock, static_argnums=(2,)) if self.remat else EncoderBlock
    for i in range(1, self.depth + 1):
      x = block_cls(
          self.num_heads, self.mlp_dim or 4 * self.width, dropout_rate=self.dropout_rate,
          attention_dropout_rate=self.attention_dropout_rate,
          drop_path_rate=self.drop_path_rate * (i - 1) / max(1, self.depth - 1),
          layer_norm_epsilon=self.layer_norm_epsilon, dtype=self.dtype,
          param_dtype=self.param_dtype, name=f'block{i}')(x, train)
      if i in stages:
        sow_stage(self, stages.index(i) + 1, x[:, prefix:].reshape(batch, grid, grid, -1))
    norm = nn.LayerNorm(self.layer_norm_epsilon, dtype=self.dtype,
                        param_dtype=self.param_dtype, name='norm')
    x = norm(x[:, 0]) if self.global_pool == 'token' else norm(jnp.mean(x[:, prefix:], 1))
    return classifier_head(self, x)


def _vit_16(width: int, num_heads: int, overrides: dict) -> VisionTransformer:
  """The 12-block ViT with 16x16 patches of `width` and `num_heads`, and `overrides`."""
  return VisionTransformer(**{'width': width, 'depth': 12, 'num_heads': num_heads, **overrides})


@register_model(kind='classifier', input_shape=(224, 224, 3),
                description='ViT-Ti/16 (timm; Steiner et al. 2022)')
def vit_tiny_patch16_224(**overrides) -> VisionTransformer:
  return _vit_16(192, 3, overrides)


@register_model(kind='classifier', input_shape=(224, 224, 3),
                description='ViT-S/16 (timm; Steiner et al. 2022)')
def vit_small_patch16_224(**overrides) -> VisionTransformer:
  return _vit_16(384, 6, overrides)


@register_model(kind='classifier', input_shape=(224, 224, 3),
                description='ViT-B/16 (Dosovitskiy et al. 2021)')
def vit_base_patch16_224(**overrides) -> VisionTransformer:
  return _vit_16(768, 12, overrides)


@register_model(kind='classifier', input_shape=(224, 224, 3),
                description="ViT-B/16 under torchvision's name (= vit_base_patch16_224)")
def vit_b_16(**overrides) -> VisionTransformer:
  return vit_base_patch16_224(**overrides)

"""Models and optimizers from a config: the one place every task and loader builds them."""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import ml_collections
import optax

import zoo
from train.core import optim
from train.core.errors import UserError
from train.core.task import Length
from zoo import pixelcnn, vae
from zoo.transfer import HEAD, freeze_labels


def create_model(name: str, field: str, **kwargs) -> nn.Module:
  """`zoo.create_model(name, **kwargs)`; a bad name or field is a UserError naming `field`."""
  try:
    return zoo.create_model(name, **kwargs)
  except (ValueError, TypeError) as e:
    raise UserError(f'{field}: {e}') from None


def classifier(config: ml_collections.ConfigDict, num_classes: int,
               bn_axis_name: str | None = None) -> nn.Module:
  """The `zoo` classifier `config.model` names, for `num_classes`, computing in `config.dtype`,
  its blocks rematerialized with `config.remat`.

  `bn_axis_name` (the pmap path) makes BatchNorm average its statistics over that axis.
  """
  model = create_model(config.model, f'config.model={config.model!r}', num_classes=num_classes,
                       dtype=jnp.dtype(config.dtype), **config.model_kwargs.to_dict())
  if config.get('remat'):
    if not hasattr(model, 'remat'):
      raise UserError(f'config.remat=True: config.model={config.model!r} has no blocks to '
                      'rematerialize (resnet*, vit_* and convnext_* have); set '
                      '--config.remat=false.')
    model = model.clone(remat=True)
  return model.clone(bn_axis_name=bn_axis_name) if hasattr(model, 'bn_axis_name') else model


def vae_model(config: ml_collections.ConfigDict, image_shape: tuple[int, int, int]) -> vae.VAE:
  """The VAE of `config.model_kwargs` for images of `image_shape`, which its strided
  convolutions must divide."""
  kwargs = config.model_kwargs.to_dict()
  kwargs['features'] = tuple(kwargs['features'])  # hashable: the model is a static argument
  model = create_model('vae', 'config.model_kwargs', image_shape=tuple(image_shape),
                       dtype=jnp.dtype(config.dtype), **kwargs)
  factor = 2 ** len(model.features)
  if image_shape[0] % factor or image_shape[1] % factor:
    raise UserError(f'images of {image_shape[:2]} (config.data.image_size) must be divisible by '
                    f'2**len(config.model_kwargs.features) = {factor}')
  return model


def pixelcnn_model(config: ml_collections.ConfigDict, num_channels: int) -> pixelcnn.PixelCNN:
  """The PixelCNN `config.model` names, for images of `num_channels` and `config.num_levels`."""
  model = create_model(config.model, f'config.model={config.model!r}',
                       num_channels=num_channels, num_levels=config.num_levels,
                       dtype=jnp.dtype(config.dtype), **config.model_kwargs.to_dict())
  if not isinstance(model, pixelcnn.PixelCNN):
    raise UserError(f'config.model={config.model!r} is not a PixelCNN; use one of '
                    f'{zoo.list_models("pixelcnn*")}')
  return model


def super_resolution_model(config: ml_collections.ConfigDict, decoder: str) -> nn.Module:
  """The super-resolution network with `decoder`, as `config.model_kwargs` says."""
  return create_model(f'sr_{decoder}', f'config.model_kwargs / config.scale={config.scale}',
                      scale=config.scale, dtype=jnp.dtype(config.dtype),
                      **config.model_kwargs.to_dict())


def gan_models(config: ml_collections.ConfigDict, image_shape: tuple[int, int, int],
               bn_axis_name: str | None = None) -> tuple[nn.Module, nn.Module]:
  """The generator and discriminator `config` names, for square images of `image_shape`;
  `bn_axis_name` (the pmap path) makes BatchNorm average its statistics over that axis."""
  height, width, channels = image_shape
  if height != width:
    raise UserError(f'the GAN needs square images, got {height}x{width}: set '
                    '--config.data.image_size')
  common = dict(dtype=jnp.dtype(config.dtype), bn_axis_name=bn_axis_name)
  generator = create_model(config.generator.model, 'config.generator', image_size=height,
                           channels=channels, **common, **config.generator.kwargs.to_dict())
  discriminator = create_model(config.discriminator.model, 'config.discriminator',
                               image_size=height, **common,
                               **config.discriminator.kwargs.to_dict())
  return generator, discriminator


def optimizer(optim_config: ml_collections.ConfigDict, length: Length, *,
              head_only: bool = False) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """`optim_config`'s optimizer for a run of `length`, and its learning-rate schedule; with
  `head_only`, the classifier `head` alone gets updates."""
  tx = optim.make_optimizer(optim_config, length.total_steps, length.steps_per_epoch)
  schedule = optim.learning_rate_schedule(optim_config, length.total_steps, length.steps_per_epoch)
  if head_only:
    tx = optax.multi_transform({'train': tx, 'frozen': optax.set_to_zero()}, _head_labels)
  return tx, schedule


def _head_labels(params: dict[str, Any]) -> dict[str, Any]:
  if HEAD not in params:
    raise UserError(f'config.transfer.freeze_backbone=True needs a classifier whose last layer '
                    f'is named {HEAD!r}; this model has {", ".join(params)}.')
  return freeze_labels(params, (HEAD,))

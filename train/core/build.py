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

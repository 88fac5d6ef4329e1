"""Optimizers from `config.optim`: SGD with momentum, Adam, AdamW; warmup + cosine or step decay.

Weight decay applies to kernels only: biases and normalization scales (1-D parameters) are left
alone, as is standard for ResNets and VGG.
"""

import jax
import ml_collections
import optax

from train.core.errors import UserError

OPTIMIZERS = ('sgd', 'adam', 'adamw')
SCHEDULES = ('constant', 'cosine', 'step')


def learning_rate_schedule(config: ml_collections.ConfigDict, total_steps: int,
                           steps_per_epoch: int) -> optax.Schedule:
  """Linear warmup over `warmup_epochs`, then constant, cosine to zero, or step decay."""
  if config.schedule not in SCHEDULES:
    raise UserError(f'config.optim.schedule={config.schedule!r}: use one of {SCHEDULES}')
  peak = config.learning_rate
  warmup = round(config.warmup_epochs * steps_per_epoch)
  if config.schedule == 'constant':
    main = optax.constant_schedule(peak)
  elif config.schedule == 'cosine':
    main = optax.cosine_decay_schedule(peak, decay_steps=max(total_steps - warmup, 1))
  else:
    boundaries = {round(e * steps_per_epoch) - warmup: config.decay_factor
                  for e in config.decay_epochs}
    main = optax.piecewise_constant_schedule(peak, boundaries)
  if not warmup:
    return main
  return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), main], [warmup])


def _decay_mask(params):
  return jax.tree.map(lambda p: p.ndim > 1, params)


def make_optimizer(config: ml_collections.ConfigDict, total_steps: int,
                   steps_per_epoch: int) -> optax.GradientTransformation:
  """The optimizer `config.optim` describes, with gradient clipping first when asked for.

  With `inject_hyperparams`, the peak learning rate and the weight decay are held in the
  optimizer state (`opt_state.hyperparams`) rather than compiled into the step.
  """
  if not config.get('inject_hyperparams'):
    return optimizer_with(config, learning_rate_schedule(config, total_steps, steps_per_epoch),
                          config.weight_decay)
  unit = learning_rate_schedule(ml_collections.ConfigDict({**config.to_dict(),
                                                           'learning_rate': 1.0}),
                                total_steps, steps_per_epoch)

  def make(learning_rate, weight_decay):
    return optimizer_with(config, lambda step: learning_rate * unit(step), weight_decay)

  return optax.inject_hyperparams(make)(learning_rate=config.learning_rate,
                                        weight_decay=config.weight_decay)


def optimizer_with(config: ml_collections.ConfigDict, lr: optax.ScalarOrSchedule,
                   weight_decay: float | jax.Array) -> optax.GradientTransformation:
  """`config.optim`'s optimizer with the given learning rate (schedule) and weight decay, which
  may be traced arrays (per-trial values in population training)."""
  if config.name not in OPTIMIZERS:
    raise UserError(f'config.optim.name={config.name!r}: use one of {OPTIMIZERS}')
  if config.name == 'adamw':
    core = optax.adamw(lr, b1=config.b1, b2=config.b2, weight_decay=weight_decay,
                       mask=_decay_mask)
  else:
    # L2 regularization, added to the gradient before the update rule (He et al. 2016).
    update = (optax.sgd(lr, momentum=config.momentum, nesterov=config.nesterov)
              if config.name == 'sgd' else optax.adam(lr, b1=config.b1, b2=config.b2))
    core = optax.chain(optax.add_decayed_weights(weight_decay, mask=_decay_mask), update)
  if config.grad_clip_norm:
    return optax.chain(optax.clip_by_global_norm(config.grad_clip_norm), core)
  return core

"""The train state: step, parameters, optimizer state, and BatchNorm statistics if any."""

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax.training import train_state


class TrainState(train_state.TrainState):
  batch_stats: Any = None


def create_train_state(model: nn.Module, tx: optax.GradientTransformation, rng: jax.Array,
                       input_shape: tuple[int, ...]) -> TrainState:
  """Initializes `model` on a zero batch of one example of `input_shape` (H, W, C)."""
  variables = model.init(rng, jnp.zeros((1, *input_shape), jnp.float32), train=False)
  return TrainState.create(apply_fn=model.apply, params=variables['params'], tx=tx,
                           batch_stats=variables.get('batch_stats', {}))


def init_on_mesh(init_fn: Callable[[jax.Array], Any], rng: jax.Array,
                 sharding: jax.sharding.Sharding) -> tuple[Any, Any]:
  """Builds the state directly with `sharding` (no host copy); returns it and its abstract twin.

  The abstract state (shapes, dtypes and shardings, no values) is what checkpoints restore into.
  """
  init = jax.jit(init_fn, out_shardings=sharding)
  abstract = init.eval_shape(rng)  # traced once for both
  return init(rng), abstract


def abstract_on_mesh(init_fn: Callable[[jax.Array], Any], rng: jax.Array,
                     sharding: jax.sharding.Sharding) -> Any:
  """The abstract state alone: restores a checkpoint without building (compiling) a state."""
  abstract = jax.eval_shape(init_fn, rng)
  return jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), abstract)

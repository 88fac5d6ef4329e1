"""Data parallelism over one ('data',) mesh that spans every device of every process."""

from typing import Any

import jax
import numpy as np
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

from train.errors import UserError

DATA_AXIS = 'data'


def make_mesh() -> jax.sharding.Mesh:
  """All devices on one 'data' axis.

  The axis is Auto (the compiler propagates the batch sharding) rather than Explicit: flax.linen
  layers such as Dropout draw unsharded random masks, which Explicit sharding rejects.
  """
  return jax.make_mesh((jax.device_count(),), (DATA_AXIS,), axis_types=(AxisType.Auto,))


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharded(mesh: jax.sharding.Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA_AXIS))


def check_batch_size(global_batch_size: int, field: str) -> None:
  """A global batch must split evenly over the devices; say which field to change if not."""
  devices = jax.device_count()
  if global_batch_size % devices:
    raise UserError(f'config.{field}={global_batch_size} must be a multiple of the '
                    f'{devices} devices; set --config.{field} to one')


def shard_batch(batch: dict[str, np.ndarray], mesh: jax.sharding.Mesh) -> dict[str, jax.Array]:
  """Turns this process's share of a batch into global arrays sharded on the batch axis."""
  sharding = batch_sharded(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in batch.items()}


def to_host(tree: Any) -> Any:
  """Fetches (replicated) arrays to NumPy on this process."""
  return jax.tree.map(lambda x: np.asarray(jax.device_get(x)), tree)

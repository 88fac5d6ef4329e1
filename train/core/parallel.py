"""Data parallelism over one ('data',) mesh that spans every device of every process.

Two ways to run a step on it: `JitParallelism` (the default: one compiled program over global
arrays) and `PmapParallelism` (`jax.pmap` with explicit collectives), with the same interface.
"""

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

from train.core.errors import UserError

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


def check_batch_size(global_batch_size: int, field: str, micro_batches: int = 1) -> None:
  """A global batch must split evenly over the devices (and micro-batches); say so if not."""
  devices = jax.device_count()
  if global_batch_size % (devices * micro_batches):
    parts = f'{devices} devices' + (f' x {micro_batches} micro-batches (grad_accum_steps)'
                                    if micro_batches > 1 else '')
    raise UserError(f'config.{field}={global_batch_size} must be a multiple of the '
                    f'{parts}; set --config.{field} to one')


def shard_batch(batch: dict[str, np.ndarray], mesh: jax.sharding.Mesh) -> dict[str, jax.Array]:
  """Turns this process's share of a batch into global arrays sharded on the batch axis."""
  sharding = batch_sharded(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in batch.items()}


def to_host(tree: Any) -> Any:
  """Fetches (replicated) arrays to NumPy on this process."""
  return jax.tree.map(lambda x: np.asarray(jax.device_get(x)), tree)


class JitParallelism:
  """The default: one program over the global mesh; the state is replicated, the batch sharded."""

  def __init__(self, mesh: jax.sharding.Mesh):
    self.mesh = mesh
    self.axis_name = None  # collectives are implicit: the compiler inserts them

  def compile(self, fn: Callable, *, donate_state: bool = False,
              with_rng: bool = False) -> Callable:
    del with_rng  # one program: nothing to broadcast
    return jax.jit(fn, donate_argnums=0 if donate_state else ())

  def shard_batch(self, batch: dict[str, np.ndarray]) -> dict[str, jax.Array]:
    return shard_batch(batch, self.mesh)

  def put_state(self, state: Any) -> Any:
    return state

  def get_state(self, state: Any) -> Any:
    return state

  def get_output(self, tree: Any) -> Any:
    return to_host(tree)


class PmapParallelism:
  """`jax.pmap` over this process's devices: one replica of the state per device.

  Steps must reduce over `axis_name` themselves (gradient mean, BatchNorm statistics, eval sums).
  `get_state` gives the replicated single-copy state of the jit path, so checkpoints are the same
  whichever path wrote them.
  """

  def __init__(self, mesh: jax.sharding.Mesh):
    self.mesh = mesh
    self.axis_name = DATA_AXIS
    self._devices = jax.local_devices()
    local = jax.sharding.Mesh(np.array(self._devices), (DATA_AXIS,))
    self._stacked = NamedSharding(local, P(DATA_AXIS))  # the layout `jax.pmap` takes
    self._local_copies = NamedSharding(local, P())

  def compile(self, fn: Callable, *, donate_state: bool = False,
              with_rng: bool = False) -> Callable:
    """`fn(state, batch[, rng])` over devices: state and batch split, the rng broadcast."""
    return jax.pmap(fn, axis_name=self.axis_name, in_axes=(0, 0, None) if with_rng else (0, 0),
                    donate_argnums=0 if donate_state else ())

  def shard_batch(self, batch: dict[str, np.ndarray]) -> dict[str, jax.Array]:
    """The batch split on a leading device axis and put on the devices (asynchronously)."""
    n = len(self._devices)
    return {k: jax.device_put(v.reshape(n, v.shape[0] // n, *v.shape[1:]), self._stacked)
            for k, v in batch.items()}

  def put_state(self, state: Any) -> Any:
    """This process's copy of each replicated array, stacked once per local device."""
    local = jax.device_put(jax.tree.map(lambda x: x.addressable_data(0), state),
                           self._local_copies)
    return _stacked_copies(local, self._stacked)

  def get_state(self, state: Any) -> Any:
    """The state replicated over the (global) mesh, each process giving its devices' copies."""
    sharding = replicated(self.mesh)
    return jax.tree.map(
        lambda x: jax.make_array_from_single_device_arrays(
            x.shape, sharding, [shard.data for shard in x.addressable_shards]),
        _first_copy(state, self._local_copies))

  def get_output(self, tree: Any) -> Any:
    return jax.tree.map(lambda x: np.asarray(x.addressable_data(0))[0], tree)


# Each a program over the whole state, compiled once per state's shapes: indexing array by array
# compiled a program per array shape and ran one per array and device (0.4 s a call for a
# ResNet-20's state on 4 CPU devices, even compiled).
@functools.partial(jax.jit, static_argnums=1)
def _stacked_copies(tree: Any, sharding: NamedSharding) -> Any:
  copies = sharding.mesh.size
  return jax.lax.with_sharding_constraint(
      jax.tree.map(lambda x: jnp.broadcast_to(x, (copies, *x.shape)), tree), sharding)


@functools.partial(jax.jit, static_argnums=1)
def _first_copy(tree: Any, sharding: NamedSharding) -> Any:
  return jax.lax.with_sharding_constraint(jax.tree.map(lambda x: x[0], tree), sharding)


def make_parallelism(name: str, mesh: jax.sharding.Mesh) -> JitParallelism | PmapParallelism:
  """`config.parallelism`: 'jit' (default) or 'pmap'."""
  kinds = {'jit': JitParallelism, 'pmap': PmapParallelism}
  if name not in kinds:
    raise UserError(f'config.parallelism={name!r}: use one of {sorted(kinds)}')
  return kinds[name](mesh)

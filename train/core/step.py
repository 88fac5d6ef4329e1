"""Pieces every task's step shares: gradient accumulation with the device reduction, and
random keys that give the same draws under jit and pmap."""

from typing import Any, Callable

import jax
import jax.numpy as jnp

from train.core.task import Batch, StepContext

# grad_fn(params, micro_batch, rng, carry) -> (grads, metrics, carry): `metrics` are scalars
# averaged over the micro-batches; `carry` threads state such as BatchNorm statistics.
GradFn = Callable[[Any, Batch, jax.Array, Any], tuple[Any, dict[str, jax.Array], Any]]


def micro_batches(batch: Batch, count: int) -> Batch:
  """(B, ...) -> (count, B // count, ...); micro-batch i holds examples i, i + count, ...

  Strided rather than contiguous, so each micro-batch draws from every device's shard.
  """
  return jax.tree.map(
      lambda x: x.reshape(x.shape[0] // count, count, *x.shape[1:]).swapaxes(0, 1), batch)


def accumulate_gradients(grad_fn: GradFn, params: Any, batch: Batch, rng: jax.Array,
                         ctx: StepContext, carry: Any = None
                         ) -> tuple[Any, dict[str, jax.Array], Any]:
  """Mean gradients and metrics of `grad_fn` over `ctx.grad_accum_steps` micro-batches of
  `batch` (micro-batch i draws from `rng` folded with i), then over the pmap devices.

  With k micro-batches the update equals the whole batch's (BatchNorm sees each micro-batch's
  statistics) in the memory of one micro-batch.
  """
  count = ctx.grad_accum_steps

  def body(acc, micro):
    grads_sum, carry = acc
    index, micro_batch = micro
    grads, metrics, carry = grad_fn(params, micro_batch, jax.random.fold_in(rng, index), carry)
    return (jax.tree.map(jnp.add, grads_sum, grads), carry), metrics

  start = (jax.tree.map(jnp.zeros_like, params), carry)
  if count == 1:  # on XLA:CPU a loop body runs several times slower than flat code
    (grads, carry), metrics = body(start, (0, batch))
  else:
    parts = (jnp.arange(count), micro_batches(batch, count))
    (grads, carry), metrics = jax.lax.scan(body, start, parts)
    grads = jax.tree.map(lambda x: x / count, grads)
    metrics = jax.tree.map(lambda x: x.mean(0), metrics)
  if ctx.axis_name:
    grads, metrics = jax.lax.pmean((grads, metrics), ctx.axis_name)
  return grads, metrics, carry


def device_key(rng: jax.Array, ctx: StepContext) -> jax.Array:
  """`rng` folded with the device index under pmap: draws that differ between devices (such as
  dropout masks, which then differ from the jit path's)."""
  return jax.random.fold_in(rng, jax.lax.axis_index(ctx.axis_name)) if ctx.axis_name else rng


def example_keys(rng: jax.Array, batch_size: int, ctx: StepContext) -> jax.Array:
  """One key per example of this device's `batch_size` examples, the same key for the same
  global example whether the batch runs under jit (one program) or pmap (one shard per
  device), so random draws (noise, binarization) give equal numbers on both paths."""
  if not ctx.axis_name:
    return jax.random.split(rng, batch_size)
  devices = jax.lax.axis_size(ctx.axis_name)
  keys = jax.random.split(rng, batch_size * devices)
  return jax.lax.dynamic_slice_in_dim(keys, jax.lax.axis_index(ctx.axis_name) * batch_size,
                                      batch_size)


def per_example(fn: Callable, keys: jax.Array, x: jax.Array) -> Any:
  """`fn(x_i[None], key_i)` for every example i, stacked: each example draws from its own key
  (`example_keys`), so the draws do not depend on how the batch is split over devices."""
  return jax.vmap(lambda xi, key: jax.tree.map(lambda y: y[0], fn(xi[None], key)))(x, keys)

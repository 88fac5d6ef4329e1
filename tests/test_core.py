"""The core's small parts: optimizer schedules, the weight-decay mask, clipping, early stopping,
the checkpoint policy, and the run's evaluation hooks."""

import logging

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import lowerings

from configs import common
from train.core import checkpoint, optim
from train.core.checkpoint import Checkpointer
from train.core.early_stopping import EarlyStopping
from train.core.errors import UserError


def test_warmup_then_step_decay_changes_at_the_boundaries():
  config = common.optim(learning_rate=0.1, schedule='step', warmup_epochs=1.0,
                        decay_epochs=(3.0, 4.0), decay_factor=0.1)
  lr = optim.learning_rate_schedule(config, total_steps=50, steps_per_epoch=10)
  np.testing.assert_allclose([lr(0), lr(5), lr(10)], [0.0, 0.05, 0.1], rtol=1e-6)
  np.testing.assert_allclose([lr(29), lr(30), lr(39), lr(40)], [0.1, 0.01, 0.01, 0.001],
                             rtol=1e-5)


def test_cosine_reaches_zero_at_the_last_step():
  config = common.optim(learning_rate=1.0, schedule='cosine', warmup_epochs=0.5)
  lr = optim.learning_rate_schedule(config, total_steps=20, steps_per_epoch=10)
  assert float(lr(5)) == pytest.approx(1.0)
  assert float(lr(20)) == pytest.approx(0.0, abs=1e-7)
  assert 0 < float(lr(12)) < 1


def test_weight_decay_spares_biases_and_scales():
  params = {'kernel': jnp.ones((2, 2)), 'bias': jnp.ones(2), 'scale': jnp.ones(2)}
  zero = jax.tree.map(jnp.zeros_like, params)
  for name in ('sgd', 'adamw'):
    tx = optim.make_optimizer(common.optim(name=name, learning_rate=0.1, weight_decay=0.5,
                                           schedule='constant'), 10, 10)
    updates, _ = tx.update(zero, tx.init(params), params)
    assert float(jnp.abs(updates['kernel']).max()) > 0, name
    np.testing.assert_array_equal(updates['bias'], 0)
    np.testing.assert_array_equal(updates['scale'], 0)


def test_clipping_bounds_the_global_norm_first():
  config = common.optim(name='sgd', learning_rate=1.0, momentum=0.0, weight_decay=0.0,
                        schedule='constant', grad_clip_norm=1.0)
  tx = optim.make_optimizer(config, 10, 10)
  params = {'w': jnp.zeros(4)}
  grads = {'w': jnp.full(4, 10.0)}  # norm 20
  updates, _ = tx.update(grads, tx.init(params), params)
  assert float(optax.tree.norm(updates)) == pytest.approx(1.0, rel=1e-5)


def test_unknown_optimizer_and_schedule_are_user_errors():
  with pytest.raises(UserError, match="config.optim.name='lamb'"):
    optim.make_optimizer(common.optim(name='lamb'), 10, 10)
  with pytest.raises(UserError, match="config.optim.schedule='linear'"):
    optim.learning_rate_schedule(common.optim(schedule='linear'), 10, 10)


def test_early_stopping_counts_evaluations_without_improvement():
  stopper = EarlyStopping(metric='loss', patience=2, mode='min', min_delta=0.01)
  assert not stopper.update(1, {'loss': 1.0})
  assert not stopper.update(2, {'loss': 0.995})  # within min_delta: no improvement
  assert not stopper.update(3, {'loss': 0.5})  # improved: the count starts again
  assert not stopper.update(4, {'loss': 0.6})
  assert stopper.update(5, {'loss': 0.7})
  assert (stopper.best, stopper.best_step) == (0.5, 3)
  never = EarlyStopping(metric='accuracy', patience=0)
  assert not any(never.update(step, {'accuracy': 0.1}) for step in range(10))
  with pytest.raises(UserError, match="metric='accuracy' is not an eval metric"):
    EarlyStopping(metric='accuracy', patience=1).update(1, {'loss': 1.0})


def test_checkpoints_keep_the_latest_k_and_the_best(tmp_path):
  checkpointer = Checkpointer(str(tmp_path), keep=2, best_metric='accuracy')
  state = {'w': np.zeros(3, np.float32)}
  for step, accuracy in ((1, 0.5), (2, 0.9), (3, 0.6), (4, 0.7), (5, 0.65)):
    checkpointer.save(step, {'w': np.full(3, step, np.float32)}, metrics={'accuracy': accuracy})
  checkpointer.save(6, state)  # a periodic save between evaluations: no metrics
  checkpointer.wait()
  steps = sorted(int(p.name) for p in (tmp_path / 'checkpoints').iterdir() if p.name.isdigit())
  assert steps == [2, 5, 6]  # the best (0.9 at step 2) and the latest two
  assert checkpointer.best_step() == 2 and checkpointer.latest_step() == 6
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), state)
  restored = checkpointer.restore(abstract, step=checkpointer.best_step())
  np.testing.assert_array_equal(restored.state['w'], 2)
  checkpointer.close()


def test_saving_a_replicated_state_on_cpu_devices_compiles_nothing(tmp_path):
  """Orbax's default would cut each replicated array into one slice per device, compiling a
  slicing program per shape; on the CPU devices of one process each array is written whole."""
  mesh = jax.make_mesh((4,), ('data',), axis_types=(jax.sharding.AxisType.Auto,))
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  state = {f'w{i}': jax.device_put(np.full((8, 3 + i), i, np.float32), replicated)
           for i in range(3)}
  checkpointer = Checkpointer(str(tmp_path), keep=1, best_metric='accuracy')
  checkpoint.is_finite(state)  # the save's finiteness check, compiled once per state's shapes
  with lowerings() as lowered:
    checkpointer.save(1, state)
    checkpointer.wait()
  assert not lowered
  restored = checkpointer.restore(jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated), state))
  jax.tree.map(np.testing.assert_array_equal, restored.state, state)
  checkpointer.close()


def test_replacing_orbaxs_array_handler_logs_nothing(caplog):
  """Orbax warns when a type handler is replaced; a run's output should not carry it."""
  with caplog.at_level(logging.WARNING):
    checkpoint._save_replicas_whole_on_one_cpu_process.__wrapped__()
  assert not caplog.records

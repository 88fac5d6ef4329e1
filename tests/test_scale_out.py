"""Every task scales out alike: the same numbers on 1 or 4 devices and under jit or pmap, and
gradient accumulation and bfloat16 computation on each (classify: tests/test_parallel.py; the
GAN, which needs a trained classifier to score: tests/test_train_gan.py)."""

import jax
import numpy as np
import pytest
from conftest import checkpoint_params

from train import pixelcnn, upsample, vae
from train.core import parallel

TASKS = {
    'vae': (vae, 'configs/digits_vae.py:tiny', 'loss'),
    'pixelcnn': (pixelcnn, 'configs/digits_pixelcnn.py:tiny', 'loss'),
    'upsample': (upsample, 'configs/photos_sr.py:tiny', 'loss_transpose'),
}


def train(module, config, workdir, monkeypatch=None, devices=None):
  """Runs `module.train_and_evaluate`; with `devices`, on a mesh of only that many devices."""
  if devices:
    mesh = jax.make_mesh((devices,), (parallel.DATA_AXIS,), devices=jax.devices()[:devices],
                         axis_types=(jax.sharding.AxisType.Auto,))
    monkeypatch.setattr(parallel, 'make_mesh', lambda: mesh)
  module.train_and_evaluate(config, str(workdir))
  if devices:
    monkeypatch.undo()


@pytest.mark.parametrize('name', TASKS)
def test_one_or_four_devices_and_jit_or_pmap_give_the_same_run(name, tiny_config, tmp_path,
                                                               monkeypatch, assert_same_run):
  module, spec, loss = TASKS[name]
  train(module, tiny_config(spec), tmp_path / 'four')
  train(module, tiny_config(spec), tmp_path / 'one', monkeypatch, devices=1)
  train(module, tiny_config(spec, parallelism='pmap'), tmp_path / 'pmap')
  assert_same_run(tmp_path / 'four', tmp_path / 'one', loss)
  assert_same_run(tmp_path / 'four', tmp_path / 'pmap', loss)


@pytest.mark.parametrize('name', TASKS)
def test_gradient_accumulation_and_bfloat16(name, tiny_config, tmp_path, read_metrics,
                                            assert_same_run):
  module, spec, loss = TASKS[name]
  train(module, tiny_config(spec, grad_accum_steps=2, dtype='bfloat16'), tmp_path / 'both')
  losses = [r[loss] for r in read_metrics(tmp_path / 'both', 'train')]
  assert losses and all(np.isfinite(losses))
  _, params = checkpoint_params(tmp_path / 'both')
  assert {x.dtype for x in jax.tree.leaves(params)} == {np.dtype(np.float32)}
  if name != 'vae':  # deterministic steps: two micro-batches update as the whole batch does
    train(module, tiny_config(spec), tmp_path / 'whole')
    train(module, tiny_config(spec, grad_accum_steps=2), tmp_path / 'micro')
    assert_same_run(tmp_path / 'whole', tmp_path / 'micro', loss)

"""Every task scales out alike: the same numbers on 1 or 4 devices and under jit or pmap, and
gradient accumulation and bfloat16 computation on each (classify: tests/test_parallel.py; the
GAN, which needs a trained classifier to score: tests/test_train_gan.py)."""

import jax
import numpy as np
import pytest
from conftest import assert_same_run, checkpoint_params, read_metrics, train_task

from train import pixelcnn, upsample, vae

TASKS = {
    'vae': (vae, 'configs/digits_vae.py:tiny', 'loss'),
    'pixelcnn': (pixelcnn, 'configs/digits_pixelcnn.py:tiny', 'loss'),
    'upsample': (upsample, 'configs/photos_sr.py:tiny', 'loss_transpose'),
}


@pytest.mark.parametrize('name', TASKS)
def test_devices_jit_or_pmap_gradient_accumulation_and_bfloat16(name, tiny_config, tiny_run,
                                                                tmp_path, monkeypatch):
  """One run on 4 devices under jit (the session's) is the reference for every other way of
  running it."""
  module, spec, loss = TASKS[name]
  four = tiny_run(module, spec).workdir
  train_task(module, tiny_config(spec), tmp_path / 'one', monkeypatch, devices=1)
  assert_same_run(four, tmp_path / 'one', loss)
  # Under pmap, and for deterministic steps in two micro-batches, which update as the whole
  # batch does (the VAE draws its noise per micro-batch).
  accumulation = {} if name == 'vae' else dict(grad_accum_steps=2)
  train_task(module, tiny_config(spec, parallelism='pmap', **accumulation), tmp_path / 'pmap')
  assert_same_run(four, tmp_path / 'pmap', loss)

  train_task(module, tiny_config(spec, grad_accum_steps=2, dtype='bfloat16'), tmp_path / 'both')
  losses = [r[loss] for r in read_metrics(tmp_path / 'both', 'train')]
  assert losses and all(np.isfinite(losses))
  _, params = checkpoint_params(tmp_path / 'both')
  assert {x.dtype for x in jax.tree.leaves(params)} == {np.dtype(np.float32)}

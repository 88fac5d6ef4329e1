"""Scale-out: the same numbers on 1 or 4 devices, under jit or pmap, in 1 or 2 processes."""

import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest
from conftest import assert_same_run, checkpoint_params, read_metrics, train_task

from configs import digits_cnn
from train import classify
from train.core.errors import UserError

STEPS = 5  # of 32 examples


def _config(data_dir, steps=STEPS, **changes):
  """A tiny ResNet (BatchNorm, no dropout) on 8x8 digits with a constant learning rate."""
  config = digits_cnn.get_config()
  config.model = 'resnet20'
  config.model_kwargs = {'stage_sizes': (1, 1, 1), 'widths': (4, 8, 16)}
  config.data.data_dir = data_dir
  config.data.image_size = (8, 8)
  config.batch_size = 32
  config.eval_batch_size = 128
  config.num_steps = steps
  config.eval_every_epochs = 1.0
  config.checkpoint_every_epochs = 1.0
  config.log_every_steps = 1
  config.optim.schedule = 'constant'
  config.optim.warmup_epochs = 0.0
  config.optim.name = 'sgd'
  config.optim.learning_rate = 0.05
  for name, value in changes.items():
    config[name] = value
  return config


def _train(config, workdir, monkeypatch=None, devices=None):
  train_task(classify, config, workdir, monkeypatch, devices)


def _losses(workdir):
  return [r['loss'] for r in read_metrics(workdir, 'train')]


@pytest.fixture(name='reference', scope='session')
def reference_fixture(data_dir, tmp_path_factory):
  """The workdir of STEPS steps on 4 devices under jit: what every other way must reproduce."""
  workdir = tmp_path_factory.mktemp('four')
  _train(_config(data_dir), workdir)
  assert jax.device_count() == 4
  assert len(_losses(workdir)) == STEPS
  return workdir


def test_one_device_and_pmap_match_four_devices_under_jit(reference, data_dir, tmp_path,
                                                           monkeypatch):
  _train(_config(data_dir), tmp_path / 'one', monkeypatch, devices=1)
  _train(_config(data_dir, parallelism='pmap'), tmp_path / 'pmap')
  assert_same_run(reference, tmp_path / 'one')
  assert_same_run(reference, tmp_path / 'pmap')


def test_checkpoints_resume_on_other_device_counts_and_paths(reference, data_dir, tmp_path,
                                                             monkeypatch):
  chain = tmp_path / 'chain'
  _train(_config(data_dir, steps=2), chain, monkeypatch, devices=1)
  _train(_config(data_dir, steps=3), chain)  # saved on 1 device, resumed on 4
  _train(_config(data_dir, steps=4, parallelism='pmap'), chain)  # jit -> pmap
  _train(_config(data_dir, steps=STEPS), chain, monkeypatch, devices=1)  # pmap on 4 -> jit on 1
  assert_same_run(reference, chain)


def test_gradient_accumulation_matches_the_whole_batch(data_dir, tmp_path):
  # The small CNN: no BatchNorm, whose statistics would differ per micro-batch.
  changes = dict(model='cnn', model_kwargs={'features': (4, 8), 'hidden': 16,
                                            'dropout_rate': 0.0})
  _train(_config(data_dir, **changes), tmp_path / 'whole')
  _train(_config(data_dir, grad_accum_steps=4, **changes), tmp_path / 'micro')
  assert_same_run(tmp_path / 'whole', tmp_path / 'micro')


def test_bfloat16_computation_keeps_float32_parameters(data_dir, tmp_path):
  _train(_config(data_dir, dtype='bfloat16'), tmp_path / 'bf16')
  _, params = checkpoint_params(tmp_path / 'bf16')
  assert {x.dtype for x in jax.tree.leaves(params)} == {np.dtype(np.float32)}
  assert all(np.isfinite(loss) for loss in _losses(tmp_path / 'bf16'))


def test_bad_parallelism_and_accumulation_are_user_errors(data_dir, tmp_path):
  with pytest.raises(UserError, match="config.parallelism='pmapp'"):
    _train(_config(data_dir, parallelism='pmapp'), tmp_path / 'bad')
  with pytest.raises(UserError, match=r'batch_size=32 must be a multiple of the 4 devices x 16'):
    _train(_config(data_dir, grad_accum_steps=16), tmp_path / 'bad')


def _free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


@pytest.mark.parametrize('parallelism', ['jit', 'pmap'])
def test_two_processes_match_one_process_with_four_devices(parallelism, reference, data_dir,
                                                           tmp_path):
  # The command line of `_config` (the reference's), on 2 processes of 2 devices each.
  flags = ['--config', 'configs/digits_cnn.py', '--config.model=resnet20',
           '--config.model_kwargs.stage_sizes=(1,1,1)', '--config.model_kwargs.widths=(4,8,16)',
           f'--config.data.data_dir={data_dir}', '--config.data.image_size=8,8',
           '--config.batch_size=32', '--config.eval_batch_size=128', f'--config.num_steps={STEPS}',
           '--config.eval_every_epochs=1', '--config.checkpoint_every_epochs=1',
           '--config.log_every_steps=1', '--config.optim.schedule=constant',
           '--config.optim.warmup_epochs=0', '--config.optim.name=sgd',
           '--config.optim.learning_rate=0.05', f'--config.parallelism={parallelism}']
  env = dict(os.environ, JAX_NUM_CPU_DEVICES='2')
  port = _free_port()
  runs = [subprocess.Popen(
      [sys.executable, '-m', 'train.classify', *flags, '--workdir', str(tmp_path / 'two'),
       '--coordinator_address', f'127.0.0.1:{port}', '--num_processes', '2',
       '--process_id', str(i)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
      text=True) for i in range(2)]
  outputs = [run.communicate(timeout=400)[0] for run in runs]
  assert [run.returncode for run in runs] == [0, 0], outputs
  assert 'on 4 device(s)' in outputs[0]
  assert 'Final eval' not in outputs[1]  # only process 0 reports
  assert_same_run(reference, tmp_path / 'two')

"""Test-wide JAX settings (four fake CPU devices, fast compiles) and the fixtures tests share."""

# PyTorch's triton (imported with torchvision and timm, the weight tests' reference models)
# crashes the process when TensorFlow's libraries were loaded before it: load it first.
import torchvision  # noqa: F401

# isort: split
import atexit
import contextlib
import gc
import io
import json
import os
import pathlib
import shutil
import tempfile
from typing import Callable, NamedTuple

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from train.core import config as config_lib
from train.core import parallel

# Keras reference models (weight-conversion tests) build and run eagerly: about 10× faster on
# the TensorFlow backend, Keras' own default, than on JAX's, which compiles op by op.
os.environ.setdefault('KERAS_BACKEND', 'tensorflow')

# Must run before the first JAX computation creates the CPU backend.
jax.config.update('jax_num_cpu_devices', 4)
# The suite compiles many small programs and runs each only a few times: compile time is most of
# its time. XLA:CPU's older fusion code generator compiles the tests' programs in about 60 % of
# the time of its default one (set here, before the backend starts). Both settings go in the
# environment too, for the runs tests start in subprocesses.
os.environ['JAX_DISABLE_MOST_OPTIMIZATIONS'] = '1'
jax.config.update('jax_disable_most_optimizations', True)
os.environ['XLA_FLAGS'] = ' '.join(
    [os.environ.get('XLA_FLAGS', ''), '--xla_cpu_use_fusion_emitters=false']).strip()
# Every tiny training run builds its steps afresh, so the suite compiles the same programs many
# times over: one compilation cache for the session (its workers and the runs they start in
# subprocesses, which inherit the variable) compiles each once, and nothing is written to the
# user's cache directory (train/core/compilation_cache.py). Made by the first process.
if 'PYTEST_XDIST_WORKER' not in os.environ:
  os.environ['JAX_COMPILATION_CACHE_DIR'] = tempfile.mkdtemp(prefix='zoo-test-jax-cache-')
  atexit.register(shutil.rmtree, os.environ['JAX_COMPILATION_CACHE_DIR'], ignore_errors=True)
jax.config.update('jax_compilation_cache_dir', os.environ['JAX_COMPILATION_CACHE_DIR'])
jax.config.update('jax_persistent_cache_min_compile_time_secs', 0)
# Python's cycle collector took 6-7 % of each worker's CPU time (29 and 35 s of a full run), most
# of it in full collections of the large heap TensorFlow, PyTorch and JAX's caches make (about
# 1 s each). Collecting less often brought that to 8 and 11 s; the largest process peaked at the
# same 3.6 GB over four of the heaviest test files.
gc.set_threshold(10_000, 10, 100)


# Session fixtures that train a run for several tests. The tests using one are sent to one
# worker (`--dist loadgroup`), so that the run is trained once, not once per worker.
SHARED_RUNS = ('reference', 'transfer_runs', 'trained_run', 'classifier', 'finished_run',
               'tiny_run')


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups
def pytest_collection_modifyitems(items):
  for item in items:
    shared = [name for name in SHARED_RUNS if name in getattr(item, 'fixturenames', ())]
    if shared:
      item.add_marker(pytest.mark.xdist_group(shared[0]))


@pytest.fixture(scope='session')
def data_dir(tmp_path_factory) -> str:
  """One TFDS data_dir for the session: each offline dataset is prepared there once."""
  return str(tmp_path_factory.mktemp('tfds'))


class TinyRun(NamedTuple):
  workdir: pathlib.Path
  final: dict  # what train_and_evaluate returned
  output: str  # what it printed


@pytest.fixture(scope='session')
def tiny_run(data_dir, tmp_path_factory) -> Callable[..., TinyRun]:
  """`tiny_run(train.vae, 'configs/digits_vae.py:tiny')`: that recipe trained once per session
  on the 4 devices under jit, for the tests that only read such a run (the short-run tests and
  the scale-out references). A test that writes to the run copies its workdir first."""
  runs = {}
  def get(module, spec: str) -> TinyRun:
    if spec not in runs:
      config = config_lib.load_config(spec)
      config.data.data_dir = data_dir
      workdir = tmp_path_factory.mktemp('tiny_run')
      output = io.StringIO()
      with contextlib.redirect_stdout(output):
        final = module.train_and_evaluate(config, str(workdir))
      runs[spec] = TinyRun(workdir, final, output.getvalue())
    return runs[spec]
  return get


def read_metrics(workdir, split: str | None = None) -> list[dict]:
  """The records of WORKDIR/metrics.jsonl, those of `split` ('train', 'validation', 'eval',
  'test') if given."""
  with open(os.path.join(workdir, 'metrics.jsonl'), encoding='utf-8') as f:
    records = [json.loads(line) for line in f]
  return [r for r in records if split is None or r['split'] == split]


@pytest.fixture
def tiny_config(data_dir) -> Callable:
  """`tiny_config('configs/x.py:tiny', **changes)`: the recipe's tiny variant on the session's
  data_dir, with `changes` (dotted names as keys' parts: `model_kwargs={...}`) applied."""
  def make(spec: str, **changes):
    config = config_lib.load_config(spec)
    config.data.data_dir = data_dir
    with config.unlocked():
      for name, value in changes.items():
        config[name] = value
    return config
  return make


def checkpoint_params(workdir) -> tuple[int, dict]:
  """(step, parameters as NumPy) of the latest checkpoint in WORKDIR, whatever wrote it."""
  return checkpoint_arrays(workdir, 'params')


def checkpoint_arrays(workdir, name: str) -> tuple[int, dict]:
  """(step, every `name` subtree as NumPy: 'params', 'batch_stats') of the latest checkpoint
  in WORKDIR, keyed by the path of the state that holds it."""
  checkpoints = os.path.join(workdir, 'checkpoints')
  step = max(int(name) for name in os.listdir(checkpoints) if name.isdigit())
  path = os.path.join(checkpoints, str(step), 'state')
  checkpointer = ocp.StandardCheckpointer()
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
                        checkpointer.metadata(path).item_metadata.tree)
  state = jax.tree.map(np.asarray, checkpointer.restore(path, target))
  # Every `name` subtree: one network's, or each of several networks'.
  found = {}
  def collect(node, prefix):
    if isinstance(node, dict):
      for key, child in node.items():
        if key == name:
          found[prefix or name] = child
        else:
          collect(child, f'{prefix}/{key}' if prefix else key)
  collect(state, '')
  return step, found


def assert_same_run(workdir_a, workdir_b, *losses: str) -> None:
  """Two runs wrote the same train losses (each of the metrics `losses`, default 'loss') and
  the same final parameters."""
  step_a, params_a = checkpoint_params(workdir_a)
  step_b, params_b = checkpoint_params(workdir_b)
  assert step_a == step_b
  for loss in losses or ('loss',):
    values = [[r[loss] for r in read_metrics(w, 'train')] for w in (workdir_a, workdir_b)]
    assert values[0], f'no train records in {workdir_a}'
    np.testing.assert_allclose(values[0], values[1], rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
               params_a, params_b)


@contextlib.contextmanager
def lowerings():
  """Lists every program JAX lowers (to compile, or to find in its caches) inside the block."""
  lowered = []
  def count(event, *_, **__):
    if event == '/jax/core/compile/jaxpr_to_mlir_module_duration':
      lowered.append(event)
  jax.monitoring.register_event_duration_secs_listener(count)
  try:
    yield lowered
  finally:
    jax.monitoring.unregister_event_duration_listener(count)


def train_task(module, config, workdir, monkeypatch=None, devices: int | None = None) -> None:
  """Runs `module.train_and_evaluate`; with `devices`, on a mesh of only that many devices."""
  if devices:
    mesh = jax.make_mesh((devices,), (parallel.DATA_AXIS,), devices=jax.devices()[:devices],
                         axis_types=(jax.sharding.AxisType.Auto,))
    monkeypatch.setattr(parallel, 'make_mesh', lambda: mesh)
  module.train_and_evaluate(config, str(workdir))
  if devices:
    monkeypatch.undo()

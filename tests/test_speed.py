"""Speed switches of the shared driver: device prefetch, the compilation cache's place, the
profiler trace of chosen steps."""

import glob
import os

import chex
import jax
import jax.numpy as jnp
import pytest

import zoo
from configs import digits_cnn
from train import classify
from train.core import build, compilation_cache, loop, profiling
from train.core.errors import UserError


def test_prefetch_keeps_one_batch_on_the_devices_ahead_and_the_order():
  put = []
  batches = loop.prefetch_to_device(iter(range(5)), lambda b: put.append(b) or b * 10)
  assert next(batches) == 0 and put == [0, 1]  # batch 1 is transferred while step 1 runs
  assert list(batches) == [10, 20, 30, 40] and put == [0, 1, 2, 3, 4]


def test_the_compilation_cache_goes_to_the_user_cache_unless_turned_off():
  home = os.path.expanduser('~')
  assert compilation_cache.directory(True, {}) == os.path.join(home, '.cache', 'zoo', 'jax')
  assert compilation_cache.directory(True, {'XDG_CACHE_HOME': '/c'}) == '/c/zoo/jax'
  assert compilation_cache.directory(True, {'JAX_COMPILATION_CACHE_DIR': '/j'}) == '/j'
  assert compilation_cache.directory(False, {}) is None
  assert compilation_cache.directory(True, {'ZOO_COMPILATION_CACHE': '0'}) is None
  assert compilation_cache.directory(True, {'ZOO_COMPILATION_CACHE': 'off'}) is None


@pytest.mark.parametrize('value', [(3,), (0, 2), (4, 2), (1.5, 2), 'a', (True, 2)])
def test_bad_profile_steps_are_one_line_errors(value):
  with pytest.raises(UserError, match=r'config.profile_steps=.*\(first, last\)'):
    profiling.check_steps(value)


def test_profile_steps_past_the_run_are_an_error_before_training(tiny_config, tmp_path):
  config = tiny_config('configs/digits_cnn.py:tiny', profile_steps=(3, 9))
  with pytest.raises(UserError, match=r'profile_steps=\(3, 9\): the run has 4 steps'):
    classify.train_and_evaluate(config, str(tmp_path / 'run'))


def test_the_profiled_steps_write_a_trace(tmp_path):
  profiler = profiling.StepProfiler((2, 3), str(tmp_path), start_step=0)
  step = jax.jit(lambda x: x @ x)
  x = jnp.ones((8, 8))
  for i in range(1, 5):
    profiler.before(i)
    x = step(x)
    profiler.after(i, x)
  traces = glob.glob(str(tmp_path / 'profile/plugins/profile/*/*'))
  assert any(t.endswith('.xplane.pb') for t in traces), traces
  assert any(t.endswith('.trace.json.gz') for t in traces), traces


@pytest.mark.parametrize('name, kwargs', [
    ('resnet50', dict(stage_sizes=(1, 1), widths=(2, 4))),  # Bottlenecks, projection shortcuts
    ('convnext_tiny', dict(stage_sizes=(1,), widths=(8,), drop_path_rate=0.5)),
])
def test_remat_gives_the_same_loss_and_gradients(name, kwargs):
  images = jax.random.normal(jax.random.key(1), (2, 8, 8, 3))
  model = zoo.create_model(name, num_classes=3, **kwargs)
  variables = model.init(jax.random.key(0), images, train=False)
  params, rest = variables['params'], {k: v for k, v in variables.items() if k != 'params'}

  def loss_and_grads(model):
    def loss(params):
      logits, _ = model.apply({'params': params, **rest}, images, train=True,
                              mutable=['batch_stats'], rngs={'dropout': jax.random.key(2)})
      return jnp.mean(logits ** 2)
    return jax.jit(jax.value_and_grad(loss))(params)

  expected, remat = loss_and_grads(model), loss_and_grads(model.clone(remat=True))
  chex.assert_trees_all_close(remat, expected, rtol=1e-5, atol=1e-6)


def test_remat_on_a_model_without_blocks_is_a_one_line_error():
  config = digits_cnn.get_config('tiny')
  config.remat = True
  with pytest.raises(UserError, match=r"config.remat=True: config.model='cnn' has no blocks"):
    build.classifier(config, 10)

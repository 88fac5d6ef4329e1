"""train.upsample and its parts: the metrics, the photo patches, the steps, and short runs."""

import functools
import json
import math
import os
import shutil

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image
from sklearn import datasets as sk_datasets

import zoo
from configs import common, photos_sr
from train import upsample
from train.core import optim, parallel
from train.core import run as run_lib
from train.core.errors import UserError
from train.core.state import create_train_state, init_on_mesh
from train.data import photos as sr_data
from train.data import pipeline as input_pipeline
from train.metrics import image_metrics
from zoo import decoders

ROWS, COLS = np.mgrid[:64, :64]


def _image(values):
  """(H, W) -> (1, H, W, 1)."""
  return jnp.asarray(values, jnp.float32)[None, :, :, None]


def _pattern(period):
  """A +-1 pattern repeating every `period` pixels in both directions (not a pure sinusoid)."""
  steps = lambda x: np.where(x % period < period // 2, 1.0, -1.0)
  return steps(ROWS) * steps(COLS)


def _photo_patch():
  photo = sk_datasets.load_sample_images().images[0]
  return jnp.asarray(photo[100:164, 100:164], jnp.float32)[None] / 255


def test_checkerboard_score_is_high_on_checkerboards_and_low_on_smooth_images():
  score = lambda image, period=2: float(image_metrics.checkerboard_score(image, period)[0])
  assert score(_image(0.5 + 0.3 * _pattern(2))) == pytest.approx(1.0, abs=1e-5)
  assert score(_image(0.5 + 0.3 * _pattern(4)), period=4) == pytest.approx(1.0, abs=1e-5)
  # The period-2 frequencies are on the period-4 lattice too.
  assert score(_image(0.5 + 0.3 * _pattern(2)), period=4) == pytest.approx(1.0, abs=1e-5)
  smooth = [np.sin(2 * np.pi * ROWS / 64 + 1) * np.cos(2 * np.pi * COLS / 32),  # periodic
            ROWS / 64 + 0.2 * COLS / 64,  # a ramp: opposite borders differ
            np.exp(-((ROWS - 20) ** 2 + (COLS - 40) ** 2) / 200)]
  for image in smooth:
    assert score(_image(image)) < 1e-6
  photo = _photo_patch()
  assert score(photo) < 1e-2
  assert score(photo + 0.02 * _image(_pattern(2))) > 10 * score(photo)


def test_transposed_convolution_draws_a_checkerboard_on_a_flat_input():
  flat = jnp.full((1, 16, 16, 8), 0.5)
  for seed in range(3):
    outputs = {}
    for name in ('transpose', 'resize'):
      decoder = decoders.get_decoder(name)(features=(), out_channels=3, batch_norm=False)
      variables = decoder.init(jax.random.key(seed), flat, train=False)
      outputs[name] = decoder.apply(variables, flat, train=False)
    # Untrained: the four output phases of a stride-2 transposed convolution use different
    # kernel taps; nearest resizing gives every phase the same input, flat away from borders.
    assert float(image_metrics.checkerboard_score(outputs['transpose'])[0]) > 0.9
    assert float(image_metrics.checkerboard_score(outputs['resize'])[0]) < 1e-2


def test_psnr():
  target = jnp.full((2, 8, 8, 3), 0.5)
  np.testing.assert_allclose(image_metrics.psnr(target + 0.01, target), [40.0, 40.0], rtol=1e-5)
  np.testing.assert_allclose(image_metrics.psnr(target, target), [100.0, 100.0])
  # Values above 1 are clipped, as a saved image would be.
  np.testing.assert_allclose(image_metrics.psnr(jnp.full((1, 4, 4, 1), 3.0),
                                                jnp.full((1, 4, 4, 1), 0.9)), [20.0], rtol=1e-5)
  border_only = target.at[:, 0].add(0.2)
  np.testing.assert_allclose(image_metrics.psnr(border_only, target, shave=1), [100.0, 100.0])
  assert float(image_metrics.squared_error(border_only, target)[0]) == pytest.approx(
      8 * 3 * 0.04, rel=1e-5)


def test_low_resolution_inputs_and_the_bicubic_baseline():
  flat = jnp.full((2, 16, 16, 3), 0.25)
  for scale in (2, 4):
    small = sr_data.low_resolution(flat, scale)
    chex.assert_shape(small, (2, 16 // scale, 16 // scale, 3))
    np.testing.assert_allclose(small, 64 / 255, atol=1e-6)  # 0.25 * 255 = 63.75, rounded
  small = sr_data.low_resolution(_photo_patch(), 2)
  np.testing.assert_allclose(small * 255, np.round(small * 255), atol=1e-4)  # 8-bit levels
  big = sr_data.bicubic_upscale(small, 2)
  chex.assert_shape(big, (1, 64, 64, 3))
  repeated = jnp.repeat(jnp.repeat(small, 2, axis=1), 2, axis=2)
  psnr = lambda x: float(image_metrics.psnr(x, _photo_patch(), shave=2)[0])
  assert psnr(big) > psnr(repeated) + 0.5


def test_patch_corners_keep_test_tiles_out_of_training_windows():
  size = (427, 640)
  tests = sr_data.patch_corners(size, 'test')
  trains = sr_data.patch_corners(size, 'train')
  assert (len(tests), len(trains)) == (12, 1180)
  patch = sr_data.PATCH
  for top, left in tests + trains:
    assert 0 <= top <= size[0] - patch and 0 <= left <= size[1] - patch
  overlaps = lambda a, b: abs(a[0] - b[0]) < patch and abs(a[1] - b[1]) < patch
  assert not any(overlaps(t, w) for t in tests for w in trains)
  assert len(set(tests)) == len(tests) and len(set(trains)) == len(trains)


def _tiny_states(mesh, scale=2):
  tx = optim.make_optimizer(common.optim(name='adam', learning_rate=3e-3,
                                                       schedule='constant'), 100, 10)
  init = lambda rng: {name: create_train_state(
      zoo.create_model(f'sr_{name}', scale=scale, features=8, num_convs=1), tx,
      jax.random.fold_in(rng, i), (16 // scale, 16 // scale, 3))
                      for i, name in enumerate(upsample.DECODERS)}
  return init_on_mesh(init, jax.random.key(0), parallel.replicated(mesh))[0]


def _smooth_batch(n=8):
  rng = np.random.default_rng(0)
  rows, cols = np.mgrid[:16, :16] / 16
  phases = rng.uniform(0, 2 * np.pi, (n, 1, 1, 3))
  return (0.5 + 0.4 * np.sin(2 * np.pi * rows[None, ..., None] + phases)
          * np.cos(np.pi * cols[None, ..., None])).astype(np.float32)


def test_train_step_is_traced_once_and_lowers_both_losses():
  mesh = parallel.make_mesh()
  states = _tiny_states(mesh)
  step = jax.jit(functools.partial(chex.assert_max_traces(upsample.train_step, n=1), scale=2),
                 donate_argnums=0)
  batch = parallel.shard_batch({'image': _smooth_batch()}, mesh)
  history = []
  for _ in range(30):
    states, metrics = step(states, batch, jax.random.key(0))
    history.append({k: float(v) for k, v in metrics.items()})
  for name in upsample.DECODERS:
    assert int(states[name].step) == 30
    assert history[-1][f'loss_{name}'] < 0.5 * history[0][f'loss_{name}']


def test_eval_counts_each_example_once_with_padding():
  mesh = parallel.make_mesh()
  states = _tiny_states(mesh)
  images = _smooth_batch()
  mask = np.array([1, 1, 1, 1, 1, 0, 0, 0], bool)
  padded = {'image': images, 'label': np.zeros(8, np.int32), 'mask': mask}
  task = upsample.UpsampleTask(photos_sr.get_config('2'))
  task.info = input_pipeline.DatasetInfo(2, images.shape[1:], 0, 0, ())
  eval_fn = jax.jit(lambda states, batch, rng: upsample.eval_step(states, batch, scale=2))
  got, first = run_lib.evaluate_split(task, eval_fn, states, [padded],
                                      parallel.JitParallelism(mesh), jax.random.key(0))
  assert got['count'] == 5
  np.testing.assert_array_equal(first, images[:5])
  pictures = upsample.predict(states, jnp.asarray(images[:5]), scale=2)
  target = images[:5, 2:-2, 2:-2]
  for name in ('bicubic', *upsample.DECODERS):
    output = np.clip(np.asarray(pictures[name])[:, 2:-2, 2:-2], 0, 1)
    mse = np.mean(np.square(output - target))
    np.testing.assert_allclose(got[f'psnr_{name}'], -10 * np.log10(mse), rtol=1e-4)
    per_image = -10 * np.log10(np.mean(np.square(output - target), axis=(1, 2, 3)))
    np.testing.assert_allclose(got[f'mean_psnr_{name}'], per_image.mean(), rtol=1e-4)
  on_lattice, total = image_metrics.lattice_energy(pictures['transpose'], 2)
  np.testing.assert_allclose(got['checkerboard_db_transpose'],
                             10 * np.log10(np.sum(on_lattice) / np.sum(total)), rtol=1e-4)


RECIPE = 'configs/photos_sr.py:tiny'


def test_a_short_run_writes_metrics_and_grids_and_resumes(tiny_config, tiny_run, tmp_path,
                                                         capsys):
  run = tiny_run(upsample, RECIPE)
  workdir = shutil.copytree(run.workdir, tmp_path / 'run')  # resumed below: a copy
  final = run.final
  assert final['count'] == 24
  with open(os.path.join(workdir, 'metrics.jsonl'), encoding='utf-8') as f:
    records = [json.loads(line) for line in f]
  assert [r['step'] for r in records if r['split'] == 'eval'] == [4]  # 147 steps an epoch
  for name in ('bicubic', 'transpose', 'resize'):
    for metric in ('psnr', 'mean_psnr', 'checkerboard_db', 'lattice_error_db'):
      assert math.isfinite(final[f'{metric}_{name}'])
  assert math.isfinite(final['checkerboard_db_target'])
  # Bicubic has nothing at the lattice frequencies: its error there is all the target's.
  assert final['lattice_error_db_bicubic'] == pytest.approx(0.0, abs=0.1)
  with Image.open(os.path.join(workdir, 'images', 'comparison_0000004.png')) as grid:
    # Rows of input, bicubic, transpose, resize, target: 64x64 patches shown twice as large.
    assert grid.size == (5 * 129 + 1, 3 * 129 + 1)
  capsys.readouterr()
  again = upsample.train_and_evaluate(tiny_config(RECIPE), str(workdir))
  assert 'Resuming from the checkpoint at step 4' in capsys.readouterr().out
  assert again['psnr_resize'] == pytest.approx(final['psnr_resize'], rel=1e-6)


def test_a_named_tfds_dataset_trains_under_mock_data(tiny_config, tmp_path):
  config = tiny_config(RECIPE, scale=4, decoders=('transpose',), num_steps=2,
                       eval_every_epochs=1.0, checkpoint_every_epochs=1.0, eval_batch_size=16)
  config.data.dataset = 'cifar10'
  with tfds.testing.mock_data(num_examples=32):
    final = upsample.train_and_evaluate(config, str(tmp_path / 'cifar10'))
  assert final['count'] == 32
  assert {'psnr_transpose', 'psnr_bicubic', 'checkerboard_db_transpose'} <= final.keys()
  assert 'psnr_resize' not in final


@pytest.mark.parametrize('changes, message', [
    (dict(scale=3), 'config.scale=3: must be a power of two'),
    (dict(decoders=('transpose', 'pixelshuffle')), 'config.decoders='),
    (dict(normalization='featurewise'), "config.data.normalization='featurewise'"),
])
def test_config_errors_name_the_field(tiny_config, tmp_path, changes, message):
  config = tiny_config(RECIPE)
  for name, value in changes.items():
    (config.data if name in config.data else config)[name] = value
  with pytest.raises(UserError, match=message):
    upsample.train_and_evaluate(config, str(tmp_path / 'bad'))

"""Semantic segmentation: the models, aligned augmentation, the metrics, the mask folder's
checks, and short runs (a mask folder, then predict; the same run on 1 or 4 devices and under
jit or pmap; bfloat16 with gradient accumulation; oxford_iiit_pet under mock data)."""

import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from conftest import assert_same_run, checkpoint_params, read_metrics, train_task
from PIL import Image

import zoo
from configs import common, segment_base
from train import predict, segment
from train.core import cli
from train.core.checkpoint import Checkpointer
from train.core.errors import UserError
from train.data import segmentation as segment_data
from train.metrics import segmentation as segment_metrics

IGNORE = 255


@pytest.mark.parametrize('decoder', ['transpose', 'resize'])
def test_unet_gives_float32_logits_at_the_input_size(decoder):
  model = zoo.create_model('unet', num_classes=5, width=4, depth=2, decoder=decoder,
                           dtype=jnp.bfloat16)
  x = jnp.zeros((2, 16, 24, 3))
  variables = model.init(jax.random.key(0), x, train=False)
  logits, _ = model.apply(variables, x, train=True, mutable=['batch_stats'])
  chex.assert_shape(logits, (2, 16, 24, 5))
  assert logits.dtype == jnp.float32
  with pytest.raises(ValueError, match='multiples of 4'):
    model.apply(variables, jnp.zeros((1, 18, 24, 3)), train=False)


def test_fcn_reads_the_backbone_stages_with_the_classifier_parameters():
  model = zoo.fcn.fcn('resnet20', num_classes=4, num_stages=2, features=8)
  x = jax.random.normal(jax.random.key(1), (2, 16, 16, 3))
  variables = model.init(jax.random.key(0), x, train=False)
  chex.assert_shape(model.apply(variables, x, train=False), (2, 16, 16, 4))
  # The backbone's variables are a zoo classifier's, unchanged: its features read them.
  backbone = {k: v['encoder'] for k, v in variables.items()}
  features = zoo.extract_features(zoo.create_model('resnet20'), backbone, x)
  assert features['stage3'].shape == (2, 4, 4, 64)
  _, updates = model.apply(variables, x, train=True, mutable=['batch_stats'])
  moved = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), updates['batch_stats']['encoder'],
                       backbone['batch_stats'])
  assert all(jax.tree.leaves(moved))
  assert 'fcn_resnet18' in zoo.list_models('fcn_*')


def test_augmentation_moves_image_and_mask_together():
  # Channels hold each pixel's (row, column); the label encodes the same as row * 16 + column.
  rows, cols = np.mgrid[:16, :16].astype(np.float32)
  image = tf.constant(np.stack([rows, cols], -1) / 16)
  labels = tf.constant((rows * 16 + cols).astype(np.int32)[..., None])
  kept = 0
  for i in range(20):
    out_image, out_labels = segment_data.augment_pair(
        image, labels, tf.constant([i, 0]), flip=True, scale=(0.6, 1.6), ignore_label=1000)
    out_labels = out_labels.numpy()[..., 0]
    valid = out_labels != 1000
    kept += valid.sum()
    where = out_image.numpy()[valid] * 16
    # Bilinear (image) and nearest (labels) resizing agree to within a pixel.
    np.testing.assert_allclose(where[:, 0], out_labels[valid] // 16, atol=1.0)
    np.testing.assert_allclose(where[:, 1], out_labels[valid] % 16, atol=1.0)
  assert kept > 0.5 * 20 * 256


def test_mean_iou_on_a_hand_computed_example():
  labels = jnp.array([[[0, 0, 1], [1, 2, IGNORE]], [[2, 2, 2], [2, 2, 2]]])
  predictions = jnp.array([[[0, 1, 1], [1, 1, 2]], [[0, 0, 0], [0, 0, 0]]])
  # The second example is padding: nothing of it counts.
  confusion = segment_metrics.confusion_matrix(predictions, labels, num_classes=3,
                                               ignore_label=IGNORE,
                                               example_mask=jnp.array([True, False]))
  np.testing.assert_array_equal(confusion, [[1, 1, 0], [0, 2, 0], [0, 1, 0]])
  metrics = segment_metrics.summarize(np.asarray(confusion), ('bg', 'a', 'b'))
  # IoU: class 0: 1 / (2 + 1 - 1); class 1: 2 / (2 + 4 - 2); class 2: 0 / (1 + 0 - 0).
  assert metrics['iou_bg'] == pytest.approx(1 / 2)
  assert metrics['iou_a'] == pytest.approx(1 / 2)
  assert metrics['iou_b'] == 0.0
  assert metrics['mean_iou'] == pytest.approx(1 / 3)
  assert metrics['pixel_accuracy'] == pytest.approx(3 / 5)
  # A class in neither labels nor predictions has no IoU and does not lower the mean.
  wider = segment_metrics.summarize(np.pad(np.asarray(confusion), (0, 1)), ('bg', 'a', 'b', 'c'))
  assert 'iou_c' not in wider and wider['mean_iou'] == pytest.approx(1 / 3)


def test_ignored_pixels_count_in_no_loss_and_no_confusion():
  labels = jnp.array([[[0, 1], [IGNORE, 1]]])
  logits = jax.random.normal(jax.random.key(0), (1, 2, 2, 2))
  changed = logits.at[0, 1, 0].set(jnp.array([50.0, -50.0]))  # only the ignored pixel
  for fn in (lambda x: segment_metrics.cross_entropy_sum(x, labels, ignore_label=IGNORE),
             lambda x: segment_metrics.confusion_matrix(x.argmax(-1), labels, num_classes=2,
                                                        ignore_label=IGNORE)):
    chex.assert_trees_all_close(fn(logits), fn(changed))
  total, pixels = segment_metrics.cross_entropy_sum(logits, labels, ignore_label=IGNORE)
  log_p = jax.nn.log_softmax(logits)[0]
  assert int(pixels) == 3
  assert float(total) == pytest.approx(-float(log_p[0, 0, 0] + log_p[0, 1, 1] + log_p[1, 1, 1]),
                                       rel=1e-5)


def test_class_weights_weigh_each_pixel_by_its_class():
  labels = jnp.array([[[0, 1], [IGNORE, 1]]])
  logits = jax.random.normal(jax.random.key(0), (1, 2, 2, 2))
  total, weight = segment_metrics.cross_entropy_sum(logits, labels, ignore_label=IGNORE,
                                                    class_weights=(0.25, 2.0))
  log_p = jax.nn.log_softmax(logits)[0]
  assert float(weight) == pytest.approx(0.25 + 2 * 2.0)
  assert float(total) == pytest.approx(
      -float(0.25 * log_p[0, 0, 0] + 2.0 * (log_p[0, 1, 1] + log_p[1, 1, 1])), rel=1e-5)


def test_class_weights_not_one_per_class_stop_the_run(tiny_config, tmp_path):
  root = _folder(tmp_path / 'data')
  with pytest.raises(UserError, match=r'config.class_weights=\(1.0, 2.0\): expected \(\) or 3'):
    segment.train_and_evaluate(_folder_config(tiny_config, root, class_weights=(1.0, 2.0)),
                               str(tmp_path / 'run'))


def _write_pair(root, name, labels, *, image_size=None, colors=None):
  """root/images/<name>.png (an image whose red channel shows the labels) and its mask."""
  os.makedirs(os.path.join(root, 'images'), exist_ok=True)
  os.makedirs(os.path.join(root, 'masks'), exist_ok=True)
  height, width = image_size or labels.shape
  red = np.resize((labels * 80).astype(np.uint8), (height, width))
  Image.fromarray(np.stack([red, red // 2, 255 - red], -1)).save(
      os.path.join(root, 'images', f'{name}.png'))
  mask = labels.astype(np.uint8) if colors is None else colors[labels].astype(np.uint8)
  Image.fromarray(mask).save(os.path.join(root, 'masks', f'{name}.png'))


def _folder(root, count=10):
  rng = np.random.default_rng(0)
  for i in range(count):
    labels = np.zeros((16, 16), np.int64)
    top, left = rng.integers(0, 8, 2)
    labels[top:top + 8, left:left + 8] = 1 + i % 2
    _write_pair(root, f'pic{i}', labels)
  return str(root)


def _folder_data(root, **changes):
  return segment_base.data(dataset=f'folder:{root}', class_names=('bg', 'a', 'b'),
                           folder_test_fraction=0.3, **changes)


@pytest.mark.parametrize('break_it, message', [
    (lambda root: os.remove(os.path.join(root, 'masks', 'pic3.png')),
     r'pic3.png has no mask: add .*masks/pic3.png or remove the image'),
    (lambda root: os.remove(os.path.join(root, 'images', 'pic4.png')),
     r'masks/pic4.png has no image of the same name'),
    (lambda root: _write_pair(root, 'pic5', np.zeros((16, 16), int), image_size=(16, 20)),
     r"masks/pic5.png is 16x16 but its image .*pic5.png is 20x16: a mask must have its image's"),
    (lambda root: _write_pair(root, 'pic6', np.full((16, 16), 7)),
     r'masks/pic6.png has label value\(s\) \[7\]: neither a class \(0..2\) nor the ignore label'),
    (lambda root: _write_pair(root, 'pic7', np.zeros((16, 16), int),
                              colors=np.array([[0, 0, 0], [255, 0, 0]])),
     r'masks/pic7.png is a colour \(RGB\) mask: set data.palette'),
])
def test_bad_mask_folders_stop_before_training_naming_the_file(tmp_path, capsys, break_it,
                                                              message):
  root = _folder(tmp_path / 'data')
  break_it(root)
  with pytest.raises(UserError, match=message):
    segment_data.get_dataset_info(_folder_data(root))
  # On the command line: that one line, exit status 2.
  with pytest.raises(SystemExit) as exit_info:
    cli.run(segment.train_and_evaluate, 'segment', [
        '--config', 'configs/digits_segment.py:tiny', '--workdir', str(tmp_path / 'run'),
        f'--config.data.dataset=folder:{root}', "--config.data.class_names=('bg','a','b')"])
  assert exit_info.value.code == 2
  assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_colour_masks_map_through_the_palette(tmp_path):
  palette = np.array([[0, 0, 0], [255, 0, 0], [0, 0, 255]])
  labels = np.zeros((16, 16), np.int64)
  labels[2:6, 3:9], labels[10:, :4] = 1, 2
  for i in range(4):
    _write_pair(tmp_path, f'p{i}', labels, colors=palette)
  data = _folder_data(tmp_path, palette=tuple(map(tuple, palette.tolist())))
  batch = next(segment_data.make_eval_iterator(data, global_batch_size=4))
  np.testing.assert_array_equal(batch['label'][0], labels)
  _write_pair(tmp_path, 'p9', labels, colors=np.array([[0, 0, 0], [9, 9, 9], [0, 0, 255]]))
  with pytest.raises(UserError, match=r'p9.png has colour \(9, 9, 9\), which is not in'):
    segment_data.get_dataset_info(_folder_data(tmp_path / '..' / tmp_path.name,
                                               palette=tuple(map(tuple, palette.tolist()))))


def test_a_mask_folder_trains_and_predict_writes_masks_and_overlays(tiny_config, tmp_path,
                                                                    capsys):
  root = _folder(tmp_path / 'data', count=12)
  final = segment.train_and_evaluate(_folder_config(tiny_config, root), str(tmp_path / 'run'))
  assert final['count'] == 4
  assert 0 <= final['mean_iou'] <= 1 and 0 <= final['pixel_accuracy'] <= 1
  assert np.isfinite(final['checkerboard_db']) and final['checkerboard_db_truth'] < 0
  with Image.open(tmp_path / 'run' / 'images' / 'segmentation_0000004.png') as grid:
    assert grid.size == (3 * 129 + 1, 2 * 129 + 1)  # image | truth | prediction, 16x16 x 8
  capsys.readouterr()
  predict.main(['--workdir', str(tmp_path / 'run'), '--output', str(tmp_path / 'out'),
                os.path.join(root, 'images', 'pic0.png')])
  assert 'pic0_mask.png' in capsys.readouterr().out
  with Image.open(tmp_path / 'out' / 'pic0_mask.png') as mask:
    assert mask.mode == 'L' and mask.size == (16, 16) and np.asarray(mask).max() <= 2
  with Image.open(tmp_path / 'out' / 'pic0_overlay.png') as overlay:
    assert overlay.mode == 'RGB' and overlay.size == (16, 16)


def _folder_config(tiny_config, root, **changes):
  """The tiny recipe on the mask folder at `root` (8 train, 4 eval 16x16 images): 4 steps,
  evaluated at steps 2 and 4."""
  fields = dict(batch_size=4, eval_batch_size=4, num_steps=4, num_shown=2) | changes
  config = tiny_config('configs/digits_segment.py:tiny', **fields)
  config.data = _folder_data(root, shards=4, augment=dict(flip=True, scale=(0.8, 1.25)))
  config.eval_every_epochs = config.checkpoint_every_epochs = 2 * config.batch_size / 8
  return config


def test_one_or_four_devices_and_jit_or_pmap_give_the_same_run(tiny_config, tmp_path,
                                                               monkeypatch):
  # As tests/test_scale_out.py does for the other tasks, on a 16x16 mask folder to stay cheap.
  root = _folder(tmp_path / 'data', count=12)
  # SGD, as tests/test_parallel.py: Adam's first steps are close to lr * sign(gradient), so a
  # near-zero gradient whose last bits differ with pmap's order of summation moves by up to
  # 2 lr on one path and not the other (under Adam the kernels ended up to 1.2e-4 apart after
  # 4 steps while the losses agreed to 1e-5); an SGD step is proportional to the gradient, so
  # the comparison measures the update itself. Unequal class weights check that the weighted
  # per-pixel normalization is that of the global batch on every path.
  sgd = common.optim(name='sgd', learning_rate=0.05, schedule='constant')
  make = lambda **changes: _folder_config(tiny_config, root, optim=sgd,
                                          class_weights=(0.5, 1.0, 2.0), **changes)
  train_task(segment, make(), tmp_path / 'four')
  train_task(segment, make(), tmp_path / 'one', monkeypatch, devices=1)
  train_task(segment, make(parallelism='pmap'), tmp_path / 'pmap')
  assert_same_run(tmp_path / 'four', tmp_path / 'one')
  assert_same_run(tmp_path / 'four', tmp_path / 'pmap')


def test_bfloat16_with_accumulation_trains_float32_parameters(tiny_config, tmp_path):
  # The U-Net's BatchNorm normalizes each micro-batch by its own statistics, so two
  # micro-batches do not update exactly as the whole batch: no same-run check here.
  root = _folder(tmp_path / 'data', count=12)
  train_task(segment, _folder_config(tiny_config, root, batch_size=8, grad_accum_steps=2,
                                     dtype='bfloat16'), tmp_path / 'both')
  losses = [r['loss'] for r in read_metrics(tmp_path / 'both', 'train')]
  assert losses and all(np.isfinite(losses))
  _, params = checkpoint_params(tmp_path / 'both')
  assert {x.dtype for x in jax.tree.leaves(params)} == {np.dtype(np.float32)}


def _mock_pets(builder, split, decoders=None, **kwargs):
  """32 examples of the image and trimap features (the default mock data draws bounding boxes
  with min > max, which oxford_iiit_pet's head_bbox rejects), encoded as TFDS stores them."""
  del builder, split, kwargs
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (32, 40, 48, 3), np.uint8)
  masks = rng.integers(1, 4, (32, 40, 48, 1), np.uint8)  # 1 pet, 2 background, 3 border
  encode = lambda arrays: [tf.io.encode_png(a).numpy() for a in arrays]
  assert set(decoders) == {'image', 'segmentation_mask'}  # both read undecoded
  return tf.data.Dataset.from_tensor_slices({'image': encode(images),
                                             'segmentation_mask': encode(masks)})


def test_oxford_iiit_pet_trains_under_mock_data(tiny_config, tmp_path, monkeypatch):
  config = tiny_config('configs/pets_segment.py:tiny')
  # mock_data swaps in a fake file system while a dataset is built (each evaluation builds
  # one); an asynchronous checkpoint write still running then would land in it.
  save = Checkpointer.save
  monkeypatch.setattr(Checkpointer, 'save',
                      lambda self, *args, **kwargs: (save(self, *args, **kwargs), self.wait()))
  with tfds.testing.mock_data(num_examples=32, as_dataset_fn=_mock_pets):
    final = segment.train_and_evaluate(config, str(tmp_path / 'pets'))
  assert final['count'] == 32
  assert {'mean_iou', 'pixel_accuracy', 'checkerboard_db', 'iou_pet'} <= final.keys()

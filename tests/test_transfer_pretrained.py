"""config.transfer.pretrained: train.classify starts from a converted torchvision weight file,
and its input is preprocessed as those weights expect."""

import dataclasses

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

import zoo
from configs import classify_base
from train import classify
from train.core import trained, transfer
from train.core.errors import UserError
from train.data import pipeline, pretrained_input


def _write_folder(folder):
  """Two classes of four RGB PNGs, 40x48 and 48x40: not square, so the centre crop matters."""
  rng = np.random.default_rng(0)
  for name in ('cat', 'dog'):
    (folder / name).mkdir(parents=True)
    for i in range(4):
      shape = (40, 48, 3) if i % 2 else (48, 40, 3)
      Image.fromarray(rng.integers(0, 256, shape, np.uint8)).save(folder / name / f'{i}.png')


def _config(folder, weights):
  config = classify_base.get_config()
  config.model = 'resnet18'
  config.data.update(dataset=f'folder:{folder}', image_size=(32, 32), shards=1,
                     folder_test_fraction=0.25)  # normalization stays the default featurewise
  config.data.augment.update(rotation=0.0, shift=0.0)
  config.batch_size = 4
  config.eval_batch_size = 4
  config.num_steps = 2
  config.transfer.update(pretrained=f'resnet18:{weights}', freeze_backbone=True)
  return config


def test_frozen_backbone_from_a_torchvision_file_trains_the_new_head(tmp_path, capsys):
  torch.manual_seed(0)
  weights = tmp_path / 'resnet18.pth'
  torch.save(torchvision.models.resnet18().state_dict(), weights)
  _write_folder(tmp_path / 'images')
  config = _config(tmp_path / 'images', weights)
  classify.train_and_evaluate(config, str(tmp_path / 'run'))

  out = capsys.readouterr().out
  assert ('Input as the pretrained weights expect (224x224 in their training): shorter side '
          'resized to '
          '36 (bilinear), centre 32x32 cropped, normalized by mean (0.485, 0.456, 0.406) and '
          'std (0.229, 0.224, 0.225)') in out
  assert (f'from resnet18:{weights}; not loaded: new head (1000 -> 2 classes): '
          'params/head/bias, params/head/kernel') in out
  _, source, weights_config = zoo.load_pretrained('resnet18', str(weights), with_config=True)
  run = trained.load_classifier(str(tmp_path / 'run'))
  # Frozen: the backbone's parameters and statistics are the file's, the new head trained.
  np.testing.assert_array_equal(run.variables['params']['stem']['conv']['kernel'],
                                source['params']['stem']['conv']['kernel'])
  np.testing.assert_array_equal(
      run.variables['batch_stats']['stage1_block1']['conv1']['bn']['mean'],
      source['batch_stats']['stage1_block1']['conv1']['bn']['mean'])
  assert run.variables['params']['head']['kernel'].shape == (512, 2)

  # The run's evaluation (and so train.predict --workdir, which reads the run's config) sees
  # each image as train.predict --model sees it: resize, centre crop, the weights' mean/std.
  as_weights_expect = dataclasses.replace(weights_config, input_size=(32, 32, 3))
  files = sorted((tmp_path / 'images').glob('*/*.png'))
  expected = {f.read_bytes(): pretrained_input.preprocess_file(f.read_bytes(), as_weights_expect)
              for f in files}
  batch = next(pipeline.make_eval_iterator(run.config.data, global_batch_size=4))
  for image in batch['image'][batch['mask']]:
    assert min(np.abs(image - want).max() for want in expected.values()) < 1e-6
  for data, want in expected.items():
    np.testing.assert_allclose(pipeline.preprocess_for_prediction(run.config.data, data), want,
                               atol=1e-6)
  # Training normalizes the same way (augmentation is off here).
  batch = next(pipeline.make_train_iterator(run.config.data, seed=0, global_batch_size=4))
  for image in batch['image']:
    assert min(np.abs(image - want).max() for want in expected.values()) < 1e-6

  config.transfer.pretrained = 'resnet18'
  with pytest.raises(UserError, match='expected NAME:FILE'):
    classify.train_and_evaluate(config, str(tmp_path / 'bad'))


def test_keras_caffe_weights_get_bgr_channels_and_their_mean(tmp_path):
  """Keras' ResNet50 'caffe' input: BGR, minus the mean in [0, 255], bilinear, crop 0.875."""
  weights = zoo.pretrained_config('resnet50', 'keras')
  assert weights.preprocessing.bgr
  rng = np.random.default_rng(0)
  image = rng.integers(0, 256, (230, 300, 3), np.uint8)
  for name in ('a', 'b'):  # a folder of two classes, two images each
    (tmp_path / name).mkdir()
    for i in range(2):
      Image.fromarray(image).save(tmp_path / name / f'photo{i}.png')
  config = classify_base.get_config()
  config.data.update(dataset=f'folder:{tmp_path}', image_size=(),  # the weights' own size
                     folder_test_fraction=0.5)
  config, report = transfer.follow_pretrained_input(config, weights)
  assert config.data.image_size == (224, 224) and 'channels reversed to BGR' in report
  np.testing.assert_allclose(
      pipeline.preprocess_for_prediction(config.data, image),
      pretrained_input.preprocess_file((tmp_path / 'a' / 'photo0.png').read_bytes(), weights),
      atol=1e-4)

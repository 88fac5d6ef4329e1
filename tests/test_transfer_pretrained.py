"""config.transfer.pretrained: train.classify starts from a converted torchvision weight file."""

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

import zoo
from configs import classify_base
from train import classify
from train.core import trained
from train.core.errors import UserError


def _write_folder(folder):
  """Two classes of four 40x40 RGB PNGs."""
  rng = np.random.default_rng(0)
  for name in ('cat', 'dog'):
    (folder / name).mkdir(parents=True)
    for i in range(4):
      Image.fromarray(rng.integers(0, 256, (40, 40, 3), np.uint8)).save(folder / name / f'{i}.png')


def test_frozen_backbone_from_a_torchvision_file_trains_the_new_head(tmp_path, capsys):
  torch.manual_seed(0)
  weights = tmp_path / 'resnet18.pth'
  torch.save(torchvision.models.resnet18().state_dict(), weights)
  _write_folder(tmp_path / 'images')
  config = classify_base.get_config()
  config.model = 'resnet18'
  config.data.update(dataset=f'folder:{tmp_path / "images"}', image_size=(32, 32), shards=1,
                     normalization='per_channel', mean=(0.485, 0.456, 0.406),
                     std=(0.229, 0.224, 0.225), folder_test_fraction=0.25)
  config.data.augment.update(rotation=0.0, shift=0.0)
  config.batch_size = 4
  config.eval_batch_size = 4
  config.num_steps = 2
  config.transfer.update(pretrained=f'resnet18:{weights}', freeze_backbone=True)
  classify.train_and_evaluate(config, str(tmp_path / 'run'))

  out = capsys.readouterr().out
  assert (f'from resnet18:{weights}; not loaded: new head (1000 -> 2 classes): '
          'params/head/bias, params/head/kernel') in out
  _, source = zoo.load_pretrained('resnet18', str(weights))
  result = trained.load_classifier(str(tmp_path / 'run')).variables
  # Frozen: the backbone's parameters and statistics are the file's, the new head trained.
  np.testing.assert_array_equal(result['params']['stem']['conv']['kernel'],
                                source['params']['stem']['conv']['kernel'])
  np.testing.assert_array_equal(result['batch_stats']['stage1_block1']['conv1']['bn']['mean'],
                                source['batch_stats']['stage1_block1']['conv1']['bn']['mean'])
  assert result['params']['head']['kernel'].shape == (512, 2)

  config.transfer.pretrained = 'resnet18'
  with pytest.raises(UserError, match='expected NAME:FILE'):
    classify.train_and_evaluate(config, str(tmp_path / 'bad'))

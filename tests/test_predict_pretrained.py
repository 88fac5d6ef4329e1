"""train.predict --model/--weights: ImageNet class names from a torchvision weight file."""

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from train import predict
from train.data import pretrained_input
from zoo.pretrained_config import label_names, pretrained_config


@pytest.fixture(scope='module')
def resnet18_file(tmp_path_factory):
  """A torchvision ResNet-18 with random weights, saved as its state dict; and the model."""
  torch.manual_seed(0)
  reference = torchvision.models.resnet18().eval()
  path = tmp_path_factory.mktemp('weights') / 'resnet18.pth'
  torch.save(reference.state_dict(), path)
  return str(path), reference


def _write_photos(folder):
  """Two RGB PNGs of other sizes and aspect ratios than the model's 224x224 input."""
  rng = np.random.default_rng(0)
  paths = []
  for i, (height, width) in enumerate([(300, 200), (120, 180)]):
    # Smooth images: a random low-resolution picture scaled up, so resizing is well posed.
    small = rng.integers(0, 256, (height // 20, width // 20, 3), np.uint8)
    paths.append(str(folder / f'photo{i}.png'))
    Image.fromarray(small).resize((width, height), Image.BILINEAR).save(paths[-1])
  return paths


def test_preprocessing_is_torchvisions_eval_transform(tmp_path):
  path, = _write_photos(tmp_path)[:1]
  config = pretrained_config('resnet18', 'torchvision')
  got = pretrained_input.preprocess_file(open(path, 'rb').read(), config)
  transform = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.transforms()  # 256, crop 224
  want = transform(Image.open(path).convert('RGB')).permute(1, 2, 0).numpy()
  assert got.shape == want.shape == (224, 224, 3)
  # TensorFlow's and torchvision's antialiased bilinear resizes differ by a few grey levels.
  assert np.abs(got - want).mean() < 0.02


def test_prints_the_top5_imagenet_classes_of_the_torch_model(resnet18_file, tmp_path, capsys):
  weights, reference = resnet18_file
  paths = _write_photos(tmp_path)
  predict.main(['--model', 'resnet18', '--weights', weights, *paths])
  lines = capsys.readouterr().out.splitlines()

  config = pretrained_config('resnet18', 'torchvision')
  images = np.stack([pretrained_input.preprocess_file(open(p, 'rb').read(), config)
                     for p in paths])
  with torch.no_grad():
    probs = torch.softmax(reference(torch.from_numpy(images).permute(0, 3, 1, 2)), -1).numpy()
  names = label_names('imagenet')
  assert len(names) == 1000 and names[0] == 'tench'
  assert len(lines) == len(paths)
  for line, path, p in zip(lines, paths, probs):
    path_part, classes = line.split(': ', 1)
    assert path_part == path
    printed = [entry.rsplit(' ', 1) for entry in classes.split(', ')]
    assert [name for name, _ in printed] == [names[i] for i in np.argsort(-p)[:5]]
    np.testing.assert_allclose([float(prob) for _, prob in printed],
                               np.sort(p)[::-1][:5], atol=2e-4)


def test_bad_weights_are_one_line_exit_2(resnet18_file, tmp_path, capsys):
  weights, _ = resnet18_file
  image = _write_photos(tmp_path)[0]
  for argv, message in [
      (['--model', 'resnet50', '--weights', weights], '--model=resnet50'),
      (['--model', 'resnet18', '--weights', str(tmp_path / 'none.pth')], 'none.pth'),
      (['--model', 'resnet18'], 'needs --weights'),
  ]:
    with pytest.raises(SystemExit) as exit_info:
      predict.main([*argv, image])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith('error: ') and message in err and '\n' not in err

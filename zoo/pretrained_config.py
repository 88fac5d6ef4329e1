"""What a model's pretrained weights expect of their input, as timm's `pretrained_cfg`.

`pretrained_config(name, source)` gives the input size, resize interpolation, centre-crop
fraction, normalization and class names of `name`'s weights from `source`. The normalization is
the source's (`PREPROCESSING`): torchvision and timm use ImageNet's mean/std on RGB in [0, 1];
Keras' ResNet50 and VGG16 'caffe' (BGR, mean subtraction on [0, 255], no scaling); Keras'
MobileNetV2 'tf' ([-1, 1]); timm's ViTs and Inception-v3 0.5/0.5 ([-1, 1]). A weight family
(`zoo/weights/<family>.py`) adjusts the defaults with an optional
`config(model_name, source, base) -> PretrainedConfig`.
"""

import dataclasses
import functools
import importlib.resources

import jax
import numpy as np
from numpy.typing import ArrayLike

from zoo.registry import model_info


@dataclasses.dataclass(frozen=True)
class Preprocessing:
  """Maps RGB images in [0, 1] to the network's input: channel order, then (x - mean) / std.

  `mean` and `std` are per channel in the network's channel order, in units of [0, 1] pixels.
  """
  mean: tuple[float, ...]
  std: tuple[float, ...]
  bgr: bool = False

  def __call__(self, images: ArrayLike) -> ArrayLike:
    """(..., H, W, C) RGB images in [0, 1] -> network input, float32: a JAX array (traced, too)
    for a JAX array, a NumPy array otherwise."""
    x = images.astype(np.float32) if isinstance(images, jax.Array) else np.asarray(
        images, np.float32)
    if self.bgr:
      x = x[..., ::-1]
    return (x - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)


PREPROCESSING = {
    'imagenet': Preprocessing(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)),
    # [-1, 1]: Keras' 'tf' mode, timm's ViTs, Inception-v3.
    'tf': Preprocessing(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)),
    # Keras' 'caffe' mode: BGR, minus the ImageNet mean in [0, 255], not scaled.
    'caffe': Preprocessing(mean=(103.939 / 255, 116.779 / 255, 123.68 / 255),
                           std=(1 / 255, 1 / 255, 1 / 255), bgr=True),
    # [0, 255]: Keras models that normalize inside (EfficientNet, ConvNeXt).
    'raw': Preprocessing(mean=(0.0, 0.0, 0.0), std=(1 / 255, 1 / 255, 1 / 255)),
}


@dataclasses.dataclass(frozen=True)
class PretrainedConfig:
  """How to feed a model its pretrained weights' inputs: resize the shorter side to
  `input_size / crop_pct` with `interpolation`, centre-crop `input_size`, apply `preprocessing`.
  """
  input_size: tuple[int, int, int]  # (H, W, C)
  preprocessing: Preprocessing
  interpolation: str = 'bilinear'
  crop_pct: float = 0.875
  num_classes: int = 1000
  label_set: str | None = 'imagenet'  # class names: `class_names()`

  def class_names(self) -> tuple[str, ...] | None:
    """The names of the `num_classes` outputs, if the weights' label set has them."""
    if self.label_set is None:
      return None
    names = label_names(self.label_set)
    return names if len(names) == self.num_classes else None


# The defaults of each source: torchvision's transforms resize bilinearly, timm's bicubically.
_SOURCE_DEFAULTS = {
    'torchvision': {'preprocessing': PREPROCESSING['imagenet'], 'interpolation': 'bilinear'},
    'timm': {'preprocessing': PREPROCESSING['imagenet'], 'interpolation': 'bicubic'},
    'keras': {'preprocessing': PREPROCESSING['caffe'], 'interpolation': 'bilinear'},
    'pytorch_fid': {'preprocessing': PREPROCESSING['tf'], 'interpolation': 'bilinear',
                    'crop_pct': 1.0, 'label_set': None},
}


@functools.cache
def label_names(label_set: str) -> tuple[str, ...]:
  """Class names shipped with zoo: 'imagenet' is ImageNet-1k's 1,000, in index order (from
  torchvision's `_IMAGENET_CATEGORIES`)."""
  resource = importlib.resources.files('zoo') / 'data' / f'{label_set}_classes.txt'
  if not resource.is_file():
    raise ValueError(f'unknown label set {label_set!r}; zoo ships imagenet')
  return tuple(resource.read_text().splitlines())


def pretrained_config(name: str, source: str = 'torchvision',
                      num_classes: int | None = None) -> PretrainedConfig:
  """The input configuration of `name`'s weights from `source` (see the module docstring)."""
  if source not in _SOURCE_DEFAULTS:
    raise ValueError(f'unknown weight source {source!r}; expected one of '
                     f'{", ".join(_SOURCE_DEFAULTS)}')
  info = model_info(name)
  config = PretrainedConfig(input_size=info.input_shape, **_SOURCE_DEFAULTS[source])
  if num_classes is not None:
    config = dataclasses.replace(config, num_classes=num_classes)
  from zoo.weights import family  # pylint: disable=import-outside-toplevel

  adjust = getattr(family(name, required=False), 'config', None)
  return adjust(name, source, config) if adjust else config

"""Images as a model's pretrained weights expect them (`zoo.PretrainedConfig`).

torchvision's and timm's eval transform: resize the shorter side to `floor(size / crop_pct)`
with the weights' interpolation, crop the centre `size`, rescale to [0, 1], normalize by the
weights' preprocessing (`zoo.Preprocessing`, as Keras' `preprocess_input`). The resize is
TensorFlow's, as in the rest of the input pipeline, which uses `resize_and_crop` for
`data.crop_fraction` (a run started from pretrained weights, `config.transfer.pretrained`).
"""

import math

import numpy as np
import tensorflow as tf

from zoo.pretrained_config import PretrainedConfig


def resize_and_crop(image: tf.Tensor, size: tuple[int, int], crop_fraction: float,
                    interpolation: str) -> tf.Tensor:
  """A decoded (H, W, C) image in [0, 1] at `size`: the shorter side resized to
  `floor(min(size) / crop_fraction)` with `interpolation` (the aspect ratio kept), then the
  centre `size` cropped."""
  height, width = size
  scale = math.floor(min(height, width) / crop_fraction)
  shape = tf.cast(tf.shape(image)[:2], tf.float32)
  ratio = scale / tf.reduce_min(shape)
  # The shorter side becomes `scale`; the other keeps the aspect ratio (at least the crop).
  new_shape = tf.maximum(tf.cast(tf.round(shape * ratio), tf.int32), [height, width])
  image = tf.image.convert_image_dtype(image, tf.float32)
  image = tf.image.resize(image, new_shape, method=interpolation, antialias=True)
  top = (new_shape[0] - height) // 2
  left = (new_shape[1] - width) // 2
  image = image[top:top + height, left:left + width]
  return tf.clip_by_value(image, 0.0, 1.0)  # Bicubic overshoots.


def preprocess_file(data: bytes, config: PretrainedConfig) -> np.ndarray:
  """An image file's contents (PNG, JPEG, BMP or GIF) as the network's input. Bytes that are no
  image raise `tf.errors.InvalidArgumentError`."""
  image = tf.io.decode_image(data, channels=3, expand_animations=False)
  image = resize_and_crop(image, config.input_size[:2], config.crop_pct, config.interpolation)
  return config.preprocessing(image.numpy())

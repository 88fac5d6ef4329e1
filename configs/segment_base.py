"""The `config.data` fields of `train.segment` (train/data/segmentation.py), with their meanings.

Imports nothing but ml_collections, so reading a config never starts TensorFlow or JAX.
"""

import ml_collections

# Training-time augmentation, applied to image and mask alike; off by default.
AUGMENT = dict(flip=False, scale=(1.0, 1.0))


def data(**overrides) -> ml_collections.ConfigDict:
  """The `config.data` fields of a segmentation recipe and their defaults."""
  config = ml_collections.ConfigDict(dict(
      dataset='digit_scenes',  # A TFDS name, or 'folder:/path/to/data' (images/ and masks/).
      data_dir='',  # TFDS data_dir; '' means the TFDS default.
      train_split='train',
      eval_split='test',
      image_key='image',  # The TFDS features holding the image and the mask.
      mask_key='segmentation_mask',
      image_size=(),  # (height, width) to resize to; () keeps the dataset's own size.
      class_names=(),  # Needed when the dataset does not name its classes (folders, most TFDS).
      label_map=(),  # label_map[raw mask value] = class or ignore_label; () keeps the values.
      ignore_label=255,  # Pixels with this label count in no loss and no metric.
      palette=(),  # Colour masks: the (r, g, b) of each class, in class order.
      mean=(),  # Per channel, on the [0, 1] scale; () leaves images in [0, 1].
      std=(),
      shuffle_buffer=10_000,
      shards=8,  # Training streams: the same batches on 1, 2, 4 or 8 processes.
      folder_test_fraction=0.2,  # For folders without train/ and test/ subfolders.
      # flip: left-right with probability 1/2; scale: (low, high) zoom factor (image bilinear,
      # mask nearest), then a random crop back to the size (zooming out pads with ignore_label).
      augment=dict(AUGMENT),
  ))
  config.update(overrides)
  return config

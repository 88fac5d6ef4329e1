"""Masks for image files from a `train.segment` run (used by `python -m train.predict`).

Each image is prepared as the run's eval pipeline does (decoded, resized to the model's input
size, normalized), segmented by the best checkpoint (by mean IoU), and the predicted labels are
resized back (nearest) to the image's own size. Written per image, into the output folder:
`<name>_mask.png`, a single-channel PNG of class indices (a mask the folder source reads back),
and `<name>_overlay.png`, the image with the classes' colours blended over it (background left
as it is).
"""

import os
from typing import Sequence

import numpy as np
import tensorflow as tf
from PIL import Image

from train import segment
from train.core import trained
from train.core.errors import UserError
from train.core.restore import restore_state
from train.data import segmentation as segment_data

_OVERLAY_OPACITY = 0.5


def is_segmentation_run(workdir: str) -> bool:
  return 'mask_key' in trained.load_config(workdir).data


def predict_masks(workdir: str, files: Sequence[str], output: str) -> list[str]:
  """Writes the mask and overlay of each file into `output`; one line per file saying so."""
  if not output:
    raise UserError(f'{workdir} is a segmentation run: give --output DIR for its mask PNGs.')
  config = trained.load_config(workdir)
  task = segment.SegmentTask(config)
  state, _ = restore_state(task, workdir, which='best')
  os.makedirs(output, exist_ok=True)
  lines = []
  for path in files:
    with open(path, 'rb') as f:
      data = f.read()
    try:
      image = segment_data.prepare_image(config.data, data)
    except tf.errors.InvalidArgumentError:
      raise UserError(f'{path}: not a readable image (PNG, JPEG, BMP or GIF).') from None
    labels = np.asarray(task.predict_fn(state, image[None])[0].argmax(-1)).astype(np.uint8)
    with Image.open(path) as original:
      rgb = np.asarray(original.convert('RGB'), np.float32) / 255
    labels = np.asarray(Image.fromarray(labels).resize(rgb.shape[1::-1], Image.NEAREST))
    colors = segment.colorize(labels, task.info.num_classes)
    opacity = _OVERLAY_OPACITY * (labels > 0)[..., None]
    overlay = rgb * (1 - opacity) + colors * opacity
    stem = os.path.join(output, os.path.splitext(os.path.basename(path))[0])
    Image.fromarray(labels).save(f'{stem}_mask.png')
    Image.fromarray(np.round(overlay * 255).astype(np.uint8)).save(f'{stem}_overlay.png')
    present = [task.info.class_names[c] for c in np.unique(labels)]
    lines.append(f'{path}: {stem}_mask.png, {stem}_overlay.png (classes: {", ".join(present)})')
  return lines

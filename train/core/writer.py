"""Where metrics go: `WORKDIR/metrics.jsonl` for programs, TensorBoard events and PNGs for people.

Only process 0 writes; on the other processes every method does nothing.
"""

import json
import os
from typing import Mapping

import jax
import numpy as np
from tensorboardX import SummaryWriter

from train.core import images as image_lib


class MetricWriter:
  """Appends one JSON object per record to metrics.jsonl and mirrors it to TensorBoard."""

  def __init__(self, workdir: str):
    self.workdir = workdir
    self.enabled = jax.process_index() == 0
    if self.enabled:
      os.makedirs(os.path.join(workdir, 'images'), exist_ok=True)
      self._jsonl = open(os.path.join(workdir, 'metrics.jsonl'), 'a', encoding='utf-8')
      self._tensorboard = SummaryWriter(os.path.join(workdir, 'tensorboard'))

  def write_scalars(self, step: int, split: str, metrics: Mapping[str, float]) -> None:
    if not self.enabled:
      return
    record = {'step': int(step), 'split': split, **{k: float(v) for k, v in metrics.items()}}
    self._jsonl.write(json.dumps(record) + '\n')
    self._jsonl.flush()
    for name, value in metrics.items():
      self._tensorboard.add_scalar(f'{split}/{name}', float(value), int(step))
    self._tensorboard.flush()

  def write_images(self, step: int, name: str, images: np.ndarray, *, scale: int = 1,
                   columns: int | None = None) -> str | None:
    """Writes images (N, H, W, C) in [0, 1] as one grid (`columns` wide, default about
    square); returns the PNG's path."""
    if not self.enabled:
      return None
    grid = image_lib.make_grid(images, columns=columns, scale=scale)
    path = os.path.join(self.workdir, 'images', f'{name}_{int(step):07d}.png')
    image_lib.save_png(grid, path)
    self._tensorboard.add_image(name, grid, int(step), dataformats='HWC')
    self._tensorboard.flush()
    return path

  def close(self) -> None:
    if self.enabled:
      self._jsonl.close()
      self._tensorboard.close()

"""Where metrics go: `WORKDIR/metrics.jsonl` for programs, TensorBoard events and PNGs for people.

Only process 0 writes; on the other processes every method does nothing.
"""

import json
import os
import sys
from typing import Mapping

import jax
import numpy as np

from train.core import images as image_lib


class MetricWriter:
  """Appends one JSON object per record to metrics.jsonl and mirrors it to TensorBoard.

  A run resumed at `start_step` first drops the records of later steps (written after the
  checkpoint it resumed from, and about to be written again), so each (step, split) appears once.
  """

  def __init__(self, workdir: str, start_step: int = 0):
    self.workdir = workdir
    self.enabled = jax.process_index() == 0
    if self.enabled:
      os.makedirs(os.path.join(workdir, 'images'), exist_ok=True)
      path = os.path.join(workdir, 'metrics.jsonl')
      _drop_records_after(path, start_step)
      self._jsonl = open(path, 'a', encoding='utf-8')
      # TensorBoard hides its own events of steps >= purge_step written before the restart.
      self._tensorboard = _summary_writer_class()(os.path.join(workdir, 'tensorboard'),
                                        purge_step=start_step + 1)

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


def _summary_writer_class() -> type:
  """tensorboardX's SummaryWriter, imported without PyTorch when that is not loaded yet.

  tensorboardX imports PyTorch if it is installed (3 s) only to accept its tensors; the arrays
  written here are NumPy.
  """
  hidden = 'torch' not in sys.modules
  if hidden:
    sys.modules['torch'] = None  # `import torch` raises ImportError, which tensorboardX expects
  try:
    from tensorboardX import SummaryWriter
  finally:
    if hidden:
      del sys.modules['torch']
  return SummaryWriter


def _drop_records_after(path: str, step: int) -> None:
  """Rewrites metrics.jsonl without the records of steps after `step` (atomically)."""
  if not os.path.exists(path):
    return
  with open(path, encoding='utf-8') as f:
    lines = f.readlines()
  kept = [line for line in lines if _step_of(line) <= step]
  if len(kept) == len(lines):
    return
  with open(path + '.tmp', 'w', encoding='utf-8') as f:
    f.writelines(kept)
  os.replace(path + '.tmp', path)


def _step_of(line: str) -> float:
  """A record's step; a line torn by a killed write counts as after every step."""
  try:
    return json.loads(line)['step']
  except (ValueError, KeyError, TypeError):
    return float('inf')

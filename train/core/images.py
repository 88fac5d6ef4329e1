"""Image grids a person can look at: PNG files and TensorBoard images."""

import math

import numpy as np
from PIL import Image


def make_grid(images: np.ndarray, *, columns: int | None = None, padding: int = 1,
              scale: int = 1) -> np.ndarray:
  """Tiles images (N, H, W, C) with values in [0, 1] into one uint8 image (rows, cols, C).

  `scale` enlarges each pixel (nearest) so small images, such as 8x8 digits, stay legible.
  """
  images = np.clip(np.asarray(images, np.float32), 0.0, 1.0)
  if scale > 1:
    images = images.repeat(scale, axis=1).repeat(scale, axis=2)
  n, h, w, c = images.shape
  columns = columns or math.ceil(math.sqrt(n))
  rows = math.ceil(n / columns)
  grid = np.ones((rows * (h + padding) + padding, columns * (w + padding) + padding, c),
                 np.float32)
  for i, image in enumerate(images):
    top, left = padding + (i // columns) * (h + padding), padding + (i % columns) * (w + padding)
    grid[top:top + h, left:left + w] = image
  return np.round(grid * 255).astype(np.uint8)


def save_png(grid: np.ndarray, path: str) -> None:
  Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid).save(path)


def legible_scale(image_shape: tuple[int, ...], size: int = 64) -> int:
  """The nearest-neighbour enlargement that shows images of `image_shape` (H, W, ...) about
  `size` pixels across in a grid, so small ones such as 8x8 digits stay legible."""
  return max(1, size // max(image_shape[:2]))

"""Segmentation metrics: per-pixel cross entropy with an ignore label, and the confusion matrix
from which mean IoU, per-class IoU and pixel accuracy are read.

Evaluation sums a confusion matrix per batch (padding and ignored pixels excluded) and reads the
metrics from the total over the split, so every pixel of the split weighs the same: the IoU of a
class is TP / (TP + FP + FN) over all its pixels, not a mean of per-image IoUs.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax


def valid_pixels(labels: jax.Array, num_classes: int, ignore_label: int) -> jax.Array:
  """(B, H, W) bool: pixels with a class: not the ignore label, nor any value out of range."""
  return (labels != ignore_label) & (labels >= 0) & (labels < num_classes)


def pixel_weights(labels: jax.Array, num_classes: int, ignore_label: int,
                  class_weights: tuple[float, ...] = ()) -> jax.Array:
  """(B, H, W) float32: each valid pixel's class weight (1 for every class when
  `class_weights` is empty), 0 for the others."""
  valid = valid_pixels(labels, num_classes, ignore_label)
  if not class_weights:
    return valid.astype(jnp.float32)
  return jnp.where(valid, jnp.asarray(class_weights, jnp.float32)[jnp.where(valid, labels, 0)], 0)


def cross_entropy_sum(logits: jax.Array, labels: jax.Array, *, ignore_label: int,
                      example_mask: jax.Array | None = None,
                      class_weights: tuple[float, ...] = ()) -> tuple[jax.Array, jax.Array]:
  """(Sum of the per-pixel cross entropies, sum of their weights) over valid pixels; each
  pixel weighs its class's `class_weights` entry (all 1 when empty: the sums are then the total
  and the number of pixels)."""
  weights = pixel_weights(labels, logits.shape[-1], ignore_label, class_weights)
  if example_mask is not None:
    weights *= example_mask[:, None, None]
  losses = optax.softmax_cross_entropy_with_integer_labels(
      logits.astype(jnp.float32), jnp.where(weights > 0, labels, 0))
  return jnp.sum(losses * weights), jnp.sum(weights)


def confusion_matrix(predictions: jax.Array, labels: jax.Array, *, num_classes: int,
                     ignore_label: int, example_mask: jax.Array | None = None) -> jax.Array:
  """(num_classes, num_classes) int32 counts: row = true class, column = predicted class."""
  valid = valid_pixels(labels, num_classes, ignore_label)
  if example_mask is not None:
    valid &= example_mask[:, None, None]
  index = jnp.where(valid, labels * num_classes + predictions, 0)
  counts = jnp.bincount(index.ravel(), weights=valid.ravel().astype(jnp.int32),
                        length=num_classes * num_classes)
  return counts.reshape(num_classes, num_classes).astype(jnp.int32)


def summarize(confusion: np.ndarray, class_names: tuple[str, ...]) -> dict[str, float]:
  """mean_iou (over the classes that occur in the labels or the predictions), iou_<class> for
  each, and pixel_accuracy, from a confusion matrix summed over a split."""
  confusion = np.asarray(confusion, np.int64)
  true_positives = np.diag(confusion)
  union = confusion.sum(0) + confusion.sum(1) - true_positives
  present = union > 0
  iou = np.where(present, true_positives / np.maximum(union, 1), np.nan)
  metrics = {'mean_iou': float(np.mean(iou[present])) if present.any() else 0.0,
             'pixel_accuracy': float(true_positives.sum() / max(confusion.sum(), 1))}
  # A class absent from both labels and predictions has no IoU; it is left out, not 0 or 1.
  return metrics | {f'iou_{name}': float(value)
                    for name, value, seen in zip(class_names, iou, present) if seen}

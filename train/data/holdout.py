"""Fixed, stratified hold-outs: the validation share of a training split, the test share of a
folder without split subfolders."""

import numpy as np

SEED = 0  # fixed, so a hold-out never changes between runs or processes


def stratified_mask(labels: np.ndarray, fraction: float) -> np.ndarray:
  """True for a fixed `fraction` (rounded) of each class's examples, drawn at random once."""
  rng = np.random.default_rng(SEED)
  held = np.zeros(len(labels), bool)
  for label in np.unique(labels):
    members = np.flatnonzero(labels == label)
    held[rng.permutation(members)[:round(len(members) * fraction)]] = True
  return held

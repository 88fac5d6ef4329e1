"""The datasets that ship with the project, registered with TFDS in this one place.

Importing this module (as `train.data.tfds_source` does for every task) makes `sklearn_digits`
(scikit-learn's 8x8 handwritten digits) and `sklearn_photos` (64x64 patches of its two
photographs) loadable by name like any TFDS dataset, fully offline.
"""

from train.data import digits, photos  # noqa: F401  (defining each builder registers it)

NAMES = ('sklearn_digits', 'sklearn_photos')

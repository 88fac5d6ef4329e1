"""Input: the TFDS and image-folder pipeline, augmentation, and the offline datasets."""

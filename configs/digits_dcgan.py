"""DCGAN on scikit-learn's 8x8 handwritten digits (upsampled to 16x16), fully offline.

First train the feature network, the digits classifier (about a minute):

    python -m train.classify --config configs/digits_cnn.py --workdir runs/digits_cnn
    python -m train.gan --config configs/digits_dcgan.py --workdir runs/digits_dcgan

Expected: see docs/gan.md (measured on a 2-core CPU).
"""

from configs import gan_base


def get_config():
  config = gan_base.get_config()
  config.data.dataset = 'sklearn_digits'
  config.data.image_size = (16, 16)  # the classifier's size: no resize before scoring
  config.generator.kwargs.width = 64
  config.discriminator.kwargs.width = 64
  config.batch_size = 64
  config.num_epochs = 100.0
  config.eval_every_epochs = 20.0
  config.checkpoint_every_epochs = 20.0
  config.log_every_steps = 100
  config.eval.classifier_config = 'configs/digits_cnn.py'
  config.eval.classifier_workdir = 'runs/digits_cnn'
  config.eval.num_samples = 360  # as many as the real test images: the floor's N
  config.eval.batch_size = 120
  config.eval.num_grid = 100
  config.eval.grid_scale = 4
  return config

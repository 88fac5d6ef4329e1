"""DCGAN on scikit-learn's 8x8 handwritten digits, at their own 8x8 resolution, fully offline.

First train the feature network, the digits classifier (about a minute), then the GAN:

    python -m train.classify --config configs/digits_cnn.py --workdir runs/digits_cnn
    python -m train.gan --config configs/digits_dcgan.py --workdir runs/digits_dcgan
    python -m train.gan_eval --config configs/digits_dcgan.py --workdir runs/digits_dcgan

The networks work at 8x8 (a 2x2 map at the projection); the classifier takes its 16x16 input,
so samples and real images alike are resized bilinearly 8x8 -> 16x16 before it, as its own input
pipeline does, and the grids show them at 16x16. FID: the 360 generated images against the 1,437
training images; the floor: the 360 real test images against the same.

Expected (measured on a 2-core CPU, about 6 min; details in docs/gan.md): at step 4,400 FID 22.3
against a floor of 7.5, Inception Score 7.66 against 8.84 for real images, 10 of 10 classes.
"""

from configs import common, gan_base


def get_config(variant: str = ''):
  """`:tiny`: networks of width 4, 4 steps, 72 samples scored (for tests)."""
  tiny = common.parse_variant('configs/digits_dcgan.py', variant, ('tiny',))
  config = gan_base.get_config()
  config.data.dataset = 'sklearn_digits'
  config.data.image_size = (8, 8)  # the dataset's own size
  config.batch_size = 32
  config.num_epochs = 100.0  # 4,400 steps
  config.eval_every_epochs = 20.0
  config.checkpoint_every_epochs = 20.0
  config.log_every_steps = 200
  config.eval.classifier_config = 'configs/digits_cnn.py'
  config.eval.classifier_workdir = 'runs/digits_cnn'
  config.eval.num_samples = 360  # as many as the real test images: the floor's N
  config.eval.batch_size = 120
  config.eval.num_grid = 100
  config.eval.grid_size = (16, 16)  # as the classifier sees them
  config.eval.grid_scale = 4
  config.eval_batch_size = 120
  if tiny:
    gan_base.tiny(config)
  return config

"""DCGAN on MNIST (28x28: the networks' smallest feature map is 7x7).

First train the feature network, the MNIST classifier, then the GAN, then score its best
checkpoint on 10,000 samples (the size of the test split, so the floor compares like with like):

    python -m train.classify --config configs/mnist_cnn.py --workdir runs/mnist_cnn
    python -m train.gan --config configs/mnist_dcgan.py --workdir runs/mnist_dcgan
    python -m train.gan_eval --config configs/mnist_dcgan.py --workdir runs/mnist_dcgan

Expected: not measured here (MNIST cannot be downloaded on the machine this was written on).
Scores with the project's classifier as feature network are not comparable with published ones;
for reference, Lucic et al. 2018 ("Are GANs Created Equal?") report FIDs of about 7 on MNIST for
their best non-saturating GANs, with InceptionV3 features (--config.eval.feature_net=inception).
"""

from configs import common, gan_base


def get_config(variant: str = ''):
  """`:tiny`: networks of width 4, 4 steps, 72 samples scored (for tests)."""
  tiny = common.parse_variant('configs/mnist_dcgan.py', variant, ('tiny',))
  config = gan_base.get_config()
  config.data.dataset = 'mnist'
  config.data.image_size = ()  # the dataset's own 28x28
  config.batch_size = 128
  config.num_epochs = 25.0
  config.eval_every_epochs = 5.0
  config.checkpoint_every_epochs = 5.0
  config.log_every_steps = 100
  config.eval.classifier_config = 'configs/mnist_cnn.py'
  config.eval.classifier_workdir = 'runs/mnist_cnn'
  config.eval.num_samples = 10_000
  config.eval.batch_size = 500
  config.eval.num_grid = 100
  config.eval.grid_scale = 2
  if tiny:
    gan_base.tiny(config)
  return config

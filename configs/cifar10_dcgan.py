"""DCGAN on CIFAR-10 (32x32: three stride-2 stages, 4x4x512 at the projection, width 64).

Scored with Inception-v3 and the standard FID weights, which cannot be downloaded here: convert
pytorch-fid's `pt_inception-2015-12-05-6726825d.pth` to .npz as docs/gan.md shows, then

    python -m train.gan --config configs/cifar10_dcgan.py --workdir runs/cifar10_dcgan \
        --config.eval.inception_weights=weights/pt_inception-2015-12-05.npz
    python -m train.gan_eval --config configs/cifar10_dcgan.py --workdir runs/cifar10_dcgan \
        --config.eval.inception_weights=weights/pt_inception-2015-12-05.npz \
        --config.eval.num_samples=50000

The final protocol: 50,000 generated images against the 50,000 training images, 32x32 resized
bilinearly to 299x299, IS over 10 splits of 5,000. Evaluations during training use 10,000.
Offline, score with a CIFAR-10 classifier of this project instead (its figures are then only
comparable between runs): train `configs/cifar10_resnet.py:20` into runs/cifar10_resnet20 and add
`--config.eval.feature_net=classifier --config.eval.classifier_config=configs/cifar10_resnet.py:20
--config.eval.classifier_workdir=runs/cifar10_resnet20`.

Expected (the literature's figures for DCGAN, not measured here: CIFAR-10 cannot be downloaded on
the machine this was written on): Inception Score about 6.2 (6.16 ± 0.07, as reported by
Gulrajani et al. 2017, Table 3); FID about 30-37 depending on the protocol (number of samples,
reference split, Inception implementation). The real-vs-real floor is printed beside the FID.
"""

from configs import common, gan_base


def get_config(variant: str = ''):
  """`:tiny`: networks of width 4, 4 steps, 72 samples scored (for tests)."""
  tiny = common.parse_variant('configs/cifar10_dcgan.py', variant, ('tiny',))
  config = gan_base.get_config()
  config.data.dataset = 'cifar10'
  config.data.image_size = ()  # the dataset's own 32x32
  config.batch_size = 128
  config.num_epochs = 100.0  # 39k steps of 128
  config.eval_every_epochs = 10.0
  config.checkpoint_every_epochs = 5.0
  config.log_every_steps = 100
  config.eval.feature_net = 'inception'
  config.eval.inception_weights = 'weights/pt_inception-2015-12-05.npz'
  config.eval.classifier_config = 'configs/cifar10_resnet.py:20'
  config.eval.classifier_workdir = 'runs/cifar10_resnet20'
  config.eval.num_samples = 10_000
  config.eval.batch_size = 200
  config.eval.num_grid = 64
  config.eval.grid_scale = 2
  if tiny:
    gan_base.tiny(config)
  return config

"""VGG-16 with BatchNorm on CIFAR-10, the classifier adapted to 32x32 inputs.

    python -m train.classify --config configs/cifar10_vgg16_bn.py --workdir runs/cifar10_vgg16_bn

At 32x32 the last feature map is 1x1x512, so the classifier pools to 1x1 (not ImageNet's 7x7)
and its hidden layers are 512 wide: 15.2M parameters instead of 138M.
Expected: about 93-94 % test accuracy, the figure comparable public recipes report for
VGG-16-BN with this schedule (not measured here: CIFAR-10 cannot be downloaded on the machine
this was written on).
"""

from configs import common
from configs.cifar10_resnet import cifar10_sgd_config


def get_config(variant: str = ''):
  """`:tiny`: VGG-16-BN of widths 4 to 16, 4 steps (for tests)."""
  tiny = common.parse_variant('configs/cifar10_vgg16_bn.py', variant, ('tiny',))
  config = cifar10_sgd_config()
  config.model = 'vgg16_bn'
  config.model_kwargs.pool_size = (1, 1)
  config.model_kwargs.classifier_width = 512
  config.num_epochs = 200.0
  config.optim.learning_rate = 0.05
  config.optim.weight_decay = 5e-4
  config.optim.schedule = 'cosine'
  config.eval_every_epochs = 5.0
  config.checkpoint_every_epochs = 5.0
  config.log_every_steps = 100
  if tiny:
    common.tiny(config)
    config.model_kwargs.update(dict(widths=(4, 8, 16, 16, 16), classifier_width=16))
  return config

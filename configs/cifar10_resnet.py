"""CIFAR-10 ResNets of He et al. 2016 (Section 4.2): `:20`, `:32`, `:44`, `:56` or `:110` layers.

    python -m train.classify --config configs/cifar10_resnet.py:20 --workdir runs/cifar10_resnet20
    python -m train.classify --config configs/cifar10_resnet.py:56 --workdir runs/cifar10_resnet56

The paper's recipe: batch 128, SGD with momentum 0.9, weight decay 1e-4, learning rate 0.1 divided
by 10 at 32k and 48k iterations, 64k iterations (164 epochs of 50k images), 4-pixel padding with
random 32x32 crops and horizontal flips, shortcut option A.
Expected (the paper's figures, not measured here: CIFAR-10 cannot be downloaded on the machine
this was written on): test error 8.75 % for ResNet-20 (accuracy 0.9125) and 6.97 % for ResNet-56
(accuracy 0.9303); 8.82 % / 7.51 % / 6.43 % for ResNet-32 / 44 / 110.
"""

from configs import classify_base, common

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


def cifar10_sgd_config():
  """CIFAR-10 with per-channel normalization, pad-and-crop plus flips, batch 128, SGD 0.9."""
  config = classify_base.get_config()
  config.data.dataset = 'cifar10'
  config.data.image_size = ()
  config.data.normalization = 'per_channel'
  config.data.mean, config.data.std = CIFAR10_MEAN, CIFAR10_STD
  config.data.augment.crop_padding = 4
  config.data.augment.flip = True
  config.batch_size = 128
  config.eval_batch_size = 1000
  config.optim.name = 'sgd'
  config.optim.momentum = 0.9
  return config


DEPTHS = ('20', '32', '44', '56', '110')


def get_config(variant: str = '20'):
  """`:DEPTH`: the ResNet of that depth (one of DEPTHS); `:tiny` (or `:DEPTH+tiny`): widths 4 to
  16, 4 steps (for tests)."""
  parts = common.parse_variant('configs/cifar10_resnet.py', variant, (*DEPTHS, 'tiny'))
  depths = sorted(parts & set(DEPTHS)) or ['20']
  if len(depths) > 1:
    raise ValueError(f'configs/cifar10_resnet.py:{variant}: give one depth of {", ".join(DEPTHS)}')
  depth = depths[0]
  config = cifar10_sgd_config()
  config.model = f'resnet{int(depth)}'
  config.num_epochs = 164.0
  config.optim.learning_rate = 0.1
  config.optim.weight_decay = 1e-4
  config.optim.schedule = 'step'
  config.optim.decay_epochs = (82.0, 123.0)  # 32k and 48k iterations of 390
  if int(depth) == 110:  # the paper warms ResNet-110 up at 0.01 for 400 iterations
    config.optim.warmup_epochs = 1.0
  config.eval_every_epochs = 4.0
  config.checkpoint_every_epochs = 4.0
  config.log_every_steps = 100
  if 'tiny' in parts:
    common.tiny(config)
    config.model_kwargs.widths = (4, 8, 16)
  return config

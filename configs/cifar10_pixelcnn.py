"""Gated PixelCNN on CIFAR-10, 8-bit colour: a 256-way softmax per channel.

    python -m train.pixelcnn --config configs/cifar10_pixelcnn.py --workdir runs/cifar10_pixelcnn

Literature (not measured here), test NLL in bits/dim: PixelCNN 3.14, gated PixelCNN 3.03
(van den Oord et al. 2016b, "Conditional Image Generation with PixelCNN Decoders", Table 1),
from much larger models trained for far longer than this recipe. Needs the TFDS `cifar10` files
and an accelerator: every evaluation draws 16 samples with 3,072 network evaluations.
"""

from configs import common, pixelcnn_base


def get_config(variant: str = ''):
  """`:tiny`: 12 features (a multiple of the 3 colours), 2 layers, 4 steps (for tests)."""
  tiny = common.parse_variant('configs/cifar10_pixelcnn.py', variant, ('tiny',))
  config = pixelcnn_base.get_config()
  config.model = 'pixelcnn_gated'
  config.model_kwargs = {'features': 120, 'num_layers': 15}  # a multiple of the 3 colours
  config.data.dataset = 'cifar10'
  config.data.image_size = ()  # native 32x32
  config.num_levels = 256
  config.batch_size = 64
  config.eval_batch_size = 256
  config.num_epochs = 100.0
  config.eval_every_epochs = 10.0
  config.checkpoint_every_epochs = 2.0
  config.optim.learning_rate = 1e-3
  config.log_every_steps = 200
  config.num_samples = 16
  if tiny:
    pixelcnn_base.tiny(config, features=12, num_layers=2)
  return config

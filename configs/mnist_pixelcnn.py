"""PixelCNN on MNIST binarized at intensity 0.5, 28x28.

    python -m train.pixelcnn --config configs/mnist_pixelcnn.py --workdir runs/mnist_pixelcnn

Literature (not measured here): 81.30 nats/image test NLL for PixelCNN on binarized MNIST
(van den Oord et al. 2016a, "Pixel Recurrent Neural Networks", Table 4). That figure is on the
fixed stochastic binarization of Salakhutdinov & Murray (2008); this recipe thresholds TFDS
`mnist` at 0.5, a different (less noisy, so easier) dataset, so expect a lower NLL that is not
directly comparable. The run needs the TFDS `mnist` files (prepared or downloadable) and a GPU
for a reasonable time: every evaluation draws 64 samples with 784 network evaluations.
"""

from configs import common, pixelcnn_base


def get_config(variant: str = ''):
  """`:tiny`: the tiny gated PixelCNN, 4 steps, 8 samples (for tests)."""
  tiny = common.parse_variant('configs/mnist_pixelcnn.py', variant, ('tiny',))
  config = pixelcnn_base.get_config()
  config.model = 'pixelcnn'  # 128 features, 7 residual blocks: the registry's MNIST PixelCNN
  config.data.dataset = 'mnist'
  config.data.image_size = ()  # native 28x28
  config.binarize_threshold = 0.5
  config.batch_size = 64
  config.eval_batch_size = 512
  config.num_epochs = 30.0
  config.eval_every_epochs = 5.0
  config.checkpoint_every_epochs = 1.0
  config.optim.learning_rate = 1e-3
  config.log_every_steps = 200
  if tiny:
    pixelcnn_base.tiny(config)
  return config

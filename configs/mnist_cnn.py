"""MNIST with the small CNN (two Conv-ReLU-MaxPool blocks, Dense 256, dropout 0.5).

    python -m train.classify --config configs/mnist_cnn.py --workdir runs/mnist_cnn

Expected: about 99.2 % test accuracy, what this architecture is commonly reported to reach in
10 epochs (not measured here: MNIST cannot be downloaded on the machine this was written on).
"""

from configs import classify_base, common


def get_config(variant: str = ''):
  """`:tiny`: a tiny CNN, 4 steps (for tests)."""
  tiny = common.parse_variant('configs/mnist_cnn.py', variant, ('tiny',))
  config = classify_base.get_config()
  config.model = 'cnn'
  config.data.dataset = 'mnist'
  config.data.image_size = ()
  config.data.augment.rotation = 10.0
  config.data.augment.shift = 0.1
  config.batch_size = 128
  config.eval_batch_size = 1000
  config.num_epochs = 10.0
  config.optim.learning_rate = 1e-3
  config.log_every_steps = 100
  if tiny:
    common.tiny(config)
    config.model_kwargs = {'features': (4, 8), 'hidden': 16}
  return config

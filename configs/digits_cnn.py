"""The README quickstart: the small CNN on scikit-learn's 8x8 handwritten digits, fully offline.

    python -m train.classify --config configs/digits_cnn.py --workdir runs/digits_cnn

Expected: see README.md (measured on a 2-core CPU).
"""

from configs import classify_base


def get_config():
  config = classify_base.get_config()
  config.model = 'cnn'
  config.data.dataset = 'sklearn_digits'
  config.data.image_size = (16, 16)
  config.data.augment.rotation = 10.0
  config.data.augment.shift = 0.1
  config.batch_size = 64
  config.num_epochs = 40.0
  config.eval_every_epochs = 5.0
  config.checkpoint_every_epochs = 5.0
  config.optim.learning_rate = 3e-3
  config.optim.warmup_epochs = 1.0
  config.log_every_steps = 100
  return config

"""The README quickstart: the small CNN on scikit-learn's 8x8 handwritten digits, fully offline.

    python -m train.classify --config configs/digits_cnn.py --workdir runs/digits_cnn

Expected (measured on a 2-core CPU on 2026-12-07: 16-29 s of wall time, 20-25 s of CPU): 680
steps on the 1,150 training digits; validation accuracy 0.9895 (284 of the 287 digits held out of
the training split) at the end, which is also the best checkpoint (step 680); that checkpoint scores
test accuracy 1.0000 (all 360 test digits), top-5 1.0000, loss 0.0031. The last digits depend on
the machine (0.9930 and test loss 0.0028 on 2026-12-01, with the same code).
"""

from configs import classify_base, common


def get_config(variant: str = ''):
  """`:tiny`: 8x8 inputs, a tiny CNN, 4 steps (for tests)."""
  tiny = common.parse_variant('configs/digits_cnn.py', variant, ('tiny',))
  config = classify_base.get_config()
  config.model = 'cnn'
  config.data.dataset = 'sklearn_digits'
  config.data.image_size = (16, 16)
  # 287 of the 1,437 training digits (stratified) select the best checkpoint; the 360 test digits
  # are scored once, at the end.
  config.data.validation_split = 0.2
  config.data.augment.rotation = 10.0
  config.data.augment.shift = 0.1
  config.batch_size = 64
  config.num_epochs = 40.0
  config.eval_every_epochs = 5.0
  config.checkpoint_every_epochs = 5.0
  config.optim.learning_rate = 3e-3
  config.optim.warmup_epochs = 1.0
  config.log_every_steps = 100
  if tiny:
    common.tiny(config)
    config.data.image_size = (8, 8)
    config.model_kwargs = {'features': (4, 8), 'hidden': 16}
  return config

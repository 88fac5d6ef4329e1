"""Hyperparameter search over the digits CNN: learning rate x weight decay x width, 20 trials of
TPE with median pruning, selected on a validation split held out of the training digits.

    python -m train.tune --config configs/digits_tune.py --workdir runs/digits_tune

Each trial trains the small CNN on the native 8x8 digits for 8 epochs (136 steps). Measured (see
docs/tune.md): 6 trials completed and 14 pruned; the best by validation accuracy has 0.9895 on
the 287 validation digits and 0.9917 on the 360 test digits, against 0.9791 and 0.9806 for this
recipe untuned (`python -m train.classify --config configs/digits_tune.py`); 6.4 minutes of CPU
time, 32 minutes of wall time on a 2-core CPU shared with other jobs (load average 14 to 24).
"""

from configs import digits_cnn


def get_config():
  config = digits_cnn.get_config()
  config.data.image_size = (8, 8)  # the digits as they are: a quarter of the work of 16x16
  config.num_epochs = 8.0
  config.eval_every_epochs = 1.0  # the pruner compares trials at each evaluation
  config.checkpoint_every_epochs = 1.0
  config.keep_checkpoints = 1
  config.data.shards = 1  # one training stream to build per trial
  # Learning rate and weight decay as arrays in the optimizer state: trials of one width share
  # one compiled step.
  config.optim.inject_hyperparams = True
  config.search = dict(
      optim=dict(learning_rate=('log_uniform', 3e-4, 3e-2),
                 weight_decay=('log_uniform', 1e-6, 1e-1)),
      model_kwargs=dict(features=('choice', ((8, 16), (16, 32), (32, 64)))),
  )
  return config

"""Transfer learning, offline: features learnt on digits 0-4 reused for digits 5-9.

    python -m train.classify --config configs/digits_transfer.py --workdir runs/digits_0to4
    python -m train.classify --config configs/digits_transfer.py:features \\
        --workdir runs/digits_5to9_features
    python -m train.classify --config configs/digits_transfer.py:finetune \\
        --workdir runs/digits_5to9_finetune
    python -m train.classify --config configs/digits_transfer.py:scratch \\
        --workdir runs/digits_5to9_scratch

1. (default) pretrain the digits CNN on the digits 0-4;
2. `:features` start from it (`transfer.init_from`), freeze everything but the `head`
   (`transfer.freeze_backbone`) and train the head on the digits 5-9: feature extraction;
3. `:finetune` start from step 2 and train every layer on 5-9 at a tenth of the learning rate;
4. `:scratch` the baseline: the same CNN trained on 5-9 from a random start, as long as 2 and 3.

Measured on a 2-core CPU (eval accuracy on the 180 test images of the run's five digits; the
best checkpoint's, which is what the next step and train.predict load; wall time of the command):

    pretrain  0-4, 220 steps                        1.0000   26 s
    features  5-9, head only, 220 steps             0.8611   25 s  (0.8500 at the last step)
    finetune  5-9, every layer, lr 3e-4, 220 steps  0.9944   26 s  (0.9889 at the last step)
    scratch   5-9, random start, 440 steps          1.0000   31 s

Digits are easy: with all ~720 training images of 5-9 the random start wins, and with a tenth of
them it still does (0.9833 against 0.9556 fine-tuned; commands in docs/transfer.md). The recipe
shows the mechanics; transfer pays off when the source task is richer than the target's data.
"""

from configs import digits_cnn

PRETRAIN_WORKDIR = 'runs/digits_0to4'
FEATURES_WORKDIR = 'runs/digits_5to9_features'
ARGS = ('pretrain', 'features', 'finetune', 'scratch')


def get_config(arg: str = 'pretrain'):
  if arg not in ARGS:
    raise ValueError(f'configs/digits_transfer.py:{arg}: use one of {ARGS}')
  config = digits_cnn.get_config()
  config.num_epochs = 20.0
  config.data.classes = (0, 1, 2, 3, 4) if arg == 'pretrain' else (5, 6, 7, 8, 9)
  if arg == 'features':
    config.transfer.init_from = PRETRAIN_WORKDIR
    config.transfer.freeze_backbone = True
  elif arg == 'finetune':
    config.transfer.init_from = FEATURES_WORKDIR
    config.optim.learning_rate /= 10
  elif arg == 'scratch':
    config.num_epochs = 40.0
  return config

"""U-Net on `digit_scenes` (train/digit_scenes.py: scikit-learn's digits over its sample
photographs, 11 classes: background + 10 digits), fully offline.

    python -m train.segment --config configs/digits_segment.py:transpose \
        --workdir runs/seg_transpose
    python -m train.segment --config configs/digits_segment.py:resize --workdir runs/seg_resize

`:transpose` (the default) upsamples with stride-2 transposed convolutions, `:resize` with
nearest resizing then a 3x3 convolution; `:tiny` (e.g. `:resize+tiny`) is a 4-step run for
tests. Trains 10 epochs (620 steps of 32) on the 2,000 training scenes resized to 32x32 (random
zoom 0.8-1.25, no flips), the loss weighing background pixels 0.1 and digit pixels 1, and
evaluates on the 400 test scenes. Measured (test split, step 620): mean IoU 0.127 (transpose) /
0.141 (resize) against 0.082 for background everywhere (digits found; which digit, much less
well), pixel accuracy 0.885 / 0.881 (0.903), checkerboard score -31.9 / -32.7 dB (ground truth
-22.6 dB); 437 / 319 s of CPU time, 7 min 42 s / 5 min 24 s of wall time, one run at a time on a
shared 2-core machine at load average 5-7. See docs/segment.md.
"""

import ml_collections

from configs import common, segment_base


def get_config(variant: str = 'transpose') -> ml_collections.ConfigDict:
  parts = common.parse_variant('configs/digits_segment.py', variant,
                               ('transpose', 'resize', 'tiny'))
  config = common.run_fields(ml_collections.ConfigDict(), early_stopping_metric='mean_iou',
                             early_stopping_mode='max')
  config.model = 'unet'  # any segmentation model in zoo.list_models()
  config.model_kwargs = ml_collections.ConfigDict(dict(
      width=16, depth=3, decoder='resize' if 'resize' in parts else 'transpose'))
  # 32x32 (digits 7-14 pixels tall, as scikit-learn's own 8x8): a quarter of the 64x64 compute.
  # No flips: a mirrored digit is another digit or none.
  config.data = segment_base.data(image_size=(32, 32), augment=dict(scale=(0.8, 1.25)))
  # Each pixel's loss weighs its class's weight: background (90% of the pixels) 0.1, each digit
  # 1. Unweighted, the networks sit for hundreds of steps on "all background" (docs/segment.md).
  config.class_weights = (0.1,) + (1.0,) * 10
  config.batch_size = 32
  config.eval_batch_size = 200
  config.num_epochs = 10.0
  config.optim = common.optim(name='adam', learning_rate=3e-3, weight_decay=0.0)
  config.log_every_steps = 25
  config.eval_every_epochs = 5.0
  config.checkpoint_every_epochs = 5.0
  config.keep_checkpoints = 2
  config.num_shown = 6  # examples in each grid
  if 'tiny' in parts:
    common.tiny(config)
    config.batch_size, config.eval_batch_size = 8, 200
    config.eval_every_epochs = config.checkpoint_every_epochs = 2 / 250  # 2000 // 8 per epoch
    config.model_kwargs.update(dict(width=4, depth=2))
    config.class_weights = ()  # tests run it on folders of other classes
    config.num_shown = 2
  return config

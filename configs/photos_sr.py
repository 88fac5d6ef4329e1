"""x2 or x4 super-resolution of 64x64 patches of scikit-learn's two photographs, fully offline.

    python -m train.upsample --config configs/photos_sr.py:2 --workdir runs/photos_sr_x2
    python -m train.upsample --config configs/photos_sr.py:4 --workdir runs/photos_sr_x4

Trains the transposed-convolution and the resize-convolution network side by side on the 2,360
training windows (random left-right flips) and evaluates on the 24 held-out test tiles
(`train/data/photos.py`). Other data: `--config.data.dataset=cifar10` (any TFDS image
classification dataset or `folder:PATH`; its images at `data.image_size`, () for their own
size, are the targets).

Measured (6 epochs = 882 steps; 2-core CPU shared with other jobs, load average about 7, so
5 min 20 s each; the runs are deterministic). On the 24 test tiles, PSNR in dB of the split as
one image (mean of per-tile PSNRs in brackets), checkerboard score in dB (targets: -30.5 at x2,
-19.5 at x4), see train/upsample.py:

         bicubic          transpose        resize
  x2     25.38 (37.17)    26.03 (37.32)    25.96 (37.31)    PSNR
         -76.5            -42.4            -55.6            checkerboard
  x4     23.04 (34.24)    23.40 (34.41)    23.33 (34.34)    PSNR
         -59.1            -31.4            -35.3            checkerboard
"""

import ml_collections

from configs import common


def get_config(variant: str = '2') -> ml_collections.ConfigDict:
  """`:2` or `:4` (the scale); `:tiny` (or `:2+tiny`, `:4+tiny`): 1-layer networks, 4 steps."""
  parts = common.parse_variant('configs/photos_sr.py', variant, ('2', '4', 'tiny'))
  config = common.run_fields(ml_collections.ConfigDict(), early_stopping_metric='psnr_transpose',
                             early_stopping_mode='max')
  config.scale = 4 if '4' in parts else 2  # upsampling factor: 2 or 4 (a power of two)
  config.decoders = ('transpose', 'resize')  # one network per decoder, trained side by side
  config.model_kwargs = ml_collections.ConfigDict(dict(features=32, num_convs=3))
  config.data = common.data()
  config.data.dataset = 'sklearn_photos'
  config.data.image_size = ()  # the 64x64 patches as they are
  config.data.normalization = 'none'  # images in [0, 1]
  config.data.augment.flip = True
  config.batch_size = 16
  config.eval_batch_size = 24
  config.num_epochs = 6.0
  config.optim = common.optim(name='adam', learning_rate=1e-3, weight_decay=0.0)
  config.log_every_steps = 100
  config.eval_every_epochs = 2.0
  config.checkpoint_every_epochs = 2.0
  config.keep_checkpoints = 2
  config.num_shown = 6  # examples in each comparison grid
  if 'tiny' in parts:
    common.tiny(config)
    config.batch_size, config.eval_batch_size = 16, 24
    config.model_kwargs.update(dict(features=8, num_convs=1))
    config.num_shown = 3
  return config

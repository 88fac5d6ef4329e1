"""The zoo's one BatchNorm: PyTorch's defaults, so converted weights and reference recipes agree.

PyTorch's momentum 0.1 is flax's 0.9 (flax's own default of 0.99 adapts too slowly for short
runs); epsilon 1e-5 unless a source's weights were trained with another (Keras 1e-3 or 1.001e-5).
"""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp
from flax.typing import Dtype, Initializer


def batch_norm(train: bool, *, name: str, epsilon: float = 1e-5,
               scale_init: Initializer = nn.initializers.ones, axis_name: str | None = None,
               dtype: Dtype | None = None, param_dtype: Dtype = jnp.float32,
               **kwargs: Any) -> nn.BatchNorm:
  """A BatchNorm named `name` normalizing by batch statistics when `train`, else running ones."""
  return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=epsilon,
                      scale_init=scale_init, axis_name=axis_name, dtype=dtype,
                      param_dtype=param_dtype, name=name, **kwargs)

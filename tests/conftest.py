"""Test-wide JAX settings: four fake CPU devices (so data parallelism is exercised) and fast compiles."""

import os

import jax

# Keras reference models (weight-conversion tests) build and run eagerly: about 10× faster on
# the TensorFlow backend, Keras' own default, than on JAX's, which compiles op by op.
os.environ.setdefault('KERAS_BACKEND', 'tensorflow')

# Must run before the first JAX computation creates the CPU backend.
jax.config.update('jax_num_cpu_devices', 4)
# The suite compiles many small programs and runs each only a few times.
jax.config.update('jax_disable_most_optimizations', True)

"""The losses tasks train on, as pure functions of logits: cross entropy for classifiers, and the
discriminator's and generator's losses of a GAN (`GAN_LOSSES`, `config.loss`)."""

import jax
import jax.numpy as jnp
import optax


def cross_entropy(logits: jax.Array, labels: jax.Array, label_smoothing: float) -> jax.Array:
  """Per-example cross entropy against one-hot labels smoothed by `label_smoothing`."""
  targets = optax.smooth_labels(jax.nn.one_hot(labels, logits.shape[-1]), label_smoothing)
  return optax.softmax_cross_entropy(logits.astype(jnp.float32), targets)


GAN_LOSSES = ('non_saturating', 'hinge', 'minimax')


def discriminator_loss(real_logits: jax.Array, fake_logits: jax.Array, kind: str) -> jax.Array:
  """The discriminator's loss: real images should score high, generated ones low."""
  if kind == 'hinge':
    return jnp.mean(jax.nn.relu(1 - real_logits)) + jnp.mean(jax.nn.relu(1 + fake_logits))
  # Binary cross-entropy: -log D(x) - log(1 - D(G(z))), with D = sigmoid(logit).
  return jnp.mean(jax.nn.softplus(-real_logits)) + jnp.mean(jax.nn.softplus(fake_logits))


def generator_loss(fake_logits: jax.Array, kind: str) -> jax.Array:
  """The generator's loss on the discriminator's logits for its images.

  'non_saturating': -log D(G(z)) (Goodfellow et al. 2014, the practical choice: strong
  gradients while the discriminator wins); 'minimax': log(1 - D(G(z))), whose gradients vanish
  when the discriminator is confident; 'hinge': -D(G(z)) on the raw logit.
  """
  if kind == 'hinge':
    return -jnp.mean(fake_logits)
  if kind == 'minimax':
    return -jnp.mean(jax.nn.softplus(fake_logits))
  return jnp.mean(jax.nn.softplus(-fake_logits))

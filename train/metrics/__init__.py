"""Measures beyond a task's loss: FID and GAN metrics, feature networks, image metrics."""

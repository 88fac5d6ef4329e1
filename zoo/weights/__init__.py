"""Weights from other frameworks (torchvision, timm, Keras) converted onto zoo models."""

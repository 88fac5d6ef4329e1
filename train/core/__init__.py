"""The shared trainer: the Task interface, `run`, and the pieces every step uses."""

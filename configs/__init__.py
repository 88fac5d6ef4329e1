"""Recipes: one `get_config()` per file, run as `--config configs/<recipe>.py`."""

"""Training entry points, one per stage (``python -m training.<stage>``)."""

"""AIMv2 models: the backbone and the pre-training task."""

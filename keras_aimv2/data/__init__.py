"""Image-text data for AIMv2 pre-training: shards, sources, pipeline."""

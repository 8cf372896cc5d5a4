"""Validation of image-caption TFRecord shards with TensorFlow Data Validation.

The helpers of `tools/validate_data.py`. They run in the separate TFDV
environment (`tools/setup_validation_env.sh`), which has TensorFlow 2.16 and
no Keras 3, so nothing here imports `keras_aimv2`.

- `shards`: finds the shards of a dataset directory and reads its records.
- `features`: computes per-example features from the raw bytes (decoded
  image size, mode and format; caption lengths in characters, words and
  tokens; blank captions) as a DataFrame.
- `schema`: curates the schema TFDV infers (domains, presence, drift and
  skew comparators).
- `report`: writes the statistics, schema, anomalies, a readable report and
  a summary figure.
"""

"""Validation of image-caption TFRecord shards with TensorFlow Data Validation.

The helpers of `validate_data.py` beside this folder. They run in the
separate TFDV environment (`keras_aimv2.data.validation_env`), which has
TensorFlow 2.16 and no Keras 3, so nothing here imports `keras_aimv2`; they
are imported as the top-level package `data_validation`.

- `dataset`: finds the shards of a dataset directory from its manifest.
- `records`: reads the raw features of every record of the shards.
- `features`: computes per-example features from the raw bytes (decoded
  image size, mode and format; caption lengths in characters, words and
  tokens; blank captions) as a DataFrame.
- `schema`: curates the schema TFDV infers (domains, presence, drift and
  skew comparators).
- `report`: writes the statistics, schema, anomalies, a readable report and
  a summary figure.
- `pipeline`: runs the steps above for `validate_data.py`.
"""

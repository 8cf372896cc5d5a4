"""Registration of the package's serializable classes."""

import keras

# Every public class is registered under this package name, so that
# `keras.saving` and keras-hub's preset loaders find it once `keras_aimv2`
# is imported.
PACKAGE = "keras_aimv2"


def register(cls):
    """Register `cls` with Keras serialization under this package."""
    return keras.saving.register_keras_serializable(package=PACKAGE)(cls)

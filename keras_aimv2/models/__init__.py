"""AIMv2 models: the backbone, the pre-training and classification tasks.

Apple's released checkpoints are loaded by name through the `from_preset`
of these classes, from local directories converted with `aimv2 convert`
(see `aimv2_presets`). Importing this package registers nothing in
keras-hub's preset tables.
"""

"""Configs, `.keras` files and keras-hub presets round-trip exactly.

The backbone's config and `.keras` round trips are keras-hub's harness
checks (`tests/test_backbone.py`); the pre-trainer's, and presets, are
here.
"""

import keras
import keras_hub
import numpy as np
from conftest import make_batch
from conftest import tiny_pretrainer
from conftest import to_numpy

import keras_aimv2


def _fixed_inputs():
    return {
        **make_batch(batch_size=2, seed=7),
        "prefix_lengths": np.array([3, 11]),
    }


def _assert_same_outputs(first, second, inputs):
    expected, actual = first(inputs), second(inputs)
    for key in expected:
        np.testing.assert_array_equal(
            to_numpy(actual[key]), to_numpy(expected[key])
        )


def test_pretrainer_config_round_trip(pretrainer):
    config = pretrainer.get_config()
    restored = keras_aimv2.AIMV2Pretrainer.from_config(config)
    assert restored.get_config()["decoder_num_layers"] == 2
    assert restored.count_params() == pretrainer.count_params()


def test_keras_file_round_trip(pretrainer, tmp_path):
    pretrainer.fit(make_batch(), batch_size=2, epochs=1, verbose=0)
    path = str(tmp_path / "pretrainer.keras")
    pretrainer.save(path)
    restored = keras.saving.load_model(path)
    assert isinstance(restored, keras_aimv2.AIMV2Pretrainer)
    _assert_same_outputs(pretrainer, restored, _fixed_inputs())
    # The optimizer comes back too, so training can go on from the file.
    assert int(to_numpy(restored.optimizer.iterations)) == 2
    for saved, loaded in zip(
        pretrainer.optimizer.variables,
        restored.optimizer.variables,
        strict=True,
    ):
        np.testing.assert_array_equal(to_numpy(saved), to_numpy(loaded))


def test_presets_round_trip(pretrainer, tmp_path):
    inputs = _fixed_inputs()
    backbone_dir = str(tmp_path / "backbone")
    pretrainer.backbone.save_to_preset(backbone_dir)
    for cls in (keras_aimv2.AIMV2Backbone, keras_hub.models.Backbone):
        backbone = cls.from_preset(backbone_dir)
        assert isinstance(backbone, keras_aimv2.AIMV2Backbone)
        np.testing.assert_array_equal(
            to_numpy(backbone(inputs["images"])),
            to_numpy(pretrainer.backbone(inputs["images"])),
        )

    task_dir = str(tmp_path / "task")
    pretrainer.save_to_preset(task_dir)
    restored = keras_aimv2.AIMV2Pretrainer.from_preset(task_dir)
    _assert_same_outputs(pretrainer, restored, inputs)


def test_trained_weights_survive_a_preset(tmp_path):
    pretrainer = tiny_pretrainer(seed=2)
    batch = make_batch(batch_size=4, seed=1)
    pretrainer.fit(batch, batch_size=4, epochs=2, verbose=0)
    pretrainer.save_to_preset(str(tmp_path))
    restored = keras_aimv2.AIMV2Pretrainer.from_preset(str(tmp_path))
    _assert_same_outputs(pretrainer, restored, _fixed_inputs())
    fresh = tiny_pretrainer(seed=2)
    assert not np.array_equal(
        to_numpy(fresh.backbone(batch["images"])),
        to_numpy(restored.backbone(batch["images"])),
    )

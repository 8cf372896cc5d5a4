"""The pre-training task: wiring, training, evaluation and bad input."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import TINY_BACKBONE
from conftest import TINY_DECODER
from conftest import make_batch
from conftest import tiny_pretrainer
from conftest import to_numpy

import keras_aimv2


def _with_prefix(batch, prefix):
    return {**batch, "prefix_lengths": np.full((len(batch["images"]),), prefix)}


def test_outputs_and_given_prefix(pretrainer, batch):
    outputs = pretrainer(_with_prefix(batch, 5))
    assert tuple(outputs["pixel_predictions"].shape) == (4, 15, 192)
    assert tuple(outputs["text_logits"].shape) == (4, 8, 100)
    assert set(outputs) == {"pixel_predictions", "text_logits"}


def test_missing_prefix_lengths_point_to_the_preprocessor(pretrainer, batch):
    del batch["prefix_lengths"]
    with pytest.raises(ValueError, match="AIMV2PretrainerPreprocessor"):
        pretrainer(batch)


def test_text_logit_never_sees_its_target(pretrainer, batch):
    # Logit j predicts token j: changing token k may only move logits > k.
    k = 4
    changed = {**batch, "token_ids": batch["token_ids"].copy()}
    changed["token_ids"][:, k] = (changed["token_ids"][:, k] + 1) % 100
    before = to_numpy(pretrainer(_with_prefix(batch, 3))["text_logits"])
    after = to_numpy(pretrainer(_with_prefix(changed, 3))["text_logits"])
    moved = np.abs(after - before).max(axis=(0, 2)) > 1e-6
    assert moved.tolist() == [j > k for j in range(8)]


def test_pixel_prediction_never_sees_its_target(pretrainer, batch):
    # Prediction i regresses patch i + 1; patch t (after the prefix) may
    # only move predictions >= t, i.e. those for patches after t.
    t = 9
    changed = {**batch, "images": batch["images"].copy()}
    changed["images"][:, 8:16, 8:16] += 1.0  # Patch (row 1, column 1) = 5.
    changed["images"][:, 16:24, 8:16] += 1.0  # Patch (row 2, column 1) = 9.
    before = to_numpy(pretrainer(_with_prefix(batch, 6))["pixel_predictions"])
    after = to_numpy(pretrainer(_with_prefix(changed, 6))["pixel_predictions"])
    moved = np.abs(after - before).max(axis=(0, 2)) > 1e-6
    # Patch 5 is in the prefix (M = 6) and is seen everywhere.
    assert moved.all()
    changed["images"][:, 8:16, 8:16] = batch["images"][:, 8:16, 8:16]
    after = to_numpy(pretrainer(_with_prefix(changed, 6))["pixel_predictions"])
    moved = np.abs(after - before).max(axis=(0, 2)) > 1e-6
    assert moved.tolist() == [i >= t for i in range(15)]


def test_fit_logs_all_losses_and_overfits_a_batch():
    pretrainer = tiny_pretrainer(seed=1)
    pretrainer.compile(optimizer=keras.optimizers.Adam(learning_rate=2e-3))
    batch = make_batch(batch_size=8, seed=3)
    repeated = tf.data.Dataset.from_tensors(batch).repeat()
    history = pretrainer.fit(
        repeated, steps_per_epoch=30, epochs=10, verbose=0
    ).history
    assert set(history) == {"loss", "pixel_loss", "text_loss", "text_accuracy"}
    first = {key: values[0] for key, values in history.items()}
    last = {key: values[-1] for key, values in history.items()}
    assert last["text_loss"] < first["text_loss"] / 20
    assert last["pixel_loss"] < first["pixel_loss"] / 3
    assert last["text_accuracy"] > 0.95
    np.testing.assert_allclose(
        last["loss"], last["text_loss"] + 0.4 * last["pixel_loss"], rtol=0.05
    )


def test_evaluation_is_reproducible(pretrainer):
    data = make_batch(batch_size=16, seed=4)
    first = pretrainer.evaluate(data, batch_size=8, verbose=0)
    second = pretrainer.evaluate(data, batch_size=8, verbose=0)
    other = tiny_pretrainer().evaluate(data, batch_size=8, verbose=0)
    assert first == second == other


def test_prefix_lengths_choose_the_pixel_targets(pretrainer):
    data = make_batch(batch_size=8, seed=4)
    drawn = pretrainer.evaluate(data, batch_size=8, verbose=0)
    given = pretrainer.evaluate(_with_prefix(data, 15), batch_size=8, verbose=0)
    assert drawn != given


@pytest.mark.parametrize(
    "shape", [(2, 24, 24, 3), (2, 32, 32, 1), (2, 32, 32, 4)]
)
def test_wrong_image_size_or_channels(pretrainer, shape):
    images = np.zeros(shape, "float32")
    with pytest.raises(ValueError, match="images"):
        pretrainer.backbone(images)
    with pytest.raises(ValueError, match="images"):
        pretrainer({**make_batch(batch_size=2), "images": images})


def test_token_ids_outside_vocabulary(pretrainer, batch):
    for bad_id in (100, -1):
        batch["token_ids"][0, 0] = bad_id
        with pytest.raises(ValueError, match=r"token_ids.*\[0, 99\]"):
            pretrainer(batch)
    with pytest.raises(Exception, match=r"token_ids.*\[0, 99\]"):
        pretrainer.fit(batch, batch_size=4, verbose=0)


def test_too_many_tokens(pretrainer, batch):
    batch["token_ids"] = np.ones((4, 9), "int32")
    batch["padding_mask"] = np.ones((4, 9), bool)
    with pytest.raises(ValueError, match="context_length=8"):
        pretrainer(batch)
    with pytest.raises(ValueError, match="context_length=8"):
        pretrainer.fit(batch, batch_size=4, verbose=0)


@pytest.mark.parametrize("prefix", [0, 16, -3])
def test_prefix_length_outside_range(pretrainer, batch, prefix):
    bad = _with_prefix(batch, prefix)
    with pytest.raises(ValueError, match=r"prefix_lengths.*\[1, 15\]"):
        pretrainer(bad)
    with pytest.raises(Exception, match=r"prefix_lengths.*\[1, 15\]"):
        pretrainer.evaluate(bad, batch_size=4, verbose=0)


def test_missing_input_keys(pretrainer, batch):
    del batch["padding_mask"]
    with pytest.raises(ValueError, match="padding_mask"):
        pretrainer(batch)


def test_native_resolution_pretrainer_trains_on_varying_shapes():
    keras.utils.set_random_seed(0)
    backbone = keras_aimv2.AIMV2Backbone(
        **{**TINY_BACKBONE, "image_shape": (None, None, 3)},
        position_embedding="sincos",
    )
    pretrainer = keras_aimv2.AIMV2Pretrainer(backbone, **TINY_DECODER)
    rng = np.random.default_rng(0)

    def batches():
        for height, width in ((32, 16), (16, 48), (24, 24)):
            batch = make_batch(batch_size=4)
            batch["images"] = rng.normal(size=(4, height, width, 3))
            num_patches = (height // 8) * (width // 8)
            batch["prefix_lengths"] = rng.integers(1, num_patches, 4)
            yield {
                **batch,
                "images": batch["images"].astype("float32"),
                "prefix_lengths": batch["prefix_lengths"].astype("int32"),
            }

    signature = {
        "images": tf.TensorSpec((None, None, None, 3), tf.float32),
        "token_ids": tf.TensorSpec((None, 8), tf.int32),
        "padding_mask": tf.TensorSpec((None, 8), tf.bool),
        "prefix_lengths": tf.TensorSpec((None,), tf.int32),
    }
    dataset = tf.data.Dataset.from_generator(
        batches, output_signature=signature
    )
    history = pretrainer.fit(dataset, epochs=2, verbose=0).history
    assert np.all(np.isfinite(history["loss"]))
    outputs = pretrainer(next(batches()))
    # 32 x 16 pixels in 8-pixel patches: 8 patches, 7 next-patch targets.
    assert tuple(outputs["pixel_predictions"].shape) == (4, 7, 192)


def test_remat_trains_exactly_like_keeping_activations(batch):
    """Recomputing blocks in the backward pass changes memory, not results."""
    batch = _with_prefix(batch, 6)
    initial = [to_numpy(w) for w in tiny_pretrainer(seed=3).weights]
    updated = []
    for remat in (False, True):
        model = tiny_pretrainer(seed=3, remat=remat)
        model.compile(
            optimizer=keras.optimizers.SGD(learning_rate=0.1),
            jit_compile=keras.config.backend() != "torch",
        )
        logs = model.train_on_batch(batch, return_dict=True)
        updated.append((logs["loss"], [to_numpy(w) for w in model.weights]))
    assert tiny_pretrainer(remat=True).get_config()["remat"] is True
    (loss, weights), (remat_loss, remat_weights) = updated
    assert remat_loss == pytest.approx(loss, rel=1e-5)
    moved = 0
    for start, before, after in zip(
        initial, weights, remat_weights, strict=True
    ):
        np.testing.assert_allclose(after, before, rtol=1e-4, atol=1e-6)
        moved += not np.allclose(start, before)
    # The step moved (nearly) every weight, identically with remat.
    assert moved >= len(weights) - 2


def test_greedy_captions_stop_at_the_end_token_or_the_context(pretrainer):
    images = make_batch(2)["images"]
    context = TINY_DECODER["context_length"]
    # Zero logits: the greedy token is always id 0.
    kernel = pretrainer.text_head.dense.kernel
    kernel.assign(np.zeros(kernel.shape, "float32"))
    ids = to_numpy(pretrainer.greedy_caption_ids(images, end_token_id=0))
    assert ids.tolist() == [[0], [0]]
    # An end token the model never emits: decoding runs to the context.
    ids = to_numpy(pretrainer.greedy_caption_ids(images, end_token_id=1))
    assert ids.shape == (2, context) and not ids.any()
    assert to_numpy(pretrainer.greedy_caption_ids(images)).shape == (2, context)


def test_greedy_captions_are_the_argmax_of_their_own_forward_pass():
    pretrainer = tiny_pretrainer(seed=5)
    images = make_batch(3)["images"]
    ids = to_numpy(pretrainer.greedy_caption_ids(images, max_length=7))
    assert ids.shape == (3, 7) and len(np.unique(ids)) > 1
    # Teacher-forced on its own output, every position predicts the id
    # greedy decoding chose there (with the same widest prefix).
    patch_tokens = pretrainer.backbone.patch_embedding(images)
    num_patches = patch_tokens.shape[1]
    features = pretrainer.backbone.encoder(
        patch_tokens, prefix_lengths=np.full((3,), num_patches - 1, "int32")
    )
    _, text_outputs = pretrainer.decoder(features, ids[:, :-1])
    logits = to_numpy(pretrainer.text_head(text_outputs))
    np.testing.assert_array_equal(logits.argmax(-1), ids)


@pytest.mark.parametrize("dtype", ["float32", "mixed_bfloat16"])
def test_automatic_compilation_by_backend_and_precision(dtype):
    backbone = keras_aimv2.AIMV2Backbone(**TINY_BACKBONE, dtype=dtype)
    pretrainer = keras_aimv2.AIMV2Pretrainer(backbone, **TINY_DECODER)
    pretrainer.compile()
    backend = keras.config.backend()
    # TensorFlow on a CPU: XLA in float32; its own oneDNN kernels, which
    # reach the processor's bfloat16 units, in bfloat16.
    expected = {
        "jax": True,
        "torch": False,
        "tensorflow": dtype == "float32",
    }[backend]
    assert pretrainer.jit_compile is expected
    logs = pretrainer.train_on_batch(make_batch(), return_dict=True)
    assert np.isfinite(to_numpy(logs["loss"]))


def _loss_and_parts(pretrainer, batch):
    predictions = pretrainer(batch)
    loss = to_numpy(pretrainer.compute_loss(x=batch, y_pred=predictions))
    pixel = to_numpy(pretrainer.pixel_loss_tracker.result())
    text = to_numpy(pretrainer.text_loss_tracker.result())
    return loss, pixel, text


@pytest.mark.parametrize(
    "weights, expected",
    [
        ({}, lambda pixel, text: text + 0.4 * pixel),
        ({"text_loss_weight": 0.0}, lambda pixel, text: 0.4 * pixel),
        ({"pixel_loss_weight": 0.0}, lambda pixel, text: text),
        (
            {"text_loss_weight": 2.5},
            lambda pixel, text: 2.5 * text + 0.4 * pixel,
        ),
    ],
)
def test_loss_weights_choose_the_objective(batch, weights, expected):
    pretrainer = tiny_pretrainer(**weights)
    loss, pixel, text = _loss_and_parts(pretrainer, batch)
    assert pixel > 0 and text > 0
    np.testing.assert_allclose(loss, expected(pixel, text), rtol=1e-5)
    config = pretrainer.get_config()
    assert config["text_loss_weight"] == weights.get("text_loss_weight", 1.0)
    restored = keras_aimv2.AIMV2Pretrainer.from_config(config)
    assert restored.text_loss_weight == pretrainer.text_loss_weight


@pytest.mark.parametrize(
    "weights, frozen_head",
    [
        ({"text_loss_weight": 0.0}, "text_head"),
        ({"pixel_loss_weight": 0.0}, "pixel_head"),
    ],
)
def test_a_zero_weight_trains_nothing_through_its_head(
    batch, weights, frozen_head
):
    pretrainer = tiny_pretrainer(**weights)
    pretrainer.compile(optimizer=keras.optimizers.SGD(learning_rate=0.5))
    other = "pixel_head" if frozen_head == "text_head" else "text_head"
    before = {
        name: [to_numpy(w) for w in getattr(pretrainer, name).weights]
        for name in (frozen_head, other)
    }
    pretrainer.fit(batch, batch_size=4, epochs=1, verbose=0)
    for name, weights_before in before.items():
        moved = [
            np.abs(to_numpy(w) - b).max()
            for w, b in zip(
                getattr(pretrainer, name).weights, weights_before, strict=True
            )
        ]
        if name == frozen_head:
            assert max(moved) == 0.0, name
        else:
            assert max(moved) > 0.0, name


@pytest.mark.parametrize(
    "weights, message",
    [
        ({"text_loss_weight": -1.0}, "`text_loss_weight` must be a finite"),
        ({"pixel_loss_weight": float("nan")}, "`pixel_loss_weight` must be"),
        ({"text_loss_weight": "1"}, "Received: text_loss_weight='1'"),
        (
            {"text_loss_weight": 0, "pixel_loss_weight": 0.0},
            "are both 0",
        ),
    ],
)
def test_bad_loss_weights_are_named(weights, message):
    with pytest.raises(ValueError, match=message):
        tiny_pretrainer(**weights)

"""The pre-training loss against an independent NumPy reference."""

import numpy as np
import pytest
from conftest import TINY_DECODER
from conftest import make_batch
from conftest import tiny_pretrainer
from conftest import to_numpy


def reference_loss(batch, predictions, patch_size, alpha):
    """AIMv2's objective written out with loops, straight from the paper."""
    images = batch["images"]
    num_images, height, width, _ = images.shape
    rows, cols = height // patch_size, width // patch_size
    pixel_error, pixel_count = 0.0, 0
    for b in range(num_images):
        patches = []
        for r in range(rows):
            for c in range(cols):
                patch = images[
                    b,
                    r * patch_size : (r + 1) * patch_size,
                    c * patch_size : (c + 1) * patch_size,
                ].reshape(-1)
                std = np.sqrt(patch.var(ddof=1) + 1e-6)
                patches.append((patch - patch.mean()) / std)
        prefix = batch["prefix_lengths"][b]
        for t in range(prefix, rows * cols):
            prediction = predictions["pixel_predictions"][b, t - 1]
            pixel_error += np.mean((prediction - patches[t]) ** 2)
            pixel_count += 1
    text_error, text_correct, text_count = 0.0, 0, 0
    logits = predictions["text_logits"].astype("float64")
    for b in range(num_images):
        for j in range(batch["token_ids"].shape[1]):
            if not batch["padding_mask"][b, j]:
                continue
            target = batch["token_ids"][b, j]
            row = logits[b, j]
            log_norm = row.max() + np.log(np.exp(row - row.max()).sum())
            text_error += log_norm - row[target]
            text_correct += int(row.argmax() == target)
            text_count += 1
    pixel = pixel_error / pixel_count
    text = text_error / text_count
    return text + alpha * pixel, pixel, text, text_correct / text_count


@pytest.mark.parametrize("alpha", [0.4, 1.5])
def test_loss_matches_numpy_reference(alpha):
    pretrainer = tiny_pretrainer(pixel_loss_weight=alpha)
    batch = make_batch(batch_size=3, seed=1, num_real_tokens=[8, 5, 2])
    rng = np.random.default_rng(2)
    num_patches, patch_dim = 16, 192
    predictions = {
        "pixel_predictions": rng.normal(
            size=(3, num_patches - 1, patch_dim)
        ).astype("float32"),
        "text_logits": rng.normal(
            size=(3, 8, TINY_DECODER["vocabulary_size"])
        ).astype("float32"),
        "prefix_lengths": np.array([1, 7, 15], "int32"),
    }
    batch["prefix_lengths"] = predictions.pop("prefix_lengths")
    loss = pretrainer.compute_loss(x=batch, y_pred=predictions)
    expected, pixel, text, accuracy = reference_loss(
        batch, predictions, patch_size=8, alpha=alpha
    )
    np.testing.assert_allclose(to_numpy(loss), expected, rtol=1e-5)
    np.testing.assert_allclose(
        to_numpy(pretrainer.pixel_loss_tracker.result()), pixel, rtol=1e-5
    )
    np.testing.assert_allclose(
        to_numpy(pretrainer.text_loss_tracker.result()), text, rtol=1e-5
    )
    np.testing.assert_allclose(
        to_numpy(pretrainer.text_accuracy_tracker.result()),
        accuracy,
        rtol=1e-5,
    )


def test_padding_and_prefix_patches_do_not_count():
    pretrainer = tiny_pretrainer()
    batch = make_batch(batch_size=2, seed=1, num_real_tokens=[3, 3])
    rng = np.random.default_rng(2)
    predictions = {
        "pixel_predictions": rng.normal(size=(2, 15, 192)).astype("float32"),
        "text_logits": rng.normal(size=(2, 8, 100)).astype("float32"),
        "prefix_lengths": np.array([10, 10], "int32"),
    }
    batch["prefix_lengths"] = predictions.pop("prefix_lengths")
    loss = to_numpy(pretrainer.compute_loss(x=batch, y_pred=predictions))
    # Predictions for prefix patches (targets 1..9, indices 0..8) and logits
    # at padding positions are free: changing them changes nothing.
    predictions["pixel_predictions"][:, :9] += 100.0
    predictions["text_logits"][:, 3:] += rng.normal(size=(2, 5, 100)) * 100
    changed = to_numpy(pretrainer.compute_loss(x=batch, y_pred=predictions))
    np.testing.assert_allclose(changed, loss, rtol=1e-6)
    # The first counted patch prediction (index 9, for patch 10) does count.
    predictions["pixel_predictions"][:, 9] += 1.0
    counted = to_numpy(pretrainer.compute_loss(x=batch, y_pred=predictions))
    assert abs(counted - loss) > 1e-3


def test_compute_loss_takes_no_targets():
    pretrainer = tiny_pretrainer()
    batch = make_batch(batch_size=2, seed=1)
    predictions = pretrainer(batch)
    loss = to_numpy(pretrainer.compute_loss(x=batch, y_pred=predictions))
    # A placeholder (one value per example) carries sample weights only.
    placeholder = pretrainer.compute_loss(
        x=batch, y=np.zeros((2,), "float32"), y_pred=predictions
    )
    np.testing.assert_allclose(to_numpy(placeholder), loss, rtol=1e-6)
    for y in (np.zeros((2, 8), "float32"), {"token_ids": batch["token_ids"]}):
        with pytest.raises(ValueError, match="takes no `y`"):
            pretrainer.compute_loss(x=batch, y=y, y_pred=predictions)

"""Pictures of what a pre-trained AIMv2 model learned.

`reconstructions.png`: held-out images, the pixel head's next-patch
predictions beside the truth, and the decoder's greedy captions beside the
real ones. `loss_curves.png`: the training and validation losses from the
CSV log.
"""

import csv
import os
import textwrap

import matplotlib

matplotlib.use("Agg")
import keras  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from keras import ops  # noqa: E402

from keras_aimv2.outputs import atomic_path  # noqa: E402
from keras_aimv2.patches import image_layout  # noqa: E402
from keras_aimv2.patches import patch_statistics  # noqa: E402
from keras_aimv2.patches import patchify  # noqa: E402
from keras_aimv2.patches import unpatchify  # noqa: E402


def next_patch_reconstructions(pretrainer, images, token_ids, prefix_length):
    """Images rebuilt from next-patch predictions, in the input's units.

    The first `prefix_length` patches are the truth (the visible prefix);
    every later patch is the pixel head's prediction from the patches before
    it. Predictions are per-patch normalized, so each is given back the mean
    and spread of the true patch, as MAE does for its pictures.

    Args:
        pretrainer: `AIMV2Pretrainer`.
        images: float array `(batch, height, width, channels)`, normalized.
        token_ids: int array `(batch, T)`; the text does not affect pixels.
        prefix_length: int. Visible patches, in `[1, num_patches - 1]`.

    Returns:
        Float NumPy array shaped like `images`.
    """
    backbone = pretrainer.backbone
    patch_size, channels = backbone.patch_size, backbone.num_channels
    batch, height, width, _ = image_layout(images.shape, backbone.data_format)
    outputs = pretrainer(
        {
            "images": images,
            "token_ids": token_ids,
            "padding_mask": np.ones_like(token_ids, bool),
            "prefix_lengths": np.full((batch,), prefix_length, "int32"),
        }
    )
    patches = patchify(images, patch_size, backbone.data_format)
    truth = ops.convert_to_numpy(patches)
    predicted = ops.convert_to_numpy(outputs["pixel_predictions"])
    mean, spread = patch_statistics(patches)
    mean, spread = ops.convert_to_numpy(mean), ops.convert_to_numpy(spread)
    rebuilt = truth.copy()
    rebuilt[:, prefix_length:] = (
        predicted[:, prefix_length - 1 :] * spread[:, prefix_length:]
        + mean[:, prefix_length:]
    )
    grid = (height // patch_size, width // patch_size)
    return ops.convert_to_numpy(
        unpatchify(rebuilt, grid, patch_size, channels, backbone.data_format)
    )


def greedy_captions(pretrainer, images):
    """The decoder's greedy captions for normalized `images`, as strings.

    Each stops at the tokenizer's end token, or after `context_length`
    tokens when the model never emits it.
    """
    tokenizer = pretrainer.preprocessor.tokenizer
    ids = pretrainer.greedy_caption_ids(
        images, end_token_id=tokenizer.end_token_id
    )
    ids = ops.convert_to_numpy(ids)
    captions = []
    for row in ids.tolist():
        if tokenizer.end_token_id in row:
            row = row[: row.index(tokenizer.end_token_id)]
        text = tokenizer.detokenize([row])
        captions.append(_to_text(text))
    return captions


def _to_text(value):
    value = ops.convert_to_numpy(value) if not isinstance(value, str) else value
    if isinstance(value, (list, tuple, np.ndarray)):
        value = np.asarray(value).reshape(-1)[0]
    return value.decode() if isinstance(value, bytes) else str(value)


def draw_reconstructions(pretrainer, batch, path, num_images=6):
    """Draw `reconstructions.png` for one batch of the evaluation data.

    Args:
        pretrainer: `AIMV2Pretrainer` with its preprocessor.
        batch: dict with `"images"` in `[0, 255]` and `"captions"`.
        path: str. The PNG to write.
        num_images: int. Rows of the figure. Defaults to `6`.

    Returns:
        The generated captions.
    """
    raw = np.asarray(batch["images"])[:num_images]
    captions = [_to_text(c) for c in np.asarray(batch["captions"])[:num_images]]
    inputs = pretrainer.preprocessor({"images": raw, "captions": captions})
    images = ops.convert_to_numpy(inputs["images"])
    token_ids = ops.convert_to_numpy(inputs["token_ids"])
    height, width = pretrainer.backbone.image_size
    num_patches = (height // pretrainer.backbone.patch_size) * (
        width // pretrainer.backbone.patch_size
    )
    prefix = max(1, num_patches // 4)
    rebuilt = next_patch_reconstructions(pretrainer, images, token_ids, prefix)
    generated = greedy_captions(pretrainer, images)
    # Map normalized values back to [0, 1] with the converter's own affine.
    scale, offset = _converter_affine(pretrainer)
    rebuilt = np.clip((rebuilt - offset) / scale / 255.0, 0.0, 1.0)
    figure, axes = plt.subplots(
        len(raw), 3, figsize=(9, 2.6 * len(raw)), squeeze=False
    )
    for row in range(len(raw)):
        axes[row, 0].imshow(raw[row].astype("uint8"))
        axes[row, 1].imshow(rebuilt[row])
        axes[row, 2].axis("off")
        lines = (
            (0.95, f"truth: {captions[row]}", "black"),
            (0.45, f"model: {generated[row]}", "tab:blue"),
        )
        for height, text, color in lines:
            axes[row, 2].text(
                0.0, height, _fitted(text), fontsize=8, va="top", color=color
            )
        for column in range(2):
            axes[row, column].set_xticks([])
            axes[row, column].set_yticks([])
    axes[0, 0].set_title("held-out image")
    axes[0, 1].set_title(f"next-patch predictions\n(first {prefix} visible)")
    axes[0, 2].set_title("captions")
    figure.tight_layout()
    _save(figure, path)
    return generated


def _fitted(text, width=44, lines=4):
    """`text` wrapped to the caption column, cut with an ellipsis."""
    return "\n".join(
        textwrap.wrap(text, width, max_lines=lines, placeholder=" ...")
    )


def _converter_affine(pretrainer):
    converter = pretrainer.preprocessor.image_converter
    scale = np.asarray(converter.scale, "float32").reshape(1, 1, 1, -1)
    offset = np.asarray(converter.offset, "float32").reshape(1, 1, 1, -1)
    return scale, offset


def draw_loss_curves(csv_path, path):
    """Draw `loss_curves.png` from a Keras `CSVLogger` file."""
    with open(csv_path) as file:
        rows = list(csv.DictReader(file))
    if not rows:
        raise ValueError(f"The training log {csv_path!r} has no rows.")
    epochs = np.arange(1, len(rows) + 1)
    figure, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for axis, name in zip(
        axes, ("loss", "pixel_loss", "text_loss"), strict=True
    ):
        for prefix, style in (("", "-"), ("val_", "--")):
            key = prefix + name
            if key in rows[0]:
                values = [float(row[key]) for row in rows]
                label = "held-out" if prefix else "training"
                axis.plot(epochs, values, style, label=label)
        axis.set_title(name)
        axis.set_xlabel("epoch")
        axis.set_yscale("log")
        axis.legend()
    figure.tight_layout()
    _save(figure, path)


def draw_pictures(pretrainer, evaluation, csv_path, output_dir):
    """Both pictures; returns their paths and the generated captions.

    `evaluation` yields dicts of images and captions, or `(x, y,
    sample_weight)` whose padding (weight 0) is left out.
    """
    os.makedirs(output_dir, exist_ok=True)
    batch, _, weights = keras.utils.unpack_x_y_sample_weight(
        next(evaluation.as_numpy_iterator())
    )
    if weights is not None:
        batch = {key: value[weights > 0] for key, value in batch.items()}
    reconstructions = os.path.join(output_dir, "reconstructions.png")
    generated = draw_reconstructions(pretrainer, batch, reconstructions)
    curves = os.path.join(output_dir, "loss_curves.png")
    draw_loss_curves(csv_path, curves)
    return {
        "reconstructions": reconstructions,
        "loss_curves": curves,
        "captions": [
            {"truth": _to_text(t), "model": g}
            for t, g in zip(
                batch["captions"][: len(generated)], generated, strict=True
            )
        ],
    }


def _save(figure, path):
    """Write `figure` to `path` atomically, in the format its suffix names."""
    suffix = os.path.splitext(path)[1].lstrip(".") or "png"
    try:
        with atomic_path(path) as temporary:
            figure.savefig(temporary, dpi=110, format=suffix)
    finally:
        plt.close(figure)


def draw_ablation(rows, path, title):
    """Draw the bar chart of an objective ablation (`aimv2 ablate`).

    One bar per objective, in the order of `rows`, its height the probe's
    top-1 accuracy (written above it); the label under a bar gives the
    paper's ImageNet-1k top-1 of that objective where it has one.

    Args:
        rows: list of dicts with `objective`, `probe_top1` (in `[0, 1]`)
            and `paper_top1` (str or `None`), as `keras_aimv2.ablation`
            writes them.
        path: str. The image to write (atomically), e.g. `ablation.png`.
        title: str. The title of the chart.

    Example:

    >>> rows = [{"objective": "aimv2", "probe_top1": 0.8,
    ...          "paper_top1": "85.6"}]
    >>> draw_ablation(rows, "ablation.png", "ablation")  # doctest: +SKIP
    """
    labels = [
        row["objective"]
        + (f"\n(paper {row['paper_top1']})" if row["paper_top1"] else "")
        for row in rows
    ]
    values = [100 * row["probe_top1"] for row in rows]
    figure, axis = plt.subplots(figsize=(1.6 * len(rows) + 2.4, 3.8))
    bars = axis.bar(range(len(rows)), values, color="#4c72b0")
    axis.bar_label(bars, [f"{value:.1f}" for value in values], padding=2)
    axis.set_xticks(range(len(rows)), labels)
    axis.set_ylabel("probe top-1 (%)")
    axis.set_ylim(0, 105)
    axis.set_title(title)
    figure.tight_layout()
    _save(figure, path)

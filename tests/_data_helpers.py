"""Synthetic captions, images, shards and tokenizers for the data tests."""

import io
import json
import os
import random
import tarfile

import numpy as np
from PIL import Image

from keras_aimv2.data.shards import SKIPPED_NAME
from keras_aimv2.data.shards import write_shards
from keras_aimv2.data.tokenizer_training import train_sentencepiece

VOCABULARY_SIZE = 200


def make_captions(count=400, seed=0):
    """Captions of made-up words, capitalized, with enough variety for 200
    SentencePiece pieces."""
    rng = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyz"
    words = [
        "".join(rng.choice(letters) for _ in range(rng.randint(2, 7)))
        for _ in range(300)
    ]
    return [
        " ".join(
            rng.choice(words) for _ in range(rng.randint(2, 10))
        ).capitalize()
        for _ in range(count)
    ]


def train_tiny_tokenizer(directory, **kwargs):
    """Train the test tokenizer (pad 0, end 1, unknown 2) and return its
    path."""
    options = {"vocabulary_size": VOCABULARY_SIZE, "num_threads": 1}
    return train_sentencepiece(
        make_captions(), os.path.join(directory, "tiny"), **options, **kwargs
    )


def encode_image(pixels, image_format="PNG"):
    """Encode a uint8 `(height, width, 3)` or `(height, width)` array."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=image_format)
    return buffer.getvalue()


def random_image(seed, height, width):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)


def write_tiny_shards(directory, count=20, examples_per_shard=8):
    """Write `count` examples of varied sizes and formats; return captions.

    Images are PNG and JPEG, color and grayscale, square and elongated.
    """
    captions = make_captions(count, seed=1)
    examples = []
    for index, caption in enumerate(captions):
        height, width = 24 + 3 * index, 40 + (index % 5) * 7
        pixels = random_image(index, height, width)
        if index % 4 == 1:
            pixels = pixels[..., 0]  # Grayscale: decoded to 3 channels.
        image_format = "JPEG" if index % 3 == 0 else "PNG"
        examples.append(
            (f"key-{index}", encode_image(pixels, image_format), caption)
        )
    write_shards(
        examples,
        directory,
        examples_per_shard=examples_per_shard,
        verbose=False,
    )
    return captions


def add_tar_member(archive, name, data):
    """Add a file `name` holding the bytes `data` to an open tar."""
    info = tarfile.TarInfo(name)
    info.size = len(data)
    archive.addfile(info, io.BytesIO(data))


def read_skipped(directory):
    """The records of the `skipped.jsonl` of a dataset directory."""
    with open(os.path.join(directory, SKIPPED_NAME), encoding="utf-8") as file:
        return [json.loads(line) for line in file]

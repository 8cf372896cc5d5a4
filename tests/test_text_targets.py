"""Caption ids and text targets as AIMv2's trainer (apple/ml-l3m) makes them.

The trainer cleans each caption (ftfy, HTML unescaped twice, whitespace
collapsed, lowercased), tokenizes it with SigLIP's SentencePiece model
through transformers' `SiglipTokenizer` (punctuation deleted, end token
`</s>` appended, padded with `</s>` and truncated to 77) and ignores the
pad id in its cross-entropy. SigLIP's model (T5's layout: `<pad>` 0, `</s>`
1, `<unk>` 2, 32,000 pieces) cannot be downloaded here, so the tests train
a small one in the same layout.
"""

import html
import re

import ftfy
import numpy as np
import pytest
import tensorflow as tf
from _data_helpers import make_captions
from conftest import TINY_BACKBONE
from conftest import tiny_pretrainer
from conftest import to_numpy
from transformers import SiglipTokenizer

from keras_aimv2.captions import normalize_caption
from keras_aimv2.data.tokenizer_training import train_sentencepiece
from keras_aimv2.models.aimv2_image_converter import AIMV2ImageConverter
from keras_aimv2.models.aimv2_pretrainer_preprocessor import (
    AIMV2PretrainerPreprocessor,
)
from keras_aimv2.models.aimv2_tokenizer import AIMV2Tokenizer

VOCABULARY_SIZE = 100
# Mojibake, HTML entities (one escaped twice), runs of whitespace, capitals,
# punctuation, digits, and captions longer than the context.
CAPTIONS = [
    "A Caf\u00c3\u00a9 on the corner,   with TWO chairs!",
    "Fish &amp;amp; chips &lt;hot&gt; \u2014 served\ton a plate.",
    "  a dog's ball (red), 3.5 cm; \u201cnice\u201d   ",
    "Crème brûlée & espresso: the café's menu",
    " ".join(make_captions(12, seed=7)),
]


@pytest.fixture(scope="module")
def siglip_proto(tmp_path_factory):
    """A small SentencePiece model in SigLIP's layout, on SigLIP's text."""
    text = make_captions(300) + CAPTIONS * 20
    directory = tmp_path_factory.mktemp("siglip")
    return train_sentencepiece(
        text,
        directory / "spiece.model",
        VOCABULARY_SIZE,
        remove_punctuation=True,
        num_threads=1,
    )


def official_ids(proto, captions, context_length):
    """The trainer's pipeline, written out: its cleaning, then transformers'
    `SiglipTokenizer` with the trainer's arguments."""
    cleaned = []
    for text in captions:
        text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
        cleaned.append(re.sub(r"\s+", " ", text).strip().lower())
    tokenizer = SiglipTokenizer(vocab_file=proto)
    assert tokenizer.pad_token_id == tokenizer.eos_token_id == 1
    assert tokenizer.unk_token_id == 2
    ids = tokenizer(
        cleaned,
        max_length=context_length,
        padding="max_length",
        truncation=True,
    ).input_ids
    return np.asarray(ids)


def siglip_preprocessor(proto, context_length):
    return AIMV2PretrainerPreprocessor(
        tokenizer=AIMV2Tokenizer(
            proto=proto, pad_token="</s>", remove_punctuation=True
        ),
        image_converter=AIMV2ImageConverter(image_size=(32, 32)),
        sequence_length=context_length,
        patch_size=TINY_BACKBONE["patch_size"],
    )


def batch_of(captions, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.uniform(0, 255, size=(len(captions), 32, 32, 3))
    return {"images": images.astype("float32"), "captions": list(captions)}


def test_cleaning_follows_the_trainer():
    assert normalize_caption(CAPTIONS[0]) == (
        "a café on the corner, with two chairs!"
    )
    assert normalize_caption(CAPTIONS[1]) == (
        "fish & chips <hot> \u2014 served on a plate."
    )
    assert normalize_caption(CAPTIONS[2], remove_punctuation=True) == (
        "a dogs ball red 35 cm nice"
    )
    assert normalize_caption(b"  \xc3\xa9T\xc3\xa9 ") == "été"


@pytest.mark.parametrize("context_length", [77, 12])
def test_siglip_layout_gives_the_official_ids(siglip_proto, context_length):
    expected = official_ids(siglip_proto, CAPTIONS, context_length)
    assert (expected == 1).sum(axis=1).min() >= 1  # Every row ends.
    preprocessor = siglip_preprocessor(siglip_proto, context_length)
    batch = batch_of(CAPTIONS)
    eager = to_numpy(preprocessor(batch)["token_ids"])
    np.testing.assert_array_equal(eager, expected)
    dataset = tf.data.Dataset.from_tensor_slices(batch).batch(len(CAPTIONS))
    graph = next(iter(dataset.map(preprocessor)))["token_ids"].numpy()
    np.testing.assert_array_equal(graph, expected)


def hand_text_loss(logits, token_ids, pad_id):
    """Mean cross-entropy over the positions whose target is not `pad_id`."""
    logits = np.asarray(logits, "float64")
    shifted = logits - logits.max(axis=-1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    targets = np.take_along_axis(log_probs, token_ids[..., None], -1)[..., 0]
    counted = token_ids != pad_id
    return -(targets * counted).sum() / counted.sum(), counted.sum()


@pytest.mark.parametrize("pad_token", ["</s>", None])
def test_text_loss_averages_exactly_the_non_pad_targets(
    siglip_proto, pad_token
):
    context_length = 16
    preprocessor = AIMV2PretrainerPreprocessor(
        tokenizer=AIMV2Tokenizer(proto=siglip_proto, pad_token=pad_token),
        image_converter=AIMV2ImageConverter(image_size=(32, 32)),
        sequence_length=context_length,
        patch_size=TINY_BACKBONE["patch_size"],
    )
    x = preprocessor(batch_of(CAPTIONS[:4]))
    token_ids = to_numpy(x["token_ids"])
    pretrainer = tiny_pretrainer(
        vocabulary_size=VOCABULARY_SIZE, context_length=context_length
    )
    outputs = pretrainer(x)
    pretrainer.compute_loss(x=x, y_pred=outputs)
    pad_id = preprocessor.tokenizer.pad_token_id
    expected, count = hand_text_loss(
        to_numpy(outputs["text_logits"]), token_ids, pad_id
    )
    reported = to_numpy(pretrainer.text_loss_tracker.result())
    np.testing.assert_allclose(reported, expected, rtol=1e-5)
    ends = (token_ids == 1).any(axis=1).sum()
    caption_tokens = ((token_ids != 0) & (token_ids != 1)).sum()
    if pad_token == "</s>":
        # SigLIP's layout: the end token (the pad id) is never a target.
        assert pad_id == 1 and count == caption_tokens
    else:
        # Distinct ids (pad 0): every caption's end token is a target.
        assert pad_id == 0 and ends == 4 and count == caption_tokens + ends

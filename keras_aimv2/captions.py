"""Caption text, cleaned as AIMv2's trainer cleans it before tokenizing.

AIMv2's trainer (apple/ml-l3m, whose tokenizer wraps SigLIP's through
transformers) repairs broken Unicode (mojibake, with `ftfy`), unescapes HTML
entities (twice, so that doubly escaped ones come out too), collapses every
run of whitespace into one space, strips the ends and lowercases. SigLIP's
tokenizer then also deletes ASCII punctuation and collapses whitespace again
(`remove_punctuation=True`). The same function serves training, tokenizer
training and generation, eagerly and inside `tf.data`.
"""

import html
import re
import string

import ftfy
import numpy as np

_WHITESPACE = re.compile(r"\s+")
_PUNCTUATION = str.maketrans("", "", string.punctuation)


def normalize_caption(text, remove_punctuation=False):
    """Clean one caption as AIMv2's trainer does before SentencePiece.

    Args:
        text: str or bytes (UTF-8). The caption.
        remove_punctuation: bool. Also delete ASCII punctuation, as SigLIP's
            tokenizer does. Defaults to `False`.

    Returns:
        The cleaned caption, a str.

    Example:

    >>> normalize_caption("  A &amp;quot;Caf\\u00c3\\u00a9&amp;quot;\\n photo ")
    'a "café" photo'
    >>> normalize_caption("A dog, running!", remove_punctuation=True)
    'a dog running'
    """
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    text = html.unescape(html.unescape(ftfy.fix_text(text)))
    text = _collapse_whitespace(text).lower()
    if remove_punctuation:
        text = _collapse_whitespace(text.translate(_PUNCTUATION))
    return text


def _collapse_whitespace(text):
    return _WHITESPACE.sub(" ", text).strip()


def normalize_captions(captions, remove_punctuation=False):
    """Clean captions of any container, with the container's own framework.

    Args:
        captions: a str or bytes, a (nested) list or tuple of them, a NumPy
            array of strings, or a `tf.string` tensor of any shape (eager
            or inside `tf.data`, where the cleaning runs as a
            `tf.numpy_function` and the static shape is kept).
        remove_punctuation: bool. As in `normalize_caption`. Defaults to
            `False`.

    Returns:
        The cleaned captions, in the same container and shape (lists of
        str for Python inputs and NumPy arrays of str).
    """
    if isinstance(captions, (str, bytes)):
        return normalize_caption(captions, remove_punctuation)
    if isinstance(captions, (list, tuple)):
        return [normalize_captions(c, remove_punctuation) for c in captions]
    if isinstance(captions, np.ndarray):
        return normalize_captions(captions.tolist(), remove_punctuation)
    if type(captions).__module__.startswith("tensorflow"):
        return _normalize_tensor(captions, remove_punctuation)
    return captions


def _normalize_tensor(captions, remove_punctuation):
    import tensorflow as tf

    if captions.dtype != tf.string:
        return captions

    def clean(flat):
        cleaned = [
            normalize_caption(text, remove_punctuation).encode("utf-8")
            for text in flat
        ]
        return np.array(cleaned, dtype=object).reshape(flat.shape)

    flat = tf.reshape(captions, [-1])
    cleaned = tf.numpy_function(clean, [flat], tf.string, stateful=False)
    cleaned = tf.reshape(cleaned, tf.shape(captions))
    cleaned.set_shape(captions.shape)
    return cleaned

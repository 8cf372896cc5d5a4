"""Per-example features that TFDV cannot see in raw image and caption bytes.

TFDV computes statistics of the values stored in the records, and the
records hold an encoded image and a caption string. What matters for
training is inside them: the decoded size and colour mode of the image, and
the length of the caption in the tokens the model will see. This module
computes those features for every example, one row each, as a DataFrame
that `tfdv.generate_statistics_from_dataframe` reads. A feature that cannot
be computed (no image, an undecodable one, no caption) is missing (`None`),
which TFDV counts as missing.
"""

import importlib.util
import io
import os

import pandas as pd
import sentencepiece
from PIL import Image

UNDECODABLE = "UNDECODABLE"
# Pillow names multi-picture JPEGs from phones "MPO"; the shard writer and
# TensorFlow read them as JPEG.
_FORMAT_NAMES = {"MPO": "JPEG"}
_DECODE_ERRORS = (
    OSError,
    SyntaxError,
    ValueError,
    Image.DecompressionBombError,
)
_TOKEN_BATCH = 4096

STRING_FEATURES = ("key", "caption", "image_format", "image_mode")
INT_FEATURES = (
    "caption_chars",
    "caption_words",
    "caption_tokens",
    "caption_boilerplate",
    "caption_not_utf8",
    "image_bytes",
    "image_width",
    "image_height",
    "image_channels",
)
FLOAT_FEATURES = ("image_aspect",)
COLUMNS = (
    "key",
    "caption",
    "caption_chars",
    "caption_words",
    "caption_tokens",
    "caption_boilerplate",
    "caption_not_utf8",
    "image_format",
    "image_bytes",
    "image_width",
    "image_height",
    "image_aspect",
    "image_channels",
    "image_mode",
)


def _load_caption_cleaning():
    """`keras_aimv2/captions.py`, read by path.

    This environment cannot import the package (importing it imports Keras
    3, which needs a newer TensorFlow), and the module needs only ftfy and
    NumPy. This folder is `keras_aimv2/data/tfdv/data_validation`, in a
    checkout and in an installed package alike.
    """
    package = os.path.join(os.path.dirname(__file__), "..", "..", "..")
    path = os.path.join(os.path.abspath(package), "captions.py")
    spec = importlib.util.spec_from_file_location("captions", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.normalize_caption


normalize_caption = _load_caption_cleaning()


class TokenCounter:
    """Counts the tokens of captions as the project's preprocessor does.

    With a SentencePiece model, a caption's length is the number of pieces
    of its text cleaned as `AIMV2Tokenizer` cleans it (Unicode repaired,
    HTML unescaped, whitespace collapsed, lowercased) plus one for the end
    token, as `AIMV2PretrainerPreprocessor` makes it. Without one it is
    approximated as the number of words plus one.

    Args:
        model_path: str or `None`. Path of a SentencePiece model file.
    """

    def __init__(self, model_path=None):
        self.model_path = model_path
        self.processor = None
        if model_path is not None:
            self.processor = sentencepiece.SentencePieceProcessor(
                model_file=model_path
            )

    def describe(self):
        """Return how tokens are counted, for the report."""
        if self.processor is None:
            return (
                "approximated as words + 1 (no --tokenizer given; pass the "
                "SentencePiece model for exact counts)"
            )
        return (
            f"SentencePiece model {self.model_path} on cleaned, lowercased "
            "text, + 1 for the end token"
        )

    def count(self, captions):
        """Return the token lengths of captions.

        Args:
            captions: list of str or `None`.

        Returns:
            A list with an int per caption, `None` for a `None` caption.
        """
        present = [
            i for i, caption in enumerate(captions) if caption is not None
        ]
        lengths = [None] * len(captions)
        for start in range(0, len(present), _TOKEN_BATCH):
            indices = present[start : start + _TOKEN_BATCH]
            texts = [captions[i] for i in indices]
            for i, length in zip(indices, self._lengths(texts), strict=True):
                lengths[i] = length + 1
        return lengths

    def _lengths(self, texts):
        if self.processor is None:
            return [len(text.split()) for text in texts]
        pieces = self.processor.encode([normalize_caption(t) for t in texts])
        return [len(ids) for ids in pieces]


def image_features(data):
    """Return the features of an encoded image.

    The image is decoded completely, so that truncated files are found.

    Args:
        data: bytes or `None`. The stored image file.

    Returns:
        A dict with `image_format` (`"JPEG"`, `"PNG"`, ... or
        `"UNDECODABLE"`), `image_bytes`, `image_width`, `image_height`,
        `image_aspect` (width / height), `image_channels` and `image_mode`
        (Pillow's mode: `"RGB"`, `"L"` for grayscale, `"RGBA"`, `"CMYK"`,
        `"P"` for palette, ...). All are `None` without an image; only the
        format and size are set when it does not decode.
    """
    features = dict.fromkeys(
        (
            "image_format",
            "image_bytes",
            "image_width",
            "image_height",
            "image_aspect",
            "image_channels",
            "image_mode",
        )
    )
    if data is None:
        return features
    features["image_bytes"] = len(data)
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            features.update(_decoded_features(image))
    except _DECODE_ERRORS:
        features["image_format"] = UNDECODABLE
    return features


def _decoded_features(image):
    width, height = image.size
    return {
        "image_format": _FORMAT_NAMES.get(image.format, image.format),
        "image_width": width,
        "image_height": height,
        "image_aspect": width / height if height else None,
        "image_channels": channel_count(image),
        "image_mode": image.mode,
    }


def channel_count(image):
    """Return the colour channels of a decoded image.

    A palette image counts the channels of its palette: 3, or 4 with
    transparency.

    Args:
        image: `PIL.Image.Image`.

    Returns:
        An int: 1 for grayscale, 2 for grayscale with alpha, 3 for RGB, 4
        for RGBA or CMYK.
    """
    if image.mode in ("P", "PA"):
        has_alpha = image.mode == "PA" or "transparency" in image.info
        palette_mode = image.palette.mode if image.palette else "RGB"
        return 4 if has_alpha or palette_mode == "RGBA" else 3
    return Image.getmodebands(image.mode)


def caption_features(data):
    """Return the features of a caption that need no tokenizer.

    Args:
        data: bytes or `None`. The stored UTF-8 caption.

    Returns:
        A dict with `caption` (the text; invalid UTF-8 replaced by U+FFFD),
        `caption_chars`, `caption_words`, `caption_boilerplate` (1 for an
        empty or whitespace-only caption, else 0) and `caption_not_utf8`
        (1 when the bytes are not valid UTF-8, else 0). All are `None`
        without a caption.
    """
    if data is None:
        return {
            "caption": None,
            "caption_chars": None,
            "caption_words": None,
            "caption_boilerplate": None,
            "caption_not_utf8": None,
        }
    try:
        text, not_utf8 = data.decode("utf-8"), 0
    except UnicodeDecodeError:
        text, not_utf8 = data.decode("utf-8", errors="replace"), 1
    return {
        "caption": text,
        "caption_chars": len(text),
        "caption_words": len(text.split()),
        "caption_boilerplate": int(not text.strip()),
        "caption_not_utf8": not_utf8,
    }


def example_features(raw):
    """Return the features of one example, except its token length.

    Args:
        raw: dict with bytes or `None` under `"image"`, `"caption"` and
            `"key"`, as `records.read_records` yields.

    Returns:
        A dict of features.
    """
    key = raw["key"]
    features = {"key": None if key is None else key.decode("utf-8", "replace")}
    features.update(caption_features(raw["caption"]))
    features.update(image_features(raw["image"]))
    return features


def feature_frame(raw_examples, token_counter):
    """Compute the features of every example as a DataFrame.

    Args:
        raw_examples: iterable of dicts, as `records.read_records` yields.
        token_counter: `TokenCounter`.

    Returns:
        A `pandas.DataFrame` with a row per example and the columns
        `COLUMNS`: strings as objects, integers as nullable `Int64`, the
        aspect ratio as float, missing values as `None`/`NA`/`NaN`.
    """
    columns = {name: [] for name in COLUMNS if name != "caption_tokens"}
    for raw in raw_examples:
        for name, value in example_features(raw).items():
            columns[name].append(value)
    columns["caption_tokens"] = token_counter.count(columns["caption"])
    return _typed_frame(columns)


def _typed_frame(columns):
    data = {}
    for name in COLUMNS:
        values = columns[name]
        if name in INT_FEATURES:
            data[name] = pd.array(values, dtype="Int64")
        elif name in FLOAT_FEATURES:
            data[name] = pd.array(values, dtype="float64")
        else:
            # The "string" dtype keeps the Arrow type a string even when
            # every value is missing.
            data[name] = pd.array(values, dtype="string")
    return pd.DataFrame(data)

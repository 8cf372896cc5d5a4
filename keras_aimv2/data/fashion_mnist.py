"""Fashion-MNIST as captioned images, read from Debian's package.

`apt-get install dataset-fashion-mnist` puts the four gzipped IDX files of
Fashion-MNIST under `/usr/share/datasets/fashion-mnist`. This module parses
them with NumPy, for classification probes (`load_fashion_mnist`) and as a
source of captioned PNG images for pre-training (`fashion_mnist_source`).
"""

import gzip
import io
import os

import numpy as np
from PIL import Image

DEFAULT_ROOT = "/usr/share/datasets/fashion-mnist"
CLASS_NAMES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
# Words for each class; no word names two classes, so a caption always
# tells which class its image belongs to.
CLASS_WORDS = (
    ("t-shirt", "tee", "top"),
    ("pair of trousers", "pair of pants", "pair of slacks"),
    ("pullover", "sweater", "jumper"),
    ("dress", "frock"),
    ("coat", "jacket", "overcoat"),
    ("sandal", "summer sandal"),
    ("shirt", "button-up shirt", "collared shirt"),
    ("sneaker", "trainer", "running shoe"),
    ("bag", "handbag", "purse"),
    ("ankle boot", "boot", "short boot"),
)
_FILE_PREFIXES = {"train": "train", "test": "t10k"}
_IDX_TYPES = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_TEMPLATES = (
    "{a} {item}",
    "a photo of {a} {item}",
    "a grayscale photo of {a} {item}",
    "a small picture of {a} {item}",
    "{a} {item} on a black background",
    "a product image of {a} {item}",
    "this is {a} {item}",
    "a low resolution image of {a} {item}",
)


def read_idx(path):
    """Read an IDX file, gzipped or not, into a NumPy array.

    Args:
        path: str or path. The IDX file; read through gzip if it ends in
            `.gz`.

    Returns:
        A NumPy array of the dtype and shape the file declares.
    """
    path = os.fspath(path)
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as file:
        data = file.read()
    if len(data) < 4 or data[:2] != b"\x00\x00" or data[2] not in _IDX_TYPES:
        raise ValueError(
            f"{path!r} is not an IDX file: its header is {data[:4]!r}, "
            "expected two zero bytes, a type code and a number of dimensions."
        )
    dtype, ndim = _IDX_TYPES[data[2]], data[3]
    header_size = 4 + 4 * ndim
    shape = tuple(np.frombuffer(data, ">u4", count=ndim, offset=4).tolist())
    expected = header_size + int(np.prod(shape)) * dtype.itemsize
    if len(data) != expected:
        raise ValueError(
            f"{path!r} declares shape {shape}, which needs {expected} bytes, "
            f"but has {len(data)}."
        )
    array = np.frombuffer(data, dtype, offset=header_size).reshape(shape)
    return array.astype(dtype.newbyteorder("="))


def load_fashion_mnist(split="train", root=DEFAULT_ROOT):
    """Load the images and labels of a split of Fashion-MNIST.

    Args:
        split: str. `"train"` (60,000 examples) or `"test"` (10,000).
            Defaults to `"train"`.
        root: str or path. Directory of the gzipped IDX files. Defaults to
            `"/usr/share/datasets/fashion-mnist"`, where Debian's
            `dataset-fashion-mnist` package puts them.

    Returns:
        A tuple `(images, labels, class_names)`: uint8 images of shape
        `(N, 28, 28)`, int64 labels of shape `(N,)` in `[0, 10)`, and the
        list of the 10 class names, indexed by label.
    """
    images_path, labels_path = _paths(split, root)
    images = read_idx(images_path)
    labels = read_idx(labels_path).astype(np.int64)
    if images.ndim != 3 or labels.shape != images.shape[:1]:
        raise ValueError(
            f"{images_path!r} and {labels_path!r} do not form a dataset: "
            f"images of shape {images.shape}, labels of shape {labels.shape}."
        )
    return images, labels, list(CLASS_NAMES)


def _paths(split, root):
    if split not in _FILE_PREFIXES:
        raise ValueError(
            f"`split` must be one of {list(_FILE_PREFIXES)}. Received: "
            f"split={split!r}"
        )
    root = os.fspath(root)
    prefix = _FILE_PREFIXES[split]
    paths = [
        os.path.join(root, f"{prefix}-{kind}-idx{ndim}-ubyte.gz")
        for kind, ndim in (("images", 3), ("labels", 1))
    ]
    for path in paths:
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"Fashion-MNIST file {path!r} not found. Install Debian's "
                "package with `apt-get install dataset-fashion-mnist`, or "
                "pass `root`, the directory of the gzipped IDX files."
            )
    return paths


def fashion_mnist_source(
    split="train", root=DEFAULT_ROOT, seed=0, limit=None, image_size=28
):
    """Yield Fashion-MNIST images with captions naming their class.

    Captions put one of the words for the class (`CLASS_WORDS`) into one of
    several templates, e.g. "a grayscale photo of an ankle boot", chosen
    at random from `seed`.

    Args:
        split: str. `"train"` or `"test"`. Defaults to `"train"`.
        root: str or path. Directory of the gzipped IDX files. Defaults to
            `"/usr/share/datasets/fashion-mnist"`.
        seed: int. Seed of the choice of words. Defaults to `0`.
        limit: int or `None`. If set, only the first `limit` examples.
            Defaults to `None`.
        image_size: int. Side of the RGB PNG images in pixels; images are
            upscaled bicubically when it is not 28. Defaults to `28`.

    Returns:
        A generator of `(key, png_bytes, caption)`, with keys
        `"{split}-{index:05d}"`.
    """
    if limit is not None and (not isinstance(limit, int) or limit < 0):
        raise ValueError(
            "`limit` must be None or a non-negative int. Received: "
            f"limit={limit!r}"
        )
    if not isinstance(image_size, int) or image_size < 1:
        raise ValueError(
            "`image_size` must be a positive int. Received: "
            f"image_size={image_size!r}"
        )
    images, labels, _ = load_fashion_mnist(split, root)
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    return _examples(split, images, labels, seed, image_size)


def _examples(split, images, labels, seed, image_size):
    rng = np.random.default_rng(seed)
    for index, (pixels, label) in enumerate(zip(images, labels, strict=True)):
        caption = fashion_caption(int(label), rng)
        yield f"{split}-{index:05d}", _png(pixels, image_size), caption


def fashion_caption(label, rng):
    """Write a caption of an image of class `label`.

    Args:
        label: int. The class, in `[0, 10)`.
        rng: `np.random.Generator`. Source of randomness.

    Returns:
        The caption, a lowercase str.
    """
    words = CLASS_WORDS[label]
    item = words[int(rng.integers(len(words)))]
    template = _TEMPLATES[int(rng.integers(len(_TEMPLATES)))]
    return template.format(a=_article(item), item=item)


def class_phrase(label):
    """How captions first name a class, with its article ("an ankle boot").

    The class names of zero-shot prompts (`keras_aimv2.lit_tuning`).

    Args:
        label: int. The class, in `[0, 10)`.

    Returns:
        A str.

    Example:

    >>> class_phrase(9)
    'an ankle boot'
    """
    if not 0 <= label < len(CLASS_WORDS):
        raise ValueError(
            f"`label` must be a class in [0, {len(CLASS_WORDS)}). Received: "
            f"label={label!r}"
        )
    item = CLASS_WORDS[label][0]
    return f"{_article(item)} {item}"


def _article(word):
    return "an" if word[0] in "aeiou" else "a"


def _png(pixels, image_size):
    image = Image.fromarray(pixels).convert("RGB")
    if image_size != image.width:
        image = image.resize((image_size, image_size), Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()

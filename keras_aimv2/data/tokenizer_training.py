"""Train a SentencePiece caption tokenizer for `AIMV2Tokenizer`.

AIMv2 uses SigLIP's SentencePiece model (32000 pieces, on cleaned,
lowercased text), which cannot be downloaded here. This trains a model of
the same kind on your own captions, offline, cleaned as `AIMV2Tokenizer`
cleans them before tokenizing (`keras_aimv2.captions`), with ids that
`AIMV2Tokenizer` reads from the proto: pad 0, end of sequence 1, unknown 2
and no start token (the AIMv2 decoder prepends its own).

Example:

    aimv2 train-tokenizer --captions captions.txt \\
        --vocabulary-size 1000 --output tokenizer.model
"""

import argparse
import io
import itertools
import os
import sys

from keras_aimv2.captions import normalize_caption
from keras_aimv2.outputs import Progress
from keras_aimv2.outputs import atomic_path
from keras_aimv2.validation import check_positive_int

MODEL_TYPES = ("unigram", "bpe")


def iter_captions(source, split="train", limit=None):
    """Iterate over the captions of a text file or a shard directory.

    Args:
        source: str or `os.PathLike`. A text file with one caption per line
            (empty lines are skipped) or a directory of TFRecord shards read
            with `keras_aimv2.data.shards.read_shards`.
        split: str. The split of a shard directory. Defaults to `"train"`.
        limit: int or `None`. Most captions to yield. Defaults to `None`
            (all of them).

    Returns:
        An iterator of `str`.

    Example:

    >>> captions = list(iter_captions("captions.txt", limit=100))
    """
    _check_limit(limit)
    source = os.fspath(source)
    if os.path.isdir(source):
        captions = _shard_captions(source, split)
    elif os.path.isfile(source):
        captions = _file_captions(source)
    else:
        raise ValueError(
            "`source` must be a caption file (one caption per line) or a "
            f"shard directory. Received: source={source!r}, which does not "
            "exist"
        )
    return itertools.islice(captions, limit)


def _file_captions(path):
    with open(path, encoding="utf-8") as file:
        for line in file:
            line = line.strip()
            if line:
                yield line


def _shard_captions(directory, split):
    # Imported here: reading shards needs TensorFlow, training does not.
    from keras_aimv2.data.shards import read_shards

    examples = read_shards(directory, split=split)
    captions = examples.map(lambda example: example["caption"])
    for caption in captions.as_numpy_iterator():
        yield caption.decode("utf-8")


def train_sentencepiece(
    captions,
    model_prefix_or_path,
    vocabulary_size=32000,
    model_type="unigram",
    normalize=True,
    remove_punctuation=False,
    character_coverage=0.9995,
    max_captions=None,
    pad_id=0,
    eos_id=1,
    unk_id=2,
    bos_id=-1,
    num_threads=None,
    verbose=True,
):
    """Train a SentencePiece model on captions and write it to a file.

    Captions are cleaned (as `AIMV2Tokenizer` cleans them before
    tokenizing: `keras_aimv2.captions.normalize_caption`) and streamed to
    the `sentencepiece` trainer, which keeps at most a few million of them
    in memory. The special pieces are `<pad>`, `</s>` and
    `<unk>` at the given ids; a negative id leaves that piece out. Training
    is deterministic for a given input with `num_threads=1`. The model file
    is written atomically: an interrupted run leaves no partial model.

    Args:
        captions: iterable of str or bytes, or a path. The captions, or a
            text file / shard directory to read them from (`iter_captions`).
        model_prefix_or_path: str or `os.PathLike`. Output path. A path
            ending in `.model` is used as is, anything else gets `.model`
            appended. Missing directories are created.
        vocabulary_size: int. Number of pieces, special ones included.
            Defaults to `32000`, the size of SigLIP's model.
        model_type: str. `"unigram"` or `"bpe"`. Defaults to `"unigram"`.
        normalize: bool. Clean the captions first, as the tokenizer does;
            pass the tokenizer's own setting. Defaults to `True`.
        remove_punctuation: bool. Also delete punctuation (the tokenizer's
            setting of the same name). Defaults to `False`.
        character_coverage: float. Share of characters the vocabulary must
            cover; rarer ones become `<unk>`. Defaults to `0.9995`.
        max_captions: int or `None`. Most captions to read. Defaults to
            `None` (all of them).
        pad_id: int. Id of `<pad>`. Defaults to `0`.
        eos_id: int. Id of `</s>`. Defaults to `1`.
        unk_id: int. Id of `<unk>`, which SentencePiece requires. Defaults
            to `2`.
        bos_id: int. Id of `<s>`; `-1` leaves it out. Defaults to `-1`.
        num_threads: int or `None`. Trainer threads. Defaults to `None`
            (the number of CPUs).
        verbose: bool. Whether to report the captions read, every few
            seconds, on stderr (`keras_aimv2.outputs.Progress`). Defaults
            to `True`.

    Returns:
        str. The path of the written `.model` file.

    Example:

    >>> captions = ["a dog on the grass", "two cats on a sofa"] * 50
    >>> path = train_sentencepiece(captions, "tiny", vocabulary_size=19)
    >>> path
    'tiny.model'
    """
    import sentencepiece

    check_positive_int("vocabulary_size", vocabulary_size)
    if model_type not in MODEL_TYPES:
        raise ValueError(
            f"`model_type` must be one of {list(MODEL_TYPES)}. Received: "
            f"model_type={model_type!r}"
        )
    if not 0 < character_coverage <= 1:
        raise ValueError(
            "`character_coverage` must lie in (0, 1]. Received: "
            f"character_coverage={character_coverage!r}"
        )
    _check_limit(max_captions, name="max_captions")
    special_ids = {"pad_id": pad_id, "eos_id": eos_id, "unk_id": unk_id}
    special_ids["bos_id"] = bos_id
    for name, value in special_ids.items():
        if not isinstance(value, int) or value < -1:
            raise ValueError(
                f"`{name}` must be an int, -1 to leave the piece out. "
                f"Received: {name}={value!r}"
            )
    if unk_id < 0:
        raise ValueError(
            f"SentencePiece needs an unknown piece. Received: unk_id={unk_id}"
        )
    used = [value for value in special_ids.values() if value >= 0]
    if len(set(used)) != len(used) or max(used) >= vocabulary_size:
        raise ValueError(
            "Special ids must be distinct and below `vocabulary_size`. "
            f"Received: {special_ids}, vocabulary_size={vocabulary_size}"
        )
    if num_threads is None:
        num_threads = os.cpu_count() or 1
    check_positive_int("num_threads", num_threads)

    path = os.fspath(model_prefix_or_path)
    if not path.endswith(".model"):
        path += ".model"
    if isinstance(captions, (str, os.PathLike)):
        captions = iter_captions(captions)
    progress = Progress("train_tokenizer", "captions", enabled=verbose)
    sentences = _training_sentences(
        captions, normalize, remove_punctuation, max_captions, progress
    )

    model = io.BytesIO()
    options = dict(
        sentence_iterator=sentences,
        model_writer=model,
        vocab_size=vocabulary_size,
        model_type=model_type,
        character_coverage=character_coverage,
        pad_id=pad_id,
        eos_id=eos_id,
        unk_id=unk_id,
        bos_id=bos_id,
        pad_piece="<pad>",
        eos_piece="</s>",
        unk_piece="<unk>",
        bos_piece="<s>",
        num_threads=num_threads,
        minloglevel=2,
    )
    try:
        sentencepiece.SentencePieceTrainer.train(**options)
    except RuntimeError as error:
        if "Vocabulary size" not in str(error):
            raise
        raise ValueError(
            f"vocabulary_size={vocabulary_size} does not suit these "
            f"captions: {error}"
        ) from None
    directory = os.path.dirname(path)
    if directory:
        os.makedirs(directory, exist_ok=True)
    with atomic_path(path) as temporary:
        with open(temporary, "wb") as file:
            file.write(model.getvalue())
    return path


def _training_sentences(
    captions, normalize, remove_punctuation, limit, progress
):
    count = 0
    for read, caption in enumerate(itertools.islice(captions, limit), 1):
        progress.update(read, used=count)
        if isinstance(caption, bytes):
            caption = caption.decode("utf-8")
        if not isinstance(caption, str):
            raise ValueError(
                "`captions` must hold strings or bytes. Received an item of "
                f"type {type(caption).__name__}: {caption!r}"
            )
        if normalize:
            caption = normalize_caption(caption, remove_punctuation)
        # SentencePiece reads one sentence per line.
        caption = " ".join(caption.split())
        if not caption:
            continue
        count += 1
        yield caption
    if count == 0:
        raise ValueError("`captions` holds no non-empty caption.")


def _check_limit(limit, name="limit"):
    if limit is not None:
        check_positive_int(name, limit)


def main(argv=None, prog="aimv2 train-tokenizer"):
    """Command line: train a tokenizer from a caption file or shards.

    Args:
        argv: list of str or `None`. Arguments without the program name.
            Defaults to `None` (`sys.argv[1:]`).
        prog: str. The name of the command in usage and error messages.
            Defaults to `"aimv2 train-tokenizer"`.

    Returns:
        int. The exit status, `0` on success. `--help` exits with status 0
        after printing the usage.

    Example:

    >>> main(["--captions", "captions.txt", "--vocabulary-size", "1000",
    ...       "--output", "tokenizer.model"])
    0
    """
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Train a SentencePiece caption tokenizer for AIMv2 "
        "(pad 0, end 1, unknown 2, no start token, cleaned lowercased "
        "text).",
    )
    parser.add_argument(
        "--captions",
        required=True,
        help="Text file with one caption per line, or a shard directory.",
    )
    parser.add_argument(
        "--output", required=True, help="Path of the .model file to write."
    )
    parser.add_argument("--vocabulary-size", type=int, default=32000)
    parser.add_argument("--model-type", choices=MODEL_TYPES, default="unigram")
    parser.add_argument(
        "--split", default="train", help="Split of a shard directory."
    )
    parser.add_argument(
        "--max-captions", type=int, default=None, help="Most captions to use."
    )
    parser.add_argument("--character-coverage", type=float, default=0.9995)
    parser.add_argument(
        "--raw-text",
        action="store_true",
        help="Do not clean the captions (for a tokenizer built with "
        "normalize=False; AIMV2Tokenizer cleans and lowercases by default).",
    )
    parser.add_argument(
        "--remove-punctuation",
        action="store_true",
        help="Delete punctuation, as SigLIP's tokenizer does (for a "
        "tokenizer built with remove_punctuation=True).",
    )
    parser.add_argument("--num-threads", type=int, default=None)
    args = parser.parse_args(argv)

    captions = iter_captions(
        args.captions, split=args.split, limit=args.max_captions
    )
    path = train_sentencepiece(
        captions,
        args.output,
        vocabulary_size=args.vocabulary_size,
        model_type=args.model_type,
        normalize=not args.raw_text,
        remove_punctuation=args.remove_punctuation,
        character_coverage=args.character_coverage,
        num_threads=args.num_threads,
    )
    print(f"Wrote a {args.vocabulary_size}-piece tokenizer to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Sources of image-caption examples read from files.

A source yields `(key, image_bytes, caption)` tuples, the input of
`keras_aimv2.data.shards.write_shards`. A source never judges the data: an
example whose image file is missing is yielded with `image_bytes=None`, one
without a caption with `caption=None`, and `write_shards` skips and counts
them together with undecodable images and empty captions.

The functions check their arguments when called and return a generator, so
that a wrong path fails at once rather than at the first example.
"""

import csv
import glob
import json
import os
import tarfile

IMAGE_FIELDS = ("image", "file", "file_name", "path")
CAPTION_FIELDS = ("caption", "text")
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")
_CSV_DELIMITERS = {".csv": ",", ".tsv": "\t"}
_JSONL_SUFFIXES = (".jsonl", ".json")


def folder_source(image_dir, captions_file):
    """Yield examples from a directory of images and a file of captions.

    The captions file is JSON Lines (`.jsonl`, one object per line) or CSV
    (`.csv`, or tab-separated `.tsv`, with a header row). Each object or row
    names an image file, relative to `image_dir`, under one of the keys
    `"image"`, `"file"`, `"file_name"` or `"path"`, and its caption under
    `"caption"` or `"text"`. An image that does not exist is yielded as
    `None`, which `write_shards` counts as `"missing_image"`.

    Args:
        image_dir: str or path. Directory the image paths are relative to.
        captions_file: str or path. The JSON Lines or CSV file of captions.

    Returns:
        A generator of `(key, image_bytes, caption)`, with the image path as
        written in the captions file as key.
    """
    image_dir = os.fspath(image_dir)
    captions_file = os.fspath(captions_file)
    if not os.path.isdir(image_dir):
        raise FileNotFoundError(
            f"`image_dir` {image_dir!r} is not a directory."
        )
    if not os.path.isfile(captions_file):
        raise FileNotFoundError(
            f"`captions_file` {captions_file!r} does not exist."
        )
    suffix = os.path.splitext(captions_file)[1].lower()
    if suffix not in _JSONL_SUFFIXES and suffix not in _CSV_DELIMITERS:
        raise ValueError(
            f"`captions_file` must end in .jsonl, .csv or .tsv. Received: "
            f"{captions_file!r}"
        )
    return _folder_examples(image_dir, captions_file, suffix)


def _folder_examples(image_dir, captions_file, suffix):
    if suffix in _JSONL_SUFFIXES:
        rows = _jsonl_rows(captions_file)
    else:
        rows = _csv_rows(captions_file, _CSV_DELIMITERS[suffix])
    for where, row in rows:
        name = str(_field(row, IMAGE_FIELDS, where, "image file name"))
        caption = _field(row, CAPTION_FIELDS, where, "caption")
        try:
            with open(os.path.join(image_dir, name), "rb") as file:
                image = file.read()
        except (FileNotFoundError, IsADirectoryError):
            image = None
        yield name, image, caption


def _jsonl_rows(path):
    with open(path, encoding="utf-8") as file:
        for number, line in enumerate(file, start=1):
            if not line.strip():
                continue
            where = f"{path}, line {number}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{where}: invalid JSON ({error}).") from None
            if not isinstance(row, dict):
                raise ValueError(
                    f"{where}: expected a JSON object, found {row!r:.80}."
                )
            yield where, row


def _csv_rows(path, delimiter):
    with open(path, encoding="utf-8", newline="") as file:
        reader = csv.DictReader(file, delimiter=delimiter)
        for row in reader:
            yield f"{path}, line {reader.line_num}", row


def _field(row, names, where, meaning):
    for name in names:
        if row.get(name) is not None:
            return row[name]
    raise ValueError(
        f"{where}: no {meaning}. Expected one of the fields {list(names)}; "
        f"found {sorted(row)}."
    )


def webdataset_source(tar_paths):
    """Yield examples from WebDataset tar shards, such as img2dataset's.

    The members of a tar that share a key, the file name up to its first
    dot, form one example: the image is the member ending in `.jpg`,
    `.jpeg`, `.png` or `.webp`, the caption the member ending in `.txt` or
    else the `"caption"` field of the member ending in `.json`. Tars are
    streamed, never extracted. An example without an image is yielded with
    `image_bytes=None` and one without a caption with `caption=None`, for
    `write_shards` to count.

    Args:
        tar_paths: str, path, or list of them. Tar files, glob patterns such
            as `"shards/*.tar"`, or directories, whose `.tar` files are read.

    Returns:
        A generator of `(key, image_bytes, caption)`, with keys
        `"{tar file name}/{member key}"`.
    """
    paths = _expand_tar_paths(tar_paths)
    return _webdataset_examples(paths)


def _expand_tar_paths(tar_paths):
    if isinstance(tar_paths, (str, os.PathLike)):
        tar_paths = [tar_paths]
    if not tar_paths:
        raise ValueError("`tar_paths` is empty; expected tar files.")
    paths = []
    for pattern in map(os.fspath, tar_paths):
        if os.path.isdir(pattern):
            found = sorted(
                glob.glob(os.path.join(glob.escape(pattern), "*.tar"))
            )
        elif os.path.isfile(pattern):
            found = [pattern]
        else:
            found = sorted(p for p in glob.glob(pattern) if os.path.isfile(p))
        if not found:
            raise FileNotFoundError(
                f"`tar_paths` entry {pattern!r} matches no tar files."
            )
        paths.extend(found)
    return paths


def _webdataset_examples(paths):
    for path in paths:
        tar_name = os.path.basename(path)
        for key, members in _samples(path):
            yield f"{tar_name}/{key}", *_image_and_caption(members)


def _samples(path):
    """Yield `(key, {extension: bytes})` for runs of members with one key."""
    key, members = None, {}
    with tarfile.open(path, mode="r|*") as archive:
        for member in archive:
            if not member.isfile():
                continue
            directory, name = os.path.split(member.name)
            stem, dot, extension = name.partition(".")
            if not dot:
                continue
            member_key = os.path.join(directory, stem)
            if member_key != key:
                if members:
                    yield key, members
                key, members = member_key, {}
            members[extension.lower()] = archive.extractfile(member).read()
    if members:
        yield key, members


def _image_and_caption(members):
    image = next(
        (members[ext] for ext in IMAGE_EXTENSIONS if ext in members), None
    )
    caption = None
    if "txt" in members:
        caption = members["txt"]
    elif "json" in members:
        caption = _json_caption(members["json"])
    return image, caption


def _json_caption(data):
    try:
        value = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    if not isinstance(value, dict) or not isinstance(value.get("caption"), str):
        return None
    return value["caption"]

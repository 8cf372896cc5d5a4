"""Sources of image-caption examples read from files.

A source yields `(key, image_bytes, caption, where)` tuples, the input of
`keras_aimv2.data.shards.write_shards`, where `where` says where the
example comes from (`"captions.jsonl:12"`, a tar file) for the list of
skipped examples. A source judges only what it must to make an example:
a row it cannot parse, an image path that leaves the image folder or a tar
damaged from some point on are yielded as a `SkippedExample` with their
reason. Everything else is left to `write_shards`: an example whose image
file is missing is yielded with `image_bytes=None`, a caption as found
(`None`, a number, text that is not valid UTF-8, ...), and `write_shards`
skips and counts them together with undecodable images and empty
captions, with the skipped examples of the sources, in one place.

The functions check their arguments when called and return a generator, so
that a wrong path fails at once rather than at the first example.
"""

import collections
import csv
import glob
import json
import os
import tarfile
import zlib

IMAGE_FIELDS = ("image", "file", "file_name", "path")
CAPTION_FIELDS = ("caption", "text")
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")
_CSV_DELIMITERS = {".csv": ",", ".tsv": "\t"}
_JSONL_SUFFIXES = (".jsonl", ".json")
# Bytes that are not UTF-8 are kept as lone surrogates: a caption holding
# them is counted as "undecodable_caption", and an image name holding them
# still names its file, as the file system does.
_TEXT_OPTIONS = {"encoding": "utf-8-sig", "errors": "surrogateescape"}
# A tar that ends early or is damaged raises one of these.
_TAR_ERRORS = (tarfile.TarError, OSError, EOFError, zlib.error)


class SkippedExample(
    collections.namedtuple(
        "SkippedExample",
        ("key", "reason", "where", "detail"),
        defaults=(None, None),
    )
):
    """An example a source could not read, to be counted and listed.

    `write_shards` counts it under `reason` in the manifest and lists it in
    the file of skipped examples beside the manifest, as it does for the
    examples it rejects itself.

    Args:
        key: str or `None`. The key of the example, or of the file it comes
            from; `None` when the source could not tell it.
        reason: str. Why it was skipped, e.g. `"image_outside_folder"`.
        where: str or `None`. Where it comes from, e.g.
            `"captions.jsonl:12"`. Defaults to `None`.
        detail: str or `None`. What was wrong, in words. Defaults to
            `None`.
    """

    __slots__ = ()


def folder_source(image_dir, captions_file):
    """Yield examples from a directory of images and a file of captions.

    The captions file is JSON Lines (`.jsonl`, one object per line) or CSV
    (`.csv`, or tab-separated `.tsv`, with a header row), in UTF-8 with or
    without a byte-order mark. Each object or row names an image file,
    relative to `image_dir`, under one of the keys `"image"`, `"file"`,
    `"file_name"` or `"path"`, and its caption under `"caption"` or
    `"text"`.

    No single row stops the build. A line that is not a JSON object or a
    row the CSV reader cannot parse is skipped as `"unreadable_row"`, an
    image path that is absolute or leaves `image_dir` (`../x.png`) as
    `"image_outside_folder"` without being opened, and an image file that
    exists but cannot be read as `"unreadable_image"`. A row without an
    image name, or whose image file does not exist, is yielded with
    `image_bytes=None`, which `write_shards` counts as `"missing_image"`;
    captions are yielded as found for `write_shards` to judge. Symbolic
    links inside `image_dir` are followed: whoever built the folder put
    them there.

    Args:
        image_dir: str or path. Directory the image paths are relative to.
        captions_file: str or path. The JSON Lines or CSV file of captions.

    Returns:
        A generator of `(key, image_bytes, caption, where)`, with the image
        path as written in the captions file as key and
        `"{captions_file}:{line}"` as `where`, and of `SkippedExample`s.
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
    if suffix in _JSONL_SUFFIXES:
        rows = _jsonl_rows(captions_file)
    elif suffix in _CSV_DELIMITERS:
        delimiter = _CSV_DELIMITERS[suffix]
        _check_csv_header(captions_file, delimiter)
        rows = _csv_rows(captions_file, delimiter)
    else:
        raise ValueError(
            f"`captions_file` must end in .jsonl, .csv or .tsv. Received: "
            f"{captions_file!r}"
        )
    return _folder_examples(image_dir, rows)


def _folder_examples(image_dir, rows):
    for where, row, problem in rows:
        if problem is not None:
            yield SkippedExample(None, "unreadable_row", where, problem)
            continue
        name = _field(row, IMAGE_FIELDS)
        caption = _field(row, CAPTION_FIELDS)
        if name is None:
            yield None, None, caption, where
        elif not isinstance(name, str):
            yield SkippedExample(
                None,
                "unreadable_row",
                where,
                f"the image name {name!r:.80} is not a string",
            )
        else:
            yield _read_image(image_dir, name, caption, where)


def _read_image(image_dir, name, caption, where):
    """Return the example of one row, or a `SkippedExample`."""
    relative = os.path.normpath(name)
    if os.path.isabs(relative) or relative.split(os.sep)[0] == os.pardir:
        return SkippedExample(
            name,
            "image_outside_folder",
            where,
            "image paths must be relative and stay inside the image folder",
        )
    try:
        with open(os.path.join(image_dir, relative), "rb") as file:
            image = file.read()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        image = None
    except (OSError, ValueError) as error:
        return SkippedExample(name, "unreadable_image", where, str(error))
    return name, image, caption, where


def _jsonl_rows(path):
    """Yield `(where, row, problem)`; `problem` says why a line is not a
    row."""
    with open(path, **_TEXT_OPTIONS) as file:
        for number, line in enumerate(file, start=1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                yield where, None, f"invalid JSON ({error})"
                continue
            if isinstance(row, dict):
                yield where, row, None
            else:
                yield where, None, f"expected a JSON object, found {row!r:.80}"


def _check_csv_header(path, delimiter):
    """Raise unless the header row has an image and a caption column."""
    with open(path, newline="", **_TEXT_OPTIONS) as file:
        header = next(csv.reader(file, delimiter=delimiter), [])
    for names, meaning in (
        (IMAGE_FIELDS, "image file name"),
        (CAPTION_FIELDS, "caption"),
    ):
        if not set(names) & set(header):
            raise ValueError(
                f"`captions_file` {path!r} has no {meaning} column. Expected "
                f"one of {list(names)} in its header row; found {header}."
            )


def _csv_rows(path, delimiter):
    """Yield `(where, row, problem)`; `problem` says why a row is not
    read."""
    with open(path, newline="", **_TEXT_OPTIONS) as file:
        reader = csv.DictReader(file, delimiter=delimiter)
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as error:
                yield f"{path}:{reader.line_num}", None, str(error)
            else:
                yield f"{path}:{reader.line_num}", row, None


def _field(row, names):
    """The first value of `names` in `row` that is not `None`, or
    `None`."""
    return next(
        (row[name] for name in names if row.get(name) is not None), None
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

    A tar that cannot be read to its end (truncated by an interrupted
    download, damaged, or not a tar) does not stop the build: the examples
    read before the damage are kept, the example being read when it was
    met is dropped, and the tar is yielded as a `SkippedExample` with the
    reason `"unreadable_tar"`, its file name as key and what was lost as
    detail. A tar that ends without the end-of-archive block every tar
    writer adds counts as truncated.

    Args:
        tar_paths: str, path, or list of them. Tar files, glob patterns such
            as `"shards/*.tar"`, or directories, whose `.tar` files are read.

    Returns:
        A generator of `(key, image_bytes, caption, where)`, with keys
        `"{tar file name}/{member key}"` and the tar's path as `where`, and
        of `SkippedExample`s.
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
        yield from _tar_examples(path)


def _tar_examples(path):
    """Yield the examples of one tar, then a `SkippedExample` for the tar
    if it could not be read to its end.

    The members sharing a key form an example once a member of another key
    follows, or the tar ends properly. When it does not, the example being
    read may have lost members, so it is dropped; those before it are kept.
    `tarfile` ends quietly on a truncated or damaged header, so the end is
    proper only when the end-of-archive block was read.
    """
    tar_name = os.path.basename(path)
    header = _EndAwareTarInfo.tracker()
    key, members, count = None, {}, 0
    try:
        with tarfile.open(path, mode="r|*", tarinfo=header) as archive:
            for member in archive:
                if not member.isfile():
                    continue
                directory, name = os.path.split(member.name)
                stem, dot, extension = name.partition(".")
                if not dot:
                    continue
                member_key = os.path.join(directory, stem)
                if member_key != key:
                    if key is not None:
                        yield _tar_example(tar_name, key, members, path)
                        count += 1
                    key, members = member_key, {}
                data = archive.extractfile(member).read()
                members[extension.lower()] = data
        if header.saw_end:
            if key is not None:
                yield _tar_example(tar_name, key, members, path)
            return
        problem = "it ends without the end-of-archive block (truncated?)"
    except _TAR_ERRORS as error:
        problem = str(error) or type(error).__name__
    dropped = "" if key is None else f"; dropped {tar_name}/{key}, being read"
    yield SkippedExample(
        tar_name,
        "unreadable_tar",
        path,
        f"{problem}; kept the {count} example(s) before{dropped}",
    )


def _tar_example(tar_name, key, members, path):
    return f"{tar_name}/{key}", *_image_and_caption(members), path


class _EndAwareTarInfo(tarfile.TarInfo):
    """A `TarInfo` that notes whether the last header block read was the
    end-of-archive block, since `tarfile` also ends quietly on a truncated
    or damaged header."""

    saw_end = False

    @classmethod
    def tracker(cls):
        """A subclass of its own for one tar, so that tars read at the same
        time do not share the flag."""
        return type("_TarInfoOfOneTar", (cls,), {})

    @classmethod
    def frombuf(cls, buf, encoding, errors):
        cls.saw_end = len(buf) == tarfile.BLOCKSIZE and not any(buf)
        return super().frombuf(buf, encoding, errors)


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
    """The `"caption"` field as found, for `write_shards` to judge; `None`
    when the member is not a JSON object."""
    try:
        value = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return value.get("caption") if isinstance(value, dict) else None

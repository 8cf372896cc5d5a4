"""Faults in the inputs of the dataset builders and in the shards read back.

A bad row never stops a build: it is counted by reason in the manifest and
listed in `skipped.jsonl`. A manifest never makes a reader leave its
directory, and a damaged shard is named when it is read.
"""

import json
import os
import tarfile

import pytest
import tensorflow as tf
from _data_helpers import add_tar_member
from _data_helpers import encode_image
from _data_helpers import random_image
from _data_helpers import read_skipped
from _data_helpers import write_tiny_shards

from keras_aimv2.data import build
from keras_aimv2.data import shards
from keras_aimv2.data import sources
from keras_aimv2.data import tokenizer_training


def _png(seed=0):
    return encode_image(random_image(seed, 6, 8))


def _keys(directory, **kwargs):
    records = shards.read_shards(directory, **kwargs)
    return [record["key"].numpy().decode() for record in records]


@pytest.fixture
def images(tmp_path):
    directory = tmp_path / "images"
    directory.mkdir()
    for seed, name in enumerate(("good.png", "null.png", "number.png")):
        (directory / name).write_bytes(_png(seed))
    for name in ("latin.png", "blank.png"):
        (directory / name).write_bytes(_png())
    (directory / "broken.png").write_bytes(b"not an image")
    (tmp_path / "outside.png").write_bytes(_png(9))
    return directory


def test_folder_builder_counts_and_lists_every_bad_row(
    tmp_path, images, capsys
):
    outside = tmp_path / "outside.png"
    rows = [
        {"image": "good.png", "caption": "a good one"},
        {"image": "null.png", "caption": None},
        {"image": "number.png", "caption": 42},
        b'{"image": "latin.png", "caption": "caf\xe9"}',
        {"image": "blank.png", "caption": "  "},
        {"image": "broken.png", "caption": "x"},
        {"image": "gone.png", "caption": "x"},
        {"image": "../outside.png", "caption": "x"},
        {"image": str(outside), "caption": "x"},
        {"caption": "no image named"},
        b'{"image": "good.png", "caption": ',
        b'["good.png", "a list"]',
        {"file": "sub/../good.png", "text": "the same, by a detour"},
    ]
    lines = [
        r if isinstance(r, bytes) else json.dumps(r).encode() for r in rows
    ]
    captions = tmp_path / "captions.jsonl"
    captions.write_bytes(b"\n".join(lines) + b"\n")
    output = tmp_path / "out"
    argv = ["folder", "--images", str(images), "--captions", str(captions)]
    assert build.main([*argv, "--output", str(output)]) == 0

    manifest = shards.read_manifest(output)
    assert manifest["num_examples"] == 2
    assert manifest["skipped"] == {
        "caption_not_string": 1,
        "empty_caption": 1,
        "image_outside_folder": 2,
        "missing_caption": 1,
        "missing_image": 2,
        "undecodable_caption": 1,
        "undecodable_image": 1,
        "unreadable_row": 2,
    }
    assert _keys(output) == ["good.png", "sub/../good.png"]
    records = read_skipped(output)
    assert [(r["key"], r["reason"], r["where"]) for r in records] == [
        ("null.png", "missing_caption", f"{captions}:2"),
        ("number.png", "caption_not_string", f"{captions}:3"),
        ("latin.png", "undecodable_caption", f"{captions}:4"),
        ("blank.png", "empty_caption", f"{captions}:5"),
        ("broken.png", "undecodable_image", f"{captions}:6"),
        ("gone.png", "missing_image", f"{captions}:7"),
        ("../outside.png", "image_outside_folder", f"{captions}:8"),
        (str(outside), "image_outside_folder", f"{captions}:9"),
        (None, "missing_image", f"{captions}:10"),
        (None, "unreadable_row", f"{captions}:11"),
        (None, "unreadable_row", f"{captions}:12"),
    ]
    assert records[9]["detail"].startswith("invalid JSON")
    assert "expected a JSON object" in records[10]["detail"]
    assert f"listed in {output / 'skipped.jsonl'}" in capsys.readouterr().err


def test_folder_source_follows_symlinks_inside_the_folder(tmp_path, images):
    os.symlink(tmp_path / "outside.png", images / "link.png")
    captions = tmp_path / "captions.jsonl"
    captions.write_text('{"image": "link.png", "caption": "linked"}\n')
    [(key, image, caption, where)] = sources.folder_source(images, captions)
    assert (key, caption, where) == ("link.png", "linked", f"{captions}:1")
    assert image == (tmp_path / "outside.png").read_bytes()


def test_csv_with_a_byte_order_mark_and_bad_bytes(tmp_path, images):
    captions = tmp_path / "captions.csv"
    captions.write_bytes(
        "image,caption\r\ngood.png,caf\u00e9 au lait\r\n".encode("utf-8-sig")
        + b"latin.png,caf\xe9\r\ngone.png,x\r\nnull.png\r\n"
    )
    examples = list(sources.folder_source(images, captions))
    assert examples[0][0] == "good.png"
    assert examples[0][2] == "caf\u00e9 au lait"
    manifest = shards.write_shards(examples, tmp_path / "out", verbose=False)
    assert manifest["num_examples"] == 1
    assert manifest["skipped"] == {
        "missing_caption": 1,
        "missing_image": 1,
        "undecodable_caption": 1,
    }
    assert read_skipped(tmp_path / "out") == [
        {
            "key": "latin.png",
            "reason": "undecodable_caption",
            "where": f"{captions}:3",
        },
        {
            "key": "gone.png",
            "reason": "missing_image",
            "where": f"{captions}:4",
        },
        {
            "key": "null.png",
            "reason": "missing_caption",
            "where": f"{captions}:5",
        },
    ]


def _write_tar(path, first, count):
    """A tar of `count` samples with a PNG and a caption each; return the
    `(header offset, data offset)` of every member."""
    with tarfile.open(path, "w") as archive:
        for index in range(first, first + count):
            add_tar_member(archive, f"{index:06d}.png", _png(index))
            add_tar_member(archive, f"{index:06d}.txt", b"sample %d" % index)
    with tarfile.open(path) as archive:
        return [(m.offset, m.offset_data) for m in archive.getmembers()]


def _truncate(path, size):
    with open(path, "r+b") as file:
        file.truncate(size)


def test_truncated_tar_keeps_the_samples_before_the_damage(tmp_path, capsys):
    tars = tmp_path / "tars"
    tars.mkdir()
    _write_tar(tars / "00000.tar", 0, 2)
    offsets = _write_tar(tars / "00001.tar", 100, 4)
    _write_tar(tars / "00002.tar", 200, 1)
    # Cut inside the image of the third sample.
    _truncate(tars / "00001.tar", offsets[4][1] + 20)
    output = tmp_path / "out"
    argv = ["webdataset", "--tars", str(tars), "--output", str(output)]
    assert build.main(argv) == 0

    manifest = shards.read_manifest(output)
    assert manifest["skipped"] == {"unreadable_tar": 1}
    assert _keys(output) == [
        "00000.tar/000000",
        "00000.tar/000001",
        "00001.tar/000100",
        "00001.tar/000101",
        "00002.tar/000200",
    ]
    [record] = read_skipped(output)
    assert record["key"] == "00001.tar"
    assert record["where"] == str(tars / "00001.tar")
    assert record["detail"] == (
        "unexpected end of data; kept the 2 example(s) before; dropped "
        "00001.tar/000102, being read"
    )
    assert "unreadable_tar: 1" in capsys.readouterr().out


@pytest.mark.parametrize("cut", ["header", "between", "junk"])
def test_tar_ending_without_its_end_block_is_reported(tmp_path, cut):
    path = tmp_path / "00000.tar"
    offsets = _write_tar(path, 0, 3)
    if cut == "junk":
        path.write_bytes(b"this is no tar" * 100)
    else:
        # Inside the header of the third sample's image, which `tarfile`
        # takes for the end of the archive, or right before it.
        _truncate(path, offsets[4][0] + (100 if cut == "header" else 0))
    examples = list(sources.webdataset_source(path))
    kept = [] if cut == "junk" else ["00000.tar/000000"]
    assert [e[0] for e in examples[:-1]] == kept
    skipped = examples[-1]
    assert isinstance(skipped, sources.SkippedExample)
    assert skipped[:3] == ("00000.tar", "unreadable_tar", str(path))
    if cut != "junk":
        assert "without the end-of-archive block" in skipped.detail
        assert "dropped 00000.tar/000001" in skipped.detail


def test_complete_tars_report_nothing(tmp_path):
    _write_tar(tmp_path / "00000.tar", 0, 2)
    examples = list(sources.webdataset_source(tmp_path))
    assert [e[0] for e in examples] == ["00000.tar/000000", "00000.tar/000001"]
    assert examples[1][2] == b"sample 1"


@pytest.mark.parametrize(
    "entry",
    ["../other/train.tfrecord", "ABSOLUTE", "sub/train.tfrecord", "..", 5],
)
def test_manifest_entries_outside_the_directory_are_refused(tmp_path, entry):
    dataset = tmp_path / "data"
    write_tiny_shards(dataset, count=4, examples_per_shard=4)
    path = dataset / "manifest.json"
    manifest = json.loads(path.read_text())
    if entry == "ABSOLUTE":
        entry = str(dataset / "train-00000-of-00001.tfrecord")
    manifest["shards"][0]["file"] = entry
    path.write_text(json.dumps(manifest))
    message = (
        f"{str(path)!r} lists the shard .*{entry!r}.*not a file of the "
        "dataset directory.*Refusing to read files outside"
    )
    with pytest.raises(ValueError, match=message):
        shards.read_manifest(dataset)
    with pytest.raises(ValueError, match=message):
        shards.read_shards(dataset)


def _cut_second_shard(directory):
    path = os.path.join(directory, "train-00001-of-00003.tfrecord")
    _truncate(path, os.path.getsize(path) // 2)


def test_truncated_shard_is_named_before_reading(tmp_path):
    write_tiny_shards(tmp_path, count=20, examples_per_shard=8)
    _cut_second_shard(tmp_path)
    with pytest.raises(
        ValueError,
        match=r"train-00001-of-00003.tfrecord' has \d+ bytes, but the "
        r"manifest .* records \d+: it is truncated or was changed\. "
        r"Rebuild the split",
    ):
        shards.read_shards(tmp_path)


@pytest.mark.parametrize("shuffle_files", [False, True])
def test_damaged_shard_is_named_when_read(tmp_path, shuffle_files):
    write_tiny_shards(tmp_path, count=20, examples_per_shard=8)
    # A manifest of an older version, which records no sizes.
    path = tmp_path / "manifest.json"
    manifest = json.loads(path.read_text())
    for entry in manifest["shards"]:
        del entry["bytes"]
    path.write_text(json.dumps(manifest))
    _cut_second_shard(tmp_path)
    dataset = shards.read_shards(tmp_path, shuffle_files=shuffle_files, seed=0)
    read = []
    with pytest.raises(
        tf.errors.InvalidArgumentError,
        match=r"The shard \S*train-00001-of-00003.tfrecord is truncated or "
        r"corrupt: 3 of its 8 records could be read\. Rebuild the split",
    ):
        for record in dataset:
            read.append(record["key"].numpy().decode())
    if not shuffle_files:
        assert read == [f"key-{i}" for i in range(11)]


def test_corrupt_shard_of_the_right_size_is_named(tmp_path):
    write_tiny_shards(tmp_path, count=20, examples_per_shard=8)
    path = tmp_path / "train-00002-of-00003.tfrecord"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(
        tf.errors.InvalidArgumentError,
        match=r"train-00002-of-00003.tfrecord is truncated or corrupt",
    ):
        _keys(tmp_path)


def test_build_dataset_help_names_the_command(capsys):
    for argv, usage in (
        (["--help"], "usage: aimv2 build-dataset [-h]"),
        (["folder", "--help"], "usage: aimv2 build-dataset folder [-h]"),
    ):
        with pytest.raises(SystemExit) as raised:
            build.main(argv, prog="aimv2 build-dataset")
        assert raised.value.code == 0
        assert capsys.readouterr().out.startswith(usage)
    with pytest.raises(SystemExit) as raised:
        build.main(["--help"])
    assert raised.value.code == 0
    assert capsys.readouterr().out.startswith("usage: aimv2 build-dataset")
    with pytest.raises(SystemExit) as raised:
        build.main(["folder"], prog="aimv2 build-dataset")
    assert raised.value.code == 2
    assert "aimv2 build-dataset folder: error:" in capsys.readouterr().err


def test_train_tokenizer_help_names_the_command(capsys):
    with pytest.raises(SystemExit) as raised:
        tokenizer_training.main(["--help"], prog="aimv2 train-tokenizer")
    assert raised.value.code == 0
    output = capsys.readouterr().out
    assert output.startswith("usage: aimv2 train-tokenizer [-h] --captions")
    with pytest.raises(SystemExit) as raised:
        tokenizer_training.main(["--help"])
    assert raised.value.code == 0
    assert capsys.readouterr().out.startswith("usage: aimv2 train-tokenizer")

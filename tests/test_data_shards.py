import io
import json
import os

import numpy as np
import pytest
import tensorflow as tf
from _data_helpers import read_skipped
from PIL import Image

from keras_aimv2.data import shards


def _encode(color, image_format, size=(8, 6), mode="RGB"):
    image = Image.new("RGB", size, color).convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format=image_format)
    return buffer.getvalue()


def _examples(count):
    return [
        (
            f"key-{i}",
            _encode((i * 20, 0, 255 - i * 20), "PNG" if i % 2 else "JPEG"),
            f"caption number {i} \u2013 caf\u00e9",
        )
        for i in range(count)
    ]


def _read_all(directory, **kwargs):
    return [
        {name: value.numpy() for name, value in example.items()}
        for example in shards.read_shards(directory, **kwargs)
    ]


def test_round_trip_keeps_bytes_captions_and_order(tmp_path):
    examples = _examples(7)
    manifest = shards.write_shards(
        examples, tmp_path, examples_per_shard=3, source="test", verbose=False
    )
    records = _read_all(tmp_path)
    assert [r["key"].decode() for r in records] == [e[0] for e in examples]
    assert [r["image"] for r in records] == [e[1] for e in examples]
    assert [r["caption"].decode() for r in records] == [e[2] for e in examples]
    assert manifest == shards.read_manifest(tmp_path)
    assert manifest["format"] == "keras_aimv2.shards/1"
    assert manifest["num_examples"] == 7
    assert manifest["skipped"] == {}
    assert manifest["image_formats"] == {"JPEG": 4, "PNG": 3}
    assert manifest["parameters"]["examples_per_shard"] == 3
    assert [s["num_examples"] for s in manifest["shards"]] == [3, 3, 1]
    assert [s["bytes"] for s in manifest["shards"]] == [
        os.path.getsize(tmp_path / s["file"]) for s in manifest["shards"]
    ]
    assert manifest["skipped_examples"] == "skipped.jsonl"
    assert (tmp_path / "skipped.jsonl").read_text() == ""
    assert sorted(os.listdir(tmp_path)) == [
        "manifest.json",
        "skipped.jsonl",
        "train-00000-of-00003.tfrecord",
        "train-00001-of-00003.tfrecord",
        "train-00002-of-00003.tfrecord",
    ]


def test_read_shards_gives_string_scalars_that_decode(tmp_path):
    shards.write_shards(_examples(3), tmp_path, verbose=False)
    dataset = shards.read_shards(tmp_path)
    spec = dataset.element_spec
    assert set(spec) == {"image", "caption", "key"}
    for value in spec.values():
        assert value.dtype == tf.string and value.shape == ()
    image = next(iter(dataset))["image"]
    assert tf.io.decode_image(image).shape == (6, 8, 3)


def test_invalid_examples_are_counted_and_skipped(tmp_path, capsys):
    good = _examples(4)
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3))
    buffer = io.BytesIO()
    Image.fromarray(noise.astype(np.uint8)).save(buffer, format="JPEG")
    jpeg = buffer.getvalue()
    examples = (
        good[:2]
        + [
            ("garbage", b"this is not an image", "a caption"),
            ("truncated", jpeg[: len(jpeg) // 2], "a caption"),
            ("empty", good[0][1], ""),
            ("blank", good[0][1], " \n\t "),
            ("no-image", None, "a caption"),
            ("no-caption", good[0][1], None),
            ("latin-1", good[0][1], "caf\xe9".encode("latin-1"), "a.txt:3"),
            ("number", good[0][1], 12),
        ]
        + good[2:]
    )
    manifest = shards.write_shards(examples, tmp_path, source="test")
    assert manifest["num_examples"] == 4
    assert manifest["skipped"] == {
        "caption_not_string": 1,
        "empty_caption": 2,
        "missing_caption": 1,
        "missing_image": 1,
        "undecodable_caption": 1,
        "undecodable_image": 2,
    }
    assert [r["key"].decode() for r in _read_all(tmp_path)] == [
        e[0] for e in good
    ]
    assert (
        capsys.readouterr()
        .out.strip()
        .endswith(
            "wrote 4 examples in 1 shard; skipped 8 (caption_not_string: 1, "
            "empty_caption: 2, missing_caption: 1, missing_image: 1, "
            "undecodable_caption: 1, undecodable_image: 2)"
        )
    )
    assert read_skipped(tmp_path) == [
        {"key": "garbage", "reason": "undecodable_image"},
        {"key": "truncated", "reason": "undecodable_image"},
        {"key": "empty", "reason": "empty_caption"},
        {"key": "blank", "reason": "empty_caption"},
        {"key": "no-image", "reason": "missing_image"},
        {"key": "no-caption", "reason": "missing_caption"},
        {"key": "latin-1", "reason": "undecodable_caption", "where": "a.txt:3"},
        {"key": "number", "reason": "caption_not_string"},
    ]


def test_other_formats_are_converted_to_png(tmp_path):
    translucent = io.BytesIO()
    Image.new("RGBA", (4, 4), (9, 99, 199, 128)).save(translucent, "WEBP")
    examples = [
        ("bmp", _encode((1, 2, 3), "BMP"), "a bmp"),
        ("gif", _encode((0, 0, 0), "GIF", mode="P"), "a gif"),
        ("webp", translucent.getvalue(), "a webp"),
    ]
    manifest = shards.write_shards(examples, tmp_path, verbose=False)
    assert manifest["image_formats"] == {"PNG": 3}
    images = [Image.open(io.BytesIO(r["image"])) for r in _read_all(tmp_path)]
    assert [image.format for image in images] == ["PNG"] * 3
    assert [image.mode for image in images] == ["RGB", "RGB", "RGBA"]
    assert images[0].getpixel((0, 0)) == (1, 2, 3)


def test_captions_are_stripped(tmp_path):
    shards.write_shards(
        [("k", _encode((0, 0, 0), "PNG"), "  two words\n")],
        tmp_path,
        verbose=False,
    )
    assert _read_all(tmp_path)[0]["caption"] == b"two words"


def _failing(examples, after):
    for index, example in enumerate(examples):
        if index == after:
            raise RuntimeError("interrupted")
        yield example


def test_interrupted_write_leaves_no_dataset(tmp_path):
    with pytest.raises(RuntimeError, match="interrupted"):
        shards.write_shards(
            _failing(_examples(9), after=5),
            tmp_path,
            examples_per_shard=2,
            verbose=False,
        )
    assert os.listdir(tmp_path) == []
    with pytest.raises(ValueError, match="not a dataset directory"):
        shards.read_manifest(tmp_path)


def test_refuses_to_overwrite_unless_asked(tmp_path):
    shards.write_shards(
        _examples(6), tmp_path, examples_per_shard=2, verbose=False
    )
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not empty.*overwrite"):
        shards.write_shards(_examples(1), tmp_path, verbose=False)
    assert shards.read_manifest(tmp_path)["num_examples"] == 6

    shards.write_shards(_examples(1), tmp_path, overwrite=True, verbose=False)
    assert sorted(os.listdir(tmp_path)) == [
        "manifest.json",
        "notes.txt",
        "skipped.jsonl",
        "train-00000-of-00001.tfrecord",
    ]
    assert len(_read_all(tmp_path)) == 1


def test_interrupted_overwrite_keeps_the_old_dataset(tmp_path):
    shards.write_shards(_examples(4), tmp_path, verbose=False)
    with pytest.raises(RuntimeError, match="interrupted"):
        shards.write_shards(
            _failing(_examples(9), after=5),
            tmp_path,
            overwrite=True,
            verbose=False,
        )
    assert len(os.listdir(tmp_path)) == 3
    assert len(_read_all(tmp_path)) == 4


def test_no_valid_examples_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="undecodable_image: 1"):
        shards.write_shards([("k", b"junk", "text")], tmp_path, verbose=False)
    assert os.listdir(tmp_path) == []


def test_split_name_is_checked_and_used(tmp_path):
    shards.write_shards(_examples(2), tmp_path, split="test", verbose=False)
    assert os.path.exists(tmp_path / "test-00000-of-00001.tfrecord")
    assert len(_read_all(tmp_path, split="test")) == 2
    with pytest.raises(ValueError, match="holds the split 'test'"):
        shards.read_shards(tmp_path)


def test_shuffled_files_are_reproducible_with_a_seed(tmp_path):
    examples = _examples(12)
    shards.write_shards(examples, tmp_path, examples_per_shard=2, verbose=False)

    def keys(seed):
        records = _read_all(tmp_path, shuffle_files=True, seed=seed)
        return [r["key"].decode() for r in records]

    first = keys(seed=1)
    assert sorted(first) == sorted(e[0] for e in examples)
    assert keys(seed=1) == first
    orders = {tuple(keys(seed=s)) for s in range(2, 6)}
    assert len(orders | {tuple(first)}) > 1


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"examples_per_shard": 0}, "examples_per_shard=0"),
        ({"split": "my split"}, "split='my split'"),
        ({"metadata": {"seed": np.float32(1)}}, "JSON serializable"),
    ],
)
def test_bad_arguments_are_named(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        shards.write_shards(_examples(1), tmp_path, verbose=False, **kwargs)


def test_read_manifest_rejects_other_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        shards.read_manifest(tmp_path / "absent")
    (tmp_path / "manifest.json").write_text(json.dumps({"format": "other/1"}))
    with pytest.raises(ValueError, match="not a manifest"):
        shards.read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text(
        json.dumps({"format": "keras_aimv2.shards/9"})
    )
    with pytest.raises(ValueError, match="version '9'"):
        shards.read_manifest(tmp_path)


def test_progress_is_reported_on_stderr(tmp_path, capsys, monkeypatch):
    from keras_aimv2 import outputs

    monkeypatch.setattr(outputs, "PROGRESS_SECONDS", 0.0)
    examples = _examples(3) + [("blank", _examples(1)[0][1], " ")]
    shards.write_shards(examples, tmp_path)
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 4
    assert lines[-1].startswith(
        "[write_shards] 4 examples: written 3, skipped 1; "
    )
    assert captured.out.startswith("wrote 3 examples in 1 shard; skipped 1")
    shards.write_shards(_examples(2), tmp_path / "quiet", verbose=False)
    assert capsys.readouterr() == ("", "")


def test_a_failed_manifest_write_leaves_no_manifest(tmp_path, monkeypatch):
    from keras_aimv2 import outputs

    def failing_dump(*args, **kwargs):
        raise OSError("disk full")

    with monkeypatch.context() as patch:
        patch.setattr(outputs.json, "dump", failing_dump)
        with pytest.raises(OSError, match="disk full"):
            shards.write_shards(_examples(2), tmp_path, verbose=False)
    # No manifest, complete or torn, and no temporary file of it.
    assert not [n for n in os.listdir(tmp_path) if "manifest" in n]
    with pytest.raises(ValueError, match="not a dataset directory"):
        shards.read_manifest(tmp_path)
    # The next write replaces what was left.
    shards.write_shards(_examples(2), tmp_path, overwrite=True, verbose=False)
    assert len(_read_all(tmp_path)) == 2
    with open(tmp_path / "manifest.json") as file:
        assert json.load(file)["num_examples"] == 2

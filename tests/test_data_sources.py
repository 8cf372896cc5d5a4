import gzip
import io
import json
import re
import tarfile

import numpy as np
import pytest
from _data_helpers import add_tar_member
from PIL import Image

from keras_aimv2.data import build
from keras_aimv2.data import fashion_mnist
from keras_aimv2.data import shards
from keras_aimv2.data import sources


def _encode(color, image_format):
    buffer = io.BytesIO()
    Image.new("RGB", (5, 4), color).save(buffer, format=image_format)
    return buffer.getvalue()


@pytest.fixture
def image_dir(tmp_path):
    images = tmp_path / "images"
    (images / "sub").mkdir(parents=True)
    (images / "a.png").write_bytes(_encode((255, 0, 0), "PNG"))
    (images / "sub" / "b.jpg").write_bytes(_encode((0, 0, 255), "JPEG"))
    return images


def test_folder_source_reads_jsonl(tmp_path, image_dir):
    rows = [
        {"image": "a.png", "caption": "a red patch"},
        {"file_name": "sub/b.jpg", "text": "a blue patch"},
        {"path": "gone.png", "caption": "no such file"},
    ]
    captions = tmp_path / "captions.jsonl"
    captions.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    examples = list(sources.folder_source(image_dir, captions))
    assert [(key, caption) for key, _, caption, _ in examples] == [
        ("a.png", "a red patch"),
        ("sub/b.jpg", "a blue patch"),
        ("gone.png", "no such file"),
    ]
    assert examples[0][1] == (image_dir / "a.png").read_bytes()
    assert examples[2][1] is None
    assert [e[3] for e in examples] == [f"{captions}:{n}" for n in (1, 2, 3)]

    manifest = shards.write_shards(examples, tmp_path / "out", verbose=False)
    assert manifest["num_examples"] == 2
    assert manifest["skipped"] == {"missing_image": 1}


def test_folder_source_reads_csv(tmp_path, image_dir):
    captions = tmp_path / "captions.csv"
    captions.write_text(
        'file,caption\na.png,"red, bright"\nsub/b.jpg,\nmissing.jpg,gone\n'
    )
    examples = list(sources.folder_source(image_dir, captions))
    assert [e[2] for e in examples] == ["red, bright", "", "gone"]
    manifest = shards.write_shards(examples, tmp_path / "out", verbose=False)
    assert manifest["num_examples"] == 1
    assert manifest["skipped"] == {"empty_caption": 1, "missing_image": 1}


def test_folder_source_errors_name_the_problem(tmp_path, image_dir):
    captions = tmp_path / "captions.jsonl"
    captions.write_text('{"image": "a.png", "caption": "x"}\n')
    with pytest.raises(FileNotFoundError, match="absent"):
        sources.folder_source(tmp_path / "absent", captions)
    with pytest.raises(FileNotFoundError, match="nothing.jsonl"):
        sources.folder_source(image_dir, tmp_path / "nothing.jsonl")
    (tmp_path / "captions.csv").write_text("image,description\na.png,x\n")
    with pytest.raises(
        ValueError,
        match=r"captions.csv' has no caption column\. Expected one of "
        r"\['caption', 'text'\].*found \['image', 'description'\]",
    ):
        sources.folder_source(image_dir, tmp_path / "captions.csv")
    (tmp_path / "captions.txt").write_text("a.png red\n")
    with pytest.raises(ValueError, match=r"\.jsonl, \.csv or \.tsv"):
        sources.folder_source(image_dir, tmp_path / "captions.txt")


@pytest.fixture
def tar_dir(tmp_path):
    directory = tmp_path / "tars"
    directory.mkdir()
    jpeg, png = _encode((0, 255, 0), "JPEG"), _encode((9, 9, 9), "PNG")
    with tarfile.open(directory / "00000.tar", "w") as archive:
        add_tar_member(archive, "000000000.jpg", jpeg)
        add_tar_member(archive, "000000000.txt", b"a green square\n")
        add_tar_member(archive, "000000001.png", png)
        add_tar_member(
            archive, "000000001.json", b'{"caption": "a dark one", "w": 5}'
        )
        add_tar_member(archive, "000000002.jpg", jpeg)
        add_tar_member(archive, "000000002.json", b'{"url": "no caption here"}')
    with tarfile.open(directory / "00001.tar", "w") as archive:
        add_tar_member(archive, "000010000.txt", b"text without an image")
        add_tar_member(archive, "000010001.webp", _encode((1, 2, 3), "WEBP"))
        add_tar_member(archive, "000010001.txt", b"from the second tar")
    return directory


def test_webdataset_source_groups_members_by_key(tar_dir, tmp_path):
    examples = list(sources.webdataset_source(str(tar_dir / "*.tar")))
    assert [e[0] for e in examples] == [
        "00000.tar/000000000",
        "00000.tar/000000001",
        "00000.tar/000000002",
        "00001.tar/000010000",
        "00001.tar/000010001",
    ]
    assert examples[0][1] == _encode((0, 255, 0), "JPEG")
    assert examples[0][2] == b"a green square\n"
    assert examples[1][2] == "a dark one"
    assert examples[2][2] is None
    assert examples[3][1] is None

    manifest = shards.write_shards(examples, tmp_path / "out", verbose=False)
    assert manifest["num_examples"] == 3
    assert manifest["skipped"] == {"missing_caption": 1, "missing_image": 1}
    assert manifest["image_formats"] == {"JPEG": 1, "PNG": 2}


def test_webdataset_source_accepts_directories_and_lists(tar_dir):
    from_directory = list(sources.webdataset_source(tar_dir))
    from_list = list(
        sources.webdataset_source(
            [tar_dir / "00000.tar", str(tar_dir / "00001.tar")]
        )
    )
    assert len(from_directory) == 5
    assert from_list == from_directory
    with pytest.raises(FileNotFoundError, match="nope-"):
        sources.webdataset_source(str(tar_dir / "nope-*.tar"))


def _idx(array, type_code):
    header = bytes([0, 0, type_code, array.ndim])
    header += np.array(array.shape, ">u4").tobytes()
    return header + array.tobytes()


def test_read_idx_parses_types_and_checks_sizes(tmp_path):
    values = (np.arange(24) - 5).astype(">i4").reshape(2, 3, 4)
    (tmp_path / "ints.idx").write_bytes(_idx(values, 0x0C))
    np.testing.assert_array_equal(
        fashion_mnist.read_idx(tmp_path / "ints.idx"), values
    )
    with gzip.open(tmp_path / "bytes.gz", "wb") as file:
        file.write(_idx(np.arange(6, dtype=np.uint8), 0x08))
    assert fashion_mnist.read_idx(tmp_path / "bytes.gz").tolist() == [
        0,
        1,
        2,
        3,
        4,
        5,
    ]
    (tmp_path / "short.idx").write_bytes(_idx(values, 0x0C)[:-4])
    with pytest.raises(ValueError, match="declares shape"):
        fashion_mnist.read_idx(tmp_path / "short.idx")
    (tmp_path / "bad.idx").write_bytes(b"\x89PNG")
    with pytest.raises(ValueError, match="not an IDX file"):
        fashion_mnist.read_idx(tmp_path / "bad.idx")


def test_load_fashion_mnist_reads_the_debian_files():
    for split, count in (("train", 60000), ("test", 10000)):
        images, labels, names = fashion_mnist.load_fashion_mnist(split)
        assert images.shape == (count, 28, 28)
        assert images.dtype == np.uint8
        assert labels.shape == (count,)
        assert set(np.unique(labels).tolist()) == set(range(10))
        assert names[0] == "T-shirt/top" and names[9] == "Ankle boot"
    # The first test image of Fashion-MNIST is an ankle boot.
    assert labels[0] == 9 and images[0].max() > 200


def _names_class(caption, label):
    def mentions(words):
        return any(
            re.search(rf"(?<![\w-]){re.escape(w)}\b", caption) for w in words
        )

    others = [w for i, w in enumerate(fashion_mnist.CLASS_WORDS) if i != label]
    return mentions(fashion_mnist.CLASS_WORDS[label]) and not any(
        mentions(words) for words in others
    )


def test_fashion_mnist_captions_name_the_class():
    images, labels, _ = fashion_mnist.load_fashion_mnist("test")
    examples = list(
        fashion_mnist.fashion_mnist_source("test", seed=3, limit=300)
    )
    assert len(examples) == 300
    assert examples[0][0] == "test-00000"
    for (_, _, caption), label in zip(examples, labels, strict=False):
        assert _names_class(caption, int(label)), (caption, label)
    assert len({caption for _, _, caption in examples}) > 60
    image = np.asarray(Image.open(io.BytesIO(examples[5][1])))
    assert image.shape == (28, 28, 3)
    np.testing.assert_array_equal(image[..., 1], images[5])
    again = fashion_mnist.fashion_mnist_source("test", seed=3, limit=300)
    assert [e[2] for e in again] == [e[2] for e in examples]


def test_fashion_mnist_upscales_and_reports_missing_files(tmp_path):
    (_, png, _) = next(
        fashion_mnist.fashion_mnist_source("train", limit=1, image_size=56)
    )
    assert Image.open(io.BytesIO(png)).size == (56, 56)
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-"):
        fashion_mnist.load_fashion_mnist("train", root=tmp_path)
    with pytest.raises(ValueError, match="split='valid'"):
        fashion_mnist.load_fashion_mnist("valid")


def test_builder_rejects_a_missing_image_directory(tmp_path, capsys):
    captions = tmp_path / "captions.jsonl"
    captions.write_text('{"image": "a.png", "caption": "x"}\n')
    argv = ["folder", "--images", str(tmp_path / "no-images")]
    argv += ["--captions", str(captions), "--output", str(tmp_path / "out")]
    with pytest.raises(SystemExit) as raised:
        build.main(argv)
    assert raised.value.code == 2
    assert "no-images' is not a directory" in capsys.readouterr().err
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_builder_folder_and_webdataset_commands(tmp_path, image_dir, tar_dir):
    captions = tmp_path / "captions.csv"
    captions.write_text("image,text\na.png,red\nsub/b.jpg,blue\n")
    argv = ["folder", "--images", str(image_dir), "--captions", str(captions)]
    assert build.main(argv + ["--output", str(tmp_path / "folder")]) == 0
    assert shards.read_manifest(tmp_path / "folder")["num_examples"] == 2

    argv = ["webdataset", "--tars", str(tar_dir), "--split", "val"]
    assert build.main(argv + ["--output", str(tmp_path / "web")]) == 0
    manifest = shards.read_manifest(tmp_path / "web")
    assert manifest["split"] == "val"
    assert manifest["num_examples"] == 3

import io
import re

import numpy as np
import pytest
from PIL import Image

from keras_aimv2.data import build
from keras_aimv2.data import scenes
from keras_aimv2.data import shards

COLOR_WORDS = set(scenes.COLORS)
SHAPE_OF_WORD = {
    word: shape for shape, words in scenes.SHAPE_WORDS.items() for word in words
}


def _words_in(caption, words):
    return {
        w for w in words if re.search(rf"\b{re.escape(w)}(e?s)?\b", caption)
    }


def _background_free(caption):
    return re.sub(r" (on|against) a [a-z ]*background$", "", caption)


@pytest.fixture(scope="module")
def examples():
    return [scenes.scene_example(7, index) for index in range(200)]


def test_same_seed_same_bytes_and_other_seed_differs():
    first = list(scenes.scenes_source(12, seed=5, image_size=40))
    assert list(scenes.scenes_source(12, seed=5, image_size=40)) == first
    other = list(scenes.scenes_source(12, seed=6, image_size=40))
    assert [e[1] for e in other] != [e[1] for e in first]
    assert first[3][0] == "seed5/0000003"
    assert first[3][1] == scenes.scene_example(5, 3, 40)[0]


def test_images_are_rgb_pngs_of_the_requested_size():
    for key, png, _ in scenes.scenes_source(5, seed=0, image_size=48):
        image = Image.open(io.BytesIO(png))
        assert image.format == "PNG", key
        assert image.mode == "RGB" and image.size == (48, 48)


def test_captions_name_exactly_the_colors_and_shapes(examples):
    for _, caption, scene in examples:
        objects = scene.objects
        text = _background_free(caption)
        assert _words_in(text, COLOR_WORDS) == {o.color for o in objects}
        shapes = {SHAPE_OF_WORD[w] for w in _words_in(text, SHAPE_OF_WORD)}
        assert shapes == {o.shape for o in objects}, caption
        assert scene.background in caption or "background" not in caption


def test_size_and_count_words_are_true(examples):
    size_of_word = {
        word: size
        for size, words in scenes.SIZE_WORDS.items()
        for word in words
    }
    for _, caption, scene in examples:
        sizes = {o.size for o in scene.objects}
        for word in _words_in(caption, size_of_word):
            assert size_of_word[word] in sizes, caption
        kinds = [(o.color, o.shape) for o in scene.objects]
        counts = {kinds.count(kind) for kind in kinds} | {len(kinds)}
        for number, word in scenes.COUNT_WORDS.items():
            if re.search(rf"\b{word}\b", caption):
                assert number in counts, caption


def test_position_phrases_are_true(examples):
    phrases = sorted(
        (
            (phrase, position)
            for position, options in scenes.POSITION_PHRASES.items()
            for phrase in options
        ),
        key=lambda item: -len(item[0]),
    )
    found = 0
    for _, caption, scene in examples:
        text = caption
        for phrase, position in phrases:
            if phrase in text:
                text = text.replace(phrase, "")
                found += 1
                positions = {o.position for o in scene.objects}
                assert position in positions, caption
    assert found > 20


def _two_object_scene():
    rng = np.random.default_rng(0)
    left = scenes._place(rng, "square", "blue", "large", 0, 0, 64)
    right = scenes._place(rng, "triangle", "green", "small", 0, 2, 64)
    return scenes.Scene((left, right), "black", False, 0, 64)


def test_relations_are_true():
    scene = _two_object_scene()
    relations = 0
    for seed in range(60):
        caption = scenes.describe_scene(scene, np.random.default_rng(seed))
        assert not re.search(r"\b(above|over|below|under|beneath)\b", caption)
        if "left of" in caption:
            relations += 1
            assert caption.index("blue") < caption.index("left of")
            assert caption.index("left of") < caption.index("green")
        if "right of" in caption:
            relations += 1
            assert caption.index("green") < caption.index("right of")
            assert caption.index("right of") < caption.index("blue")
    assert relations > 5


def test_pixels_show_the_described_objects(examples):
    for png, _, scene in examples[:50]:
        pixels = np.asarray(Image.open(io.BytesIO(png))).astype(int)
        background = np.array(scenes.BACKGROUNDS[scene.background])
        for obj in scene.objects:
            center = pixels[int(obj.y), int(obj.x)]
            assert np.abs(center - obj.rgb).max() <= 2
            distance = np.linalg.norm(np.array(obj.rgb) - background)
            assert distance > 80
        for left, top, right, bottom in (o.box for o in scene.objects):
            assert 0 <= left and right <= scene.image_size
            assert 0 <= top and bottom <= scene.image_size


def test_scenes_are_varied(examples):
    captions = [caption for _, caption, _ in examples]
    objects = [o for _, _, scene in examples for o in scene.objects]
    assert len(set(captions)) > 180
    assert {o.shape for o in objects} == set(scenes.SHAPES)
    assert {o.color for o in objects} == set(scenes.COLORS)
    assert {o.position for o in objects} == {
        p for row in scenes.POSITIONS for p in row
    }
    assert {len(s.objects) for _, _, s in examples} == {1, 2, 3}
    assert any(re.search(r"\b(two|three) \w+ \w+e?s\b", c) for c in captions)
    assert any("left of" in c or "above" in c for c in captions)
    assert {s.textured for _, _, s in examples} == {True, False}


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_examples": -1, "seed": 0}, "num_examples=-1"),
        ({"num_examples": 3, "seed": 0, "image_size": 8}, "image_size=8"),
        ({"num_examples": 3, "seed": "0"}, "seed='0'"),
    ],
)
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        scenes.scenes_source(**kwargs)


def test_builder_writes_a_scenes_dataset(tmp_path, capsys):
    output = str(tmp_path / "scenes" / "train")
    argv = ["scenes", "--num-examples", "30", "--seed", "1"]
    argv += ["--image-size", "32", "--examples-per-shard", "8"]
    assert build.main(argv + ["--output", output]) == 0
    assert "wrote 30 examples in 4 shards; skipped 0" in capsys.readouterr().out
    manifest = shards.read_manifest(output)
    assert manifest["parameters"] == {
        "examples_per_shard": 8,
        "num_examples": 30,
        "seed": 1,
        "image_size": 32,
    }
    records = list(shards.read_shards(output))
    assert len(records) == 30
    png, caption, _ = scenes.scene_example(1, 29, 32)
    assert records[29]["image"].numpy() == png
    assert records[29]["caption"].numpy().decode() == caption

    with pytest.raises(SystemExit) as raised:
        build.main(argv + ["--output", output])
    assert raised.value.code == 2
    assert "--overwrite" in capsys.readouterr().err
    argv[4] = "2"
    assert build.main(argv + ["--output", output, "--overwrite"]) == 0
    assert shards.read_manifest(output)["parameters"]["seed"] == 2


def test_builder_rejects_bad_arguments(tmp_path, capsys):
    with pytest.raises(SystemExit) as raised:
        build.main(["scenes", "--num-examples", "0", "--output", "x"])
    assert raised.value.code == 2
    assert "expected a positive integer, got '0'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as raised:
        build.main(["scenes", "--num-examples", "3"])
    assert raised.value.code == 2
    assert "--output" in capsys.readouterr().err
